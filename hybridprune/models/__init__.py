"""Model registry (CIFAR ResNets, lazily imported torchvision models) and model structure.

Structure queries live here: :mod:`~hybridprune.models.blocks` (removable residual blocks) and
:mod:`~hybridprune.models.complexity` (parameters, MACs, architecture summary). Checkpoints are one
layer up, in :mod:`hybridprune.checkpoints`, since loading a pruned model also needs pruning.
"""

from __future__ import annotations

from typing import Any

from hybridprune.models import cifar as _cifar  # noqa: F401  (registers resnet20..110)
from hybridprune.models import torchvision_zoo as _tv  # noqa: F401  (registers lazily-built models)
from hybridprune.models.registry import (
    MODELS,
    ModelSpec,
    Normalization,
    create_model,
    get_model_spec,
    list_models,
    register_model,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "Normalization",
    "create_model",
    "get_model_spec",
    "list_models",
    "register_model",
]

# Compatibility: checkpoints moved to hybridprune.checkpoints (above models and pruning). These
# names stay reachable here, lazily, only for importers not yet updated (search/objective.py);
# tests/test_layers.py allows exactly this import.
_MOVED = ("LoadedCheckpoint", "load_checkpoint", "save_checkpoint")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from hybridprune import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'hybridprune.models' has no attribute {name!r}")
