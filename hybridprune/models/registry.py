"""Model registry: ``register_model`` / ``create_model`` / ``list_models``, as in timm.

Every entry is a factory ``fn(num_classes, **kwargs) -> nn.Module`` plus the facts the rest of the
system needs about it: input size, default input normalisation, and family. Wherever a name is
accepted, a reference ``path/to/file.py:callable`` or ``package.module:callable`` works too
(family ``custom``; see :mod:`hybridprune.models.reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch.nn as nn

from hybridprune.errors import ConfigError, ModelReferenceError, UnknownNameError
from hybridprune.models import reference as _ref
from hybridprune.registry import Registry

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalisation, stored with every checkpoint.

    Raises:
        ConfigError: if mean/std are not three finite numbers with std > 0.
    """

    mean: tuple[float, ...] = CIFAR_MEAN
    std: tuple[float, ...] = CIFAR_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ConfigError(f"normalization mean and std need the same length, got {self.mean} and {self.std}")
        if any(not s > 0 for s in self.std):
            raise ConfigError(f"normalization std values must be > 0, got {self.std}")

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalization":
        return cls(tuple(d["mean"]), tuple(d["std"]))


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes:
        name: Registry name (``resnet56``) or canonical reference (``/abs/net.py:make``).
        factory: ``factory(num_classes=..., **kwargs)`` building the module.
        family: ``cifar_resnet``, ``torchvision`` or ``custom`` (a reference).
        input_size: (C, H, W) the model is made for.
        normalization: Default input normalisation for training from scratch.
        defaults: Default keyword arguments of the factory (recorded in checkpoints).
    """

    name: str
    factory: Callable[..., nn.Module]
    family: str
    input_size: tuple[int, int, int] = (3, 32, 32)
    normalization: Normalization = field(default_factory=Normalization)
    defaults: dict[str, Any] = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry.

    Args:
        spec: The model spec.

    Returns:
        The same spec.

    Raises:
        ValueError: if the name is taken.
    """
    MODELS.register(spec.name)(spec)
    return spec


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally of one family.

    Args:
        family: ``cifar_resnet`` or ``torchvision``; ``None`` for all.

    Returns:
        Sorted names.
    """
    return [n for n in MODELS.names() if family is None or MODELS.get(n).family == family]


def _reference_spec(name: str) -> ModelSpec:
    """A spec for a ``file.py:callable`` / ``module:callable`` reference (see module docstring)."""
    canonical = _ref.canonical_reference(name)
    fn = _ref.load_factory(canonical)
    size = getattr(fn, "input_size", (3, 32, 32))
    if (not isinstance(size, (tuple, list)) or len(size) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 8192 for v in size)):
        raise ModelReferenceError(f"{canonical}: input_size must be (C, H, W) positive integers, got {size!r}")
    norm = getattr(fn, "normalization", None)
    if norm is None:
        norm = Normalization()
    elif not isinstance(norm, Normalization):
        try:
            mean, std = (norm.get("mean"), norm.get("std")) if isinstance(norm, dict) else norm
            norm = Normalization(tuple(mean), tuple(std))
        except (TypeError, ValueError) as exc:
            raise ModelReferenceError(
                f"{canonical}: normalization must be ((mean...), (std...)), got {norm!r} ({exc})"
            ) from None
    return ModelSpec(
        name=canonical,
        factory=partial(_ref.build_from_reference, canonical, fn),
        family="custom",
        input_size=tuple(size),
        normalization=norm,
    )


def get_model_spec(name: str) -> ModelSpec:
    """Look up a spec by registry name or by factory reference.

    Args:
        name: A registry name (``resnet56``), ``path/to/file.py:callable`` (relative to the
            working directory) or ``package.module:callable``.

    Returns:
        The spec; for a reference, one built from the callable (family ``custom``, input size and
        normalisation from its optional ``input_size``/``normalization`` attributes, else
        (3, 32, 32) and the CIFAR statistics).

    Raises:
        UnknownNameError: listing the valid names.
        ModelReferenceError: for a reference whose file, module or callable cannot be loaded.
    """
    if _ref.is_reference(name):
        return _reference_spec(name)
    try:
        return MODELS.get(name)
    except UnknownNameError as exc:
        raise UnknownNameError(
            f"{exc}; or a factory reference path/to/file.py:callable or package.module:callable"
        ) from None


def create_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build a registered architecture with fresh weights.

    Args:
        name: Registry name, e.g. ``resnet56`` or ``mobilenet_v2``, or a factory reference
            ``path/to/file.py:callable`` / ``package.module:callable``.
        num_classes: Classifier size.
        **kwargs: Architecture options (``shortcut="B"`` for CIFAR ResNets).

    Returns:
        The model, in eval mode, with ``hp_model_name`` (the canonical name or reference),
        ``hp_model_kwargs`` and ``hp_input_size`` attributes.

    Raises:
        UnknownNameError: for an unregistered name.
        ModelReferenceError: for a reference that cannot be loaded, whose factory raises or returns
            something other than a module.
        ConfigError: for bad options.
        MissingDependencyError: if a torchvision model is asked for and torchvision cannot import.
    """
    spec = get_model_spec(name)
    options = {**spec.defaults, **kwargs}
    try:
        model = spec.factory(num_classes=num_classes, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for model {name!r}: {exc}") from None
    model.hp_model_name = spec.name
    model.hp_model_kwargs = {"num_classes": num_classes, **options}
    model.hp_input_size = tuple(spec.input_size)
    return model.eval()
