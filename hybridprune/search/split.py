"""The data split of a study in words and records: what every accuracy was measured on.

``split_record`` goes into every checkpoint a study writes (``train``/``evaluate`` reuse it);
``describe_split`` says which images a validation or test accuracy came from; ``split_warning``
says when validation is optimistic.
"""

from __future__ import annotations

from typing import Any

from hybridprune.search.config import StudyConfig


def split_record(cfg: StudyConfig) -> dict[str, Any]:
    """The data split of the study, stored with its checkpoints (``train``/``evaluate`` reuse it)."""
    from hybridprune.records import SplitRecord

    return SplitRecord(cfg.data.dataset, cfg.data.val_size, cfg.study.seed, cfg.data.val_from).to_dict()


def describe_split(cfg: StudyConfig, split: str, images: int | None = None) -> str:
    """Which images a ``"val"`` or ``"test"`` accuracy of the study was measured on, in words."""
    d = cfg.data
    n = f"{images:,} images" if images is not None else "images"
    if d.val_from == "folder":
        return f"{split}: {n}, the {'val' if split == 'val' else 'test'}/ folder of {d.root}"
    if d.val_from == "test":
        half = "first" if split == "val" else "rest"
        return (f"{split}: {n} of the {d.dataset} test folder, the {half} of each class by sorted file name "
                f"(val_size {d.val_size:g})")
    if split == "val":
        return f"val: {n} held out of the {d.dataset} training set (val_size {d.val_size:g}, seed {cfg.study.seed})"
    return f"test: {n}, the {d.dataset} test set"


def split_warning(cfg: StudyConfig) -> str | None:
    """Why validation is optimistic, when a foreign checkpoint meets validation from its training set."""
    if cfg.model.checkpoint and cfg.data.val_from == "train":
        return ("warning: model.checkpoint is a pretrained file and validation is held out of the training set, "
                "which such weights have usually seen: validation accuracy then measures memorisation and reads "
                "optimistic; set [data] val_from = \"test\" and val_size = 0.5 to validate on the first half of "
                "each test class")
    return None
