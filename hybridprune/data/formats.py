"""Readers of the supported dataset formats, one small registered class each.

Each reader turns files into uint8 arrays ``[N, 3, H, W]`` plus int64 labels for a train and a
test split. Readers are only called when the array cache (see :mod:`hybridprune.data.datasets`)
misses, so they may be slow-ish; ``fingerprint`` must be cheap, it keys the cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridprune.errors import DataError
from hybridprune.io import atomic_path
from hybridprune.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass
class RawDataset:
    """Decoded arrays of one dataset, before the validation split.

    Attributes:
        train_images: uint8 ``[N, 3, H, W]``.
        train_labels: int64 ``[N]``.
        test_images: uint8 ``[M, 3, H, W]``.
        test_labels: int64 ``[M]``.
        class_names: One name per class index.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


class DatasetFormat:
    """Base of the registered readers. Subclasses set ``name`` and implement the methods."""

    name = ""
    needs_root = True

    def fingerprint(self, root: Path | None) -> str:
        """A cheap string that changes when the source files change (names, sizes, mtimes)."""
        raise NotImplementedError

    def read(self, root: Path | None, image_size: int | None) -> RawDataset:
        """Decode the files into a :class:`RawDataset`."""
        raise NotImplementedError

    def download(self, root: Path) -> None:
        """Fetch the official files into ``root`` (only where the format has a download)."""
        raise DataError(f"dataset {self.name!r} has no download; put the files under {root} yourself")


FORMATS: Registry[type[DatasetFormat]] = Registry("dataset")


def _stat_fingerprint(paths: list[Path], base: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(base)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: CIFAR files need nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"{where} is not a CIFAR python pickle ({exc}); expected a pickled dict") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, expected a pickled dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


class _CifarBase(DatasetFormat):
    folder = ""
    archive = ""
    url = ""
    md5 = ""
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    meta_file = ""
    label_key = ""
    names_key = ""

    def _source(self, root: Path) -> Path:
        for cand in (root / self.folder, root):
            if all((cand / f).is_file() for f in (*self.train_files, *self.test_files, self.meta_file)):
                return cand
        if (root / self.archive).is_file():
            return root / self.archive
        if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
            return root
        if not root.exists():
            raise DataError(f"dataset directory {root} does not exist")
        raise DataError(
            f"{root} holds no {self.name} data: expected {self.folder}/ with "
            f"{', '.join((*self.train_files, *self.test_files, self.meta_file))} or {self.archive} "
            f"(or pass download=True)"
        )

    def fingerprint(self, root: Path | None) -> str:
        src = self._source(root)
        if src.is_file():
            return _stat_fingerprint([src], src.parent)
        return _stat_fingerprint([src / f for f in (*self.train_files, *self.test_files, self.meta_file)], src)

    def _members(self, src: Path) -> dict[str, bytes]:
        wanted = (*self.train_files, *self.test_files, self.meta_file)
        if src.is_dir():
            return {f: (src / f).read_bytes() for f in wanted}
        found: dict[str, bytes] = {}
        try:
            with tarfile.open(src) as tar:
                for m in tar.getmembers():
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and base in wanted and base not in found:
                        found[base] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{src} is not a readable tar archive ({exc})") from None
        missing = [f for f in wanted if f not in found]
        if missing:
            raise DataError(f"{src} lacks {', '.join(missing)}; expected the official {self.archive} layout")
        return found

    def _batch(self, blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
        d = _unpickle(blob, where)
        if "data" not in d or self.label_key not in d:
            raise DataError(f"{where} lacks the keys b'data' and b'{self.label_key}' of the CIFAR format")
        data = np.asarray(d["data"])
        labels = np.asarray(d[self.label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataError(
                f"{where}: b'data' is {data.dtype} {list(data.shape)} with {len(labels)} labels; "
                f"expected uint8 [N, 3072] and N labels"
            )
        return data.reshape(-1, 3, 32, 32), labels

    def read(self, root: Path | None, image_size: int | None) -> RawDataset:
        src = self._source(root)
        blobs = self._members(src)
        parts = {
            split: [self._batch(blobs[f], f"{src}/{f}") for f in files]
            for split, files in (("train", self.train_files), ("test", self.test_files))
        }
        meta = _unpickle(blobs[self.meta_file], f"{src}/{self.meta_file}")
        if self.names_key not in meta:
            raise DataError(f"{src}/{self.meta_file} lacks b'{self.names_key}'")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[self.names_key]]
        (tx, ty), (vx, vy) = ((np.concatenate([p[0] for p in parts[s]]), np.concatenate([p[1] for p in parts[s]])) for s in ("train", "test"))
        for labels, split in ((ty, "train"), (vy, "test")):
            if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
                raise DataError(f"{src}: {split} labels reach {int(labels.max())} but meta names {len(names)} classes")
        return RawDataset(_resize(tx, image_size), ty, _resize(vx, image_size), vy, names)

    def download(self, root: Path) -> None:
        dest = root / self.archive
        if dest.is_file():
            return
        try:
            with atomic_path(dest) as tmp:
                urllib.request.urlretrieve(self.url, tmp)  # noqa: S310 (fixed https URL)
                digest = hashlib.md5(tmp.read_bytes()).hexdigest()
                if digest != self.md5:
                    raise DataError(f"downloaded {self.url} has md5 {digest}, expected {self.md5}")
        except OSError as exc:
            raise DataError(f"could not download {self.url} to {dest} ({exc})") from None


@FORMATS.register()
class Cifar10(_CifarBase):
    name = "cifar10"
    folder = "cifar-10-batches-py"
    archive = "cifar-10-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"


@FORMATS.register()
class Cifar100(_CifarBase):
    name = "cifar100"
    folder = "cifar-100-python"
    archive = "cifar-100-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"


def _resize(images: np.ndarray, size: int | None) -> np.ndarray:
    """Bilinear resize of a uint8 ``[N, 3, H, W]`` batch to ``size`` x ``size`` (no-op if equal)."""
    if size is None or images.shape[-2:] == (size, size) or len(images) == 0:
        return images
    import torch
    import torch.nn.functional as F

    out = F.interpolate(torch.from_numpy(images).float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).numpy()


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
    """``root/train/<class>/*.jpg|png`` and ``root/test/<class>/...``; classes sorted by name."""

    name = "image_folder"

    def _files(self, root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
        if not root.is_dir():
            raise DataError(f"dataset directory {root} does not exist")
        for split in ("train", "test"):
            if not (root / split).is_dir():
                raise DataError(f"{root} has no {split}/ folder; expected {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg")
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{root}/train has no class folders; expected {root}/train/<class>/*.jpg")
        extra = sorted({p.name for p in (root / "test").iterdir() if p.is_dir()} - set(classes))
        if extra:
            raise DataError(f"{root}/test has class folders {extra} that {root}/train lacks")
        files: dict[str, list[tuple[Path, int]]] = {}
        for split in ("train", "test"):
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
        return _stat_fingerprint([p for split in ("train", "test") for p, _ in files[split]], root)

    def read(self, root: Path | None, image_size: int | None) -> RawDataset:
        classes, files = self._files(root)
        out = []
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            for split in ("train", "test"):
                arrays = list(pool.map(lambda pl: _decode(pl[0], image_size), files[split], chunksize=256))
                shapes = {a.shape for a in arrays}
                if len(shapes) > 1:
                    raise DataError(
                        f"{root}/{split} mixes image sizes {sorted(s[1:] for s in shapes)[:4]}; pass image_size to resize them"
                    )
                out.append((np.stack(arrays), np.array([lab for _, lab in files[split]], dtype=np.int64)))
        shapes = {out[0][0].shape[1:], out[1][0].shape[1:]}
        if len(shapes) > 1:
            raise DataError(f"{root}: train and test images differ in size {sorted(shapes)}; pass image_size")
        return RawDataset(out[0][0], out[0][1], out[1][0], out[1][1], classes)


@FORMATS.register()
class Digits(DatasetFormat):
    """scikit-learn's bundled 8x8 handwritten digits, upscaled to 32x32 RGB; seeded 20% test split."""

    name = "digits"
    needs_root = False
    test_fraction = 0.2
    test_seed = 0

    def fingerprint(self, root: Path | None) -> str:
        import sklearn

        return f"sklearn-{sklearn.__version__}"

    def read(self, root: Path | None, image_size: int | None) -> RawDataset:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None].repeat(3, axis=1)
        x = _resize(x, image_size or 32)
        y = d.target.astype(np.int64)
        train_idx, test_idx = stratified_split(y, self.test_fraction, self.test_seed)
        return RawDataset(x[train_idx], y[train_idx], x[test_idx], y[test_idx], [str(i) for i in range(10)])


def stratified_split(labels: np.ndarray, size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of indices into (kept, held_out).

    Args:
        labels: int labels ``[N]``.
        size: Held-out fraction in [0, 1) or count (int >= 0).
        seed: Random seed.

    Returns:
        Two sorted index arrays, disjoint, covering ``range(N)``.

    Raises:
        DataError: if the held-out part cannot hold every class at least once, or is too big.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if size == 0:
        return idx, idx[:0]
    try:
        kept, held = train_test_split(idx, test_size=size, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise DataError(f"cannot hold out {size} of {len(labels)} samples stratified by class ({exc})") from None
    return np.sort(kept), np.sort(held)


def get_format(name: str) -> DatasetFormat:
    """Instantiate the registered reader ``name`` (UnknownNameError lists the valid ones)."""
    return FORMATS.get(name)()

