"""Model registry (CIFAR ResNets, lazily imported torchvision models) and checkpoints."""

from hybridprune.models import cifar as _cifar  # noqa: F401  (registers resnet20..110)
from hybridprune.models import torchvision_zoo as _tv  # noqa: F401  (registers lazily-built models)
from hybridprune.models.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
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
    "LoadedCheckpoint",
    "ModelSpec",
    "Normalization",
    "create_model",
    "get_model_spec",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
]
