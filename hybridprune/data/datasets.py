"""Loading a dataset: registered reader -> content-keyed array cache -> train/val/test splits."""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hybridprune.data.readers import FORMATS, RawDataset, get_format
from hybridprune.data.splits import VAL_FROM, first_per_class, stratified_split
from hybridprune.errors import ConfigError, DataError
from hybridprune.io import atomic_path

CACHE_VERSION = 1
CACHE_ENV = "HYBRIDPRUNE_DATA_CACHE"


@dataclass(frozen=True)
class Split:
    """One split, as tensors: ``images`` uint8 ``[N, 3, H, W]``, ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"split images must be uint8 [N, C, H, W], got {self.images.dtype} {list(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"split has {self.images.shape[0]} images but labels of shape {list(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int) -> "Split":
        """The first ``n`` samples (a view)."""
        return Split(self.images[:n], self.labels[:n])

    def sample(self, n: int | None, seed: int) -> "Split":
        """A seeded random ``n`` of the samples (the whole split when ``n`` is None or not smaller)."""
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return Split(self.images[idx].contiguous(), self.labels[idx].contiguous())


@dataclass(frozen=True)
class DataSplits:
    """A dataset ready for training: train/val/test splits and its classes."""

    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return FORMATS.names()


def default_cache_dir() -> Path:
    """``$HYBRIDPRUNE_DATA_CACHE`` or ``~/.cache/hybridprune/datasets``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "hybridprune" / "datasets"


def cache_path(name: str, root: Path | None, image_size: int | None, cache_dir: Path) -> Path:
    """The cache file of this dataset content (changes when any source file changes)."""
    fmt = get_format(name)
    key = f"{CACHE_VERSION}|{name}|{image_size}|{root.resolve() if root else ''}|{fmt.fingerprint(root)}"
    return cache_dir / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def _read_cache(path: Path) -> RawDataset | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            val = (z["val_x"], z["val_y"]) if "val_x" in z.files else (None, None)
            return RawDataset(z["train_x"], z["train_y"], z["test_x"], z["test_y"], [str(n) for n in z["names"]], *val)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # unreadable cache: decode again and overwrite it


def _write_cache(path: Path, raw: RawDataset) -> None:
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            val = {} if raw.val_images is None else {"val_x": raw.val_images, "val_y": raw.val_labels}
            np.savez(tmp, train_x=raw.train_images, train_y=raw.train_labels, test_x=raw.test_images,
                     test_y=raw.test_labels, names=np.array(raw.class_names, dtype=str), **val)
    except OSError as exc:
        raise DataError(f"cannot write the dataset cache {path} ({exc}); pass another cache_dir") from None


def load_raw(name: str, root: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
             image_size: int | None = None, download: bool = False,
             say: Callable[[str], None] | None = None) -> tuple[RawDataset, Path, bool]:
    """Decoded arrays of a dataset, from the cache when its content is unchanged.

    Args:
        name: Registered dataset name.
        root: Directory (or archive) of the files; unused by ``digits``.
        cache_dir: Where decoded arrays are cached (default :func:`default_cache_dir`).
        image_size: Resize images to this square size.
        download: Fetch the official archive into ``root`` first when it is missing.
        say: Called with a line before and after decoding (the cache missed), for progress.

    Returns:
        ``(raw, cache_file, from_cache)``.

    Raises:
        UnknownNameError, DataError, ConfigError.
    """
    fmt = get_format(name)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 8):
        raise ConfigError(f"image_size must be an integer >= 8, got {image_size!r}")
    if fmt.needs_root:
        if root is None:
            raise ConfigError(f"dataset {name!r} needs a data directory (root / --data-dir)")
        root = Path(root).expanduser()
        if download:
            root.mkdir(parents=True, exist_ok=True)
            fmt.download(root)
    else:
        root = None
    path = cache_path(name, root, image_size, Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    if path.is_file() and (raw := _read_cache(path)) is not None:
        return raw, path, True
    start = time.monotonic()
    if say is not None:
        say(f"decoding the {name} images{f' in {root}' if root else ''} (once; cached at {path})")
    raw = fmt.read(root, image_size)
    _write_cache(path, raw)
    if say is not None:
        say(f"decoded {len(raw.train_labels) + len(raw.test_labels):,} images in {time.monotonic() - start:.0f} s")
    return raw, path, False


def load_dataset(name: str, root: str | os.PathLike | None = None, *, val_size: float | int = 0.1, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, image_size: int | None = None,
                 download: bool = False, val_from: str = "train",
                 say: Callable[[str], None] | None = None) -> DataSplits:
    """Load a dataset as uint8 tensors with a validation split.

    ``val_from="train"`` holds out a seeded, stratified ``val_size`` of the training set.
    ``val_from="test"`` takes validation from the test set instead, for weights that were trained
    on every training image (public checkpoints): of each class, in sorted-file-name order, the
    first ``val_size`` (a fraction) becomes validation and the rest stays test, with no seed.
    ``val_from="folder"`` validates on an image folder's own ``val/`` folder (``val_size`` unused).

    Args:
        name: One of :func:`list_datasets` (cifar10, cifar100, image_folder, digits).
        root: Data directory (or archive for cifar); not needed for ``digits``.
        val_size: Validation part of the training set: a fraction in [0, 1) or a count; with
            ``val_from="test"``, the part of each test class, a fraction in (0, 1).
        seed: Seed of the validation split.
        cache_dir: Directory of the decoded-array cache.
        image_size: Resize images to ``image_size`` x ``image_size``.
        download: For cifar10/cifar100, fetch the official archive when missing (needs network).
        val_from: ``"train"``, ``"test"`` or ``"folder"``: where validation is taken from.
        say: Progress lines while images are decoded (see :func:`load_raw`).

    Returns:
        :class:`DataSplits`; the search optimises ``val``, ``test`` is for final reports.

    Raises:
        UnknownNameError: unknown dataset name.
        DataError: missing/malformed files, a corrupt image, an impossible split.
        ConfigError: a bad argument.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0 or (
        isinstance(val_size, float) and val_size >= 1
    ):
        raise ConfigError(f"val_size must be a fraction in [0, 1) or a sample count >= 0, got {val_size!r}")
    if val_from not in VAL_FROM:
        raise ConfigError(f"val_from must be one of {', '.join(VAL_FROM)}, got {val_from!r}")
    if val_from == "folder" and name != "image_folder":
        raise ConfigError(f"val_from = 'folder' reads the val/ folder of an image_folder dataset; {name!r} has "
                          f"none: use val_from = 'train' or 'test'")
    if val_from == "test" and not (isinstance(val_size, float) and 0 < val_size < 1):
        raise ConfigError(f"with val_from = 'test', val_size must be a fraction in (0, 1) of each test class, "
                          f"got {val_size!r}")
    raw, _, _ = load_raw(name, root, cache_dir=cache_dir, image_size=image_size, download=download, say=say)
    x, y = torch.from_numpy(raw.train_images), torch.from_numpy(raw.train_labels)
    tx, ty = torch.from_numpy(raw.test_images), torch.from_numpy(raw.test_labels)
    if val_from == "folder":
        if raw.val_images is None:
            raise DataError(f"val_from = 'folder' needs {root}/val/<class>/*.jpg beside train/ and test/; there is "
                            f"no val/ folder")
        train, val = Split(x, y), Split(torch.from_numpy(raw.val_images), torch.from_numpy(raw.val_labels))
        test = Split(tx, ty)
    elif val_from == "test":
        val_idx, test_idx = (torch.from_numpy(i) for i in first_per_class(raw.test_labels, val_size))
        train, val, test = Split(x, y), Split(tx[val_idx], ty[val_idx]), Split(tx[test_idx], ty[test_idx])
    else:
        kept, held = (torch.from_numpy(i) for i in stratified_split(raw.train_labels, val_size, seed))
        train, val, test = Split(x[kept], y[kept]), Split(x[held], y[held]), Split(tx, ty)
    return DataSplits(name=name, train=train, val=val, test=test, class_names=tuple(raw.class_names))
