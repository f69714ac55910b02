"""CIFAR-10 and CIFAR-100 in the official python pickle layout (folder or ``.tar.gz``), with download."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from hybridprune.data.readers.base import FORMATS, DatasetFormat, RawDataset, resize_images, stat_fingerprint
from hybridprune.errors import DataError
from hybridprune.io import atomic_path


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
            return stat_fingerprint([src], src.parent)
        return stat_fingerprint([src / f for f in (*self.train_files, *self.test_files, self.meta_file)], src)

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
        (tx, ty), (vx, vy) = (
            (np.concatenate([p[0] for p in parts[s]]), np.concatenate([p[1] for p in parts[s]]))
            for s in ("train", "test")
        )
        for labels, split in ((ty, "train"), (vy, "test")):
            if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
                raise DataError(f"{src}: {split} labels reach {int(labels.max())} but meta names {len(names)} classes")
        return RawDataset(resize_images(tx, image_size), ty, resize_images(vx, image_size), vy, names)

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
