"""What every dataset reader shares: the decoded arrays, the reader base class and its registry.

Each reader turns files into uint8 arrays ``[N, 3, H, W]`` plus int64 labels for a train and a
test split. Readers are only called when the array cache (see :mod:`hybridprune.data.datasets`)
misses, so they may be slow-ish; ``fingerprint`` must be cheap, it keys the cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridprune.errors import DataError
from hybridprune.registry import Registry


@dataclass
class RawDataset:
    """Decoded arrays of one dataset, before the validation split.

    Attributes:
        train_images: uint8 ``[N, 3, H, W]``.
        train_labels: int64 ``[N]``.
        test_images: uint8 ``[M, 3, H, W]``.
        test_labels: int64 ``[M]``.
        class_names: One name per class index.
        val_images, val_labels: A validation set of the dataset's own (an image folder's ``val/``),
            or None.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None


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


def stat_fingerprint(paths: list[Path], base: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(base)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resize_images(images: np.ndarray, size: int | None) -> np.ndarray:
    """Bilinear resize of a uint8 ``[N, 3, H, W]`` batch to ``size`` x ``size`` (no-op if equal)."""
    if size is None or images.shape[-2:] == (size, size) or len(images) == 0:
        return images
    import torch
    import torch.nn.functional as F

    out = F.interpolate(
        torch.from_numpy(images).float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8).numpy()


def get_format(name: str) -> DatasetFormat:
    """Instantiate the registered reader ``name`` (UnknownNameError lists the valid ones)."""
    return FORMATS.get(name)()
