"""scikit-learn's bundled 8x8 digits: a dataset that needs no files, for tests and examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridprune.data.readers.base import FORMATS, DatasetFormat, RawDataset, resize_images
from hybridprune.data.splits import stratified_split


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
        x = resize_images(x, image_size or 32)
        y = d.target.astype(np.int64)
        train_idx, test_idx = stratified_split(y, self.test_fraction, self.test_seed)
        return RawDataset(x[train_idx], y[train_idx], x[test_idx], y[test_idx], [str(i) for i in range(10)])
