"""Named records: the keys of a checkpoint's metrics, and the data split it was measured on.

Torch-free, so study files, the CLI and the benchmarks name them without loading a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from hybridprune.errors import CheckpointError


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Metrics:
    """The keys of a checkpoint's ``metrics`` dict, defined once for every writer and reader.

    ``train``, a study's baseline, adapted models, trials, reference models and ``refine`` write
    them; ``info``, ``train --checkpoint``, ``refine`` and the benchmarks read them.
    """

    VAL_TOP1 = "val_top1"                # validation top-1, a fraction
    TEST_TOP1 = "test_top1"
    VAL_TOP1_BEFORE = "val_top1_before"  # validation top-1 of an adapted model before adapting
    VAL = "val"                          # EvalResult dicts written by ``train``
    TEST = "test"
    TRAIN = "train"                      # TrainResult dict of the training that made these weights
    SPLIT = "split"                      # a SplitRecord dict: which images val and test came from
    VAL_SPLIT = "val_split"              # the split in words (``refine``)
    TEST_SPLIT = "test_split"
    DATASET = "dataset"
    TEACHER = "teacher"                  # the model ``train --teacher`` distilled from
    TRAINED_WITH = "trained_with"        # what a study's cached baseline was trained from
    ADAPTED_FROM = "adapted_from"        # what an adapted model was adapted from
    STUDY = "study"
    TRIAL = "trial"
    REFINE = "refine"                    # refine's epochs and TrainResult
    REFERENCE = "reference"              # a reference model's name
    PARAMS = "params"
    MACS = "macs"
    LATENCY_MS = "latency_ms"
    LATENCY = "latency"                  # the LatencyResult dict
    FINETUNE_STEPS = "finetune_steps"


@dataclass(frozen=True)
class SplitRecord:
    """Which images a checkpoint's validation and test accuracies came from (``metrics["split"]``).

    ``train --checkpoint`` reuses it so that fine-tuning never validates on images the weights
    were trained on.
    """

    dataset: str
    val_size: float | int
    seed: int
    val_from: str = "train"

    def to_dict(self) -> dict[str, Any]:
        """The stored form."""
        return {"dataset": self.dataset, "val_size": self.val_size, "seed": self.seed, "val_from": self.val_from}

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any], path: str | os.PathLike) -> "SplitRecord | None":
        """The split a checkpoint's metrics record, ``None`` when they record none.

        Raises:
            CheckpointError: if the record is malformed.
        """
        split = metrics.get(Metrics.SPLIT)
        if split is None:
            return None

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        ok = (isinstance(split, dict) and isinstance(split.get("dataset"), str) and number(split.get("val_size"))
              and split["val_size"] >= 0 and isinstance(split.get("seed"), int) and not isinstance(split["seed"], bool)
              and isinstance(split.get("val_from", "train"), str))
        if not ok:
            raise CheckpointError(f"checkpoint {path} has a malformed metrics['split'] {_short(split)}; expected "
                                  f"{{'dataset': str, 'val_size': number >= 0, 'seed': int, 'val_from': str}}")
        return cls(split["dataset"], split["val_size"], split["seed"], split.get("val_from", "train"))
