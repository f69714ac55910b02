"""Image folders: ``root/train/<class>/*.jpg|png``, ``root/test/<class>/...`` and optionally
``root/val/<class>/...`` (Pillow decodes)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hybridprune.data.readers.base import FORMATS, DatasetFormat, RawDataset, stat_fingerprint
from hybridprune.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def _decode(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except Exception as exc:
        raise DataError(f"cannot decode image {path} ({type(exc).__name__}: {exc})") from None


@FORMATS.register()
class ImageFolder(DatasetFormat):
    """``root/train/<class>/*.jpg|png``, ``root/test/<class>/...`` and an optional ``root/val/<class>/...``
    (a validation set of its own: ``val_from = "folder"``); classes sorted by name."""

    name = "image_folder"

    def _files(self, root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
        if not root.is_dir():
            raise DataError(f"dataset directory {root} does not exist")
        for split in ("train", "test"):
            if not (root / split).is_dir():
                raise DataError(
                    f"{root} has no {split}/ folder; expected {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
                )
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{root}/train has no class folders; expected {root}/train/<class>/*.jpg")
        splits = ("train", "test", "val") if (root / "val").is_dir() else ("train", "test")
        for split in splits[1:]:
            extra = sorted({p.name for p in (root / split).iterdir() if p.is_dir()} - set(classes))
            if extra:
                raise DataError(f"{root}/{split} has class folders {extra} that {root}/train lacks")
        files: dict[str, list[tuple[Path, int]]] = {}
        for split in splits:
            files[split] = [
                (p, label)
                for label, c in enumerate(classes)
                if (root / split / c).is_dir()
                for p in sorted((root / split / c).iterdir())
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            ]
            if not files[split]:
                raise DataError(f"{root}/{split} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
        return classes, files

    def fingerprint(self, root: Path | None) -> str:
        _, files = self._files(root)
        return stat_fingerprint([p for split in files for p, _ in files[split]], root)

    def read(self, root: Path | None, image_size: int | None) -> RawDataset:
        classes, files = self._files(root)
        out = []
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            for split in files:
                arrays = list(pool.map(lambda pl: _decode(pl[0], image_size), files[split], chunksize=256))
                shapes = {a.shape for a in arrays}
                if len(shapes) > 1:
                    raise DataError(
                        f"{root}/{split} mixes image sizes {sorted(s[1:] for s in shapes)[:4]}; "
                        f"pass image_size to resize them"
                    )
                out.append((np.stack(arrays), np.array([lab for _, lab in files[split]], dtype=np.int64)))
        shapes = {images.shape[1:] for images, _ in out}
        if len(shapes) > 1:
            raise DataError(f"{root}: {'/'.join(files)} images differ in size {sorted(shapes)}; pass image_size")
        val = out[2] if len(out) > 2 else (None, None)
        return RawDataset(out[0][0], out[0][1], out[1][0], out[1][1], classes, *val)
