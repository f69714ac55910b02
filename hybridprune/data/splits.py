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
