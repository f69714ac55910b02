"""Model registry (CIFAR ResNets, lazily imported torchvision models) and model structure.

Structure queries live here: :mod:`~hybridprune.models.blocks` (removable residual blocks) and
:mod:`~hybridprune.models.complexity` (parameters, MACs, architecture summary). Checkpoints are one
layer up, in :mod:`hybridprune.checkpoints`, since loading a pruned model also needs pruning.
"""

from __future__ import annotations

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
