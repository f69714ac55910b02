"""Seeded, stratified index splits (train/validation hold-out, and the digits test split)."""

from __future__ import annotations

import numpy as np

from hybridprune.errors import DataError


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


VAL_FROM = ("train", "test", "folder")  # where a validation split may come from (folder: an image folder's val/)


def first_per_class(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (first ``fraction`` of each class, the rest), keeping the file order.

    Deterministic, no seed: the arrays of every reader are in class-folder, sorted-file-name order,
    so "the first half of each class by sorted file name" can be rebuilt by anyone from the files.

    Args:
        labels: int labels ``[N]`` in file order.
        fraction: Part of each class that goes first, in (0, 1); per class ``round(fraction * n)``.

    Returns:
        ``(first, rest)``: sorted, disjoint index arrays covering ``range(N)``.

    Raises:
        DataError: if a class would be left empty on either side.
    """
    first, rest = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        if k < 1 or k >= len(idx):
            raise DataError(f"val_size {fraction} of class {int(c)}'s {len(idx)} test images leaves "
                            f"{'validation' if k < 1 else 'test'} without that class; use a fraction that "
                            f"keeps at least one image of every class on both sides")
        first.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))
