"""Checkpoints: the classic public CIFAR ResNet files and hybridprune's own (pruned) format.

hybridprune's format is a plain dict of tensors and JSON-able values, so it loads with
``torch.load(weights_only=True)`` and needs no pickled module::

    {"format": "hybridprune/1", "model": {"name", "kwargs"}, "normalization": {"mean", "std"},
     "input_size": [C, H, W], "record": <pruning record dict or None>, "state_dict": {...},
     "metrics": {...}}

A pruned model is rebuilt as ``create_model(name, **kwargs)`` + ``apply_record(record)`` and then
gets its state_dict, strictly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hybridprune.errors import CheckpointError
from hybridprune.io import atomic_path
from hybridprune.models.registry import IMAGENET_MEAN, IMAGENET_STD, Normalization, create_model, get_model_spec

FORMAT = "hybridprune/1"


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint file, with what the file said about it.

    Attributes:
        model: The module, in eval mode, weights loaded.
        model_name: Registry name of the base architecture.
        model_kwargs: Factory options (``num_classes`` among them).
        normalization: Input normalisation the weights expect.
        input_size: (C, H, W).
        record: Pruning record dict, or ``None`` for an unpruned model.
        metrics: Whatever metrics were saved (accuracy, ...).
        source_format: ``hybridprune/1`` or ``classic``.
    """

    model: nn.Module
    model_name: str
    model_kwargs: dict[str, Any]
    normalization: Normalization
    input_size: tuple[int, int, int]
    record: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    source_format: str = FORMAT

    @property
    def num_classes(self) -> int:
        return int(self.model_kwargs["num_classes"])


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    normalization: Normalization,
    *,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    input_size: tuple[int, int, int] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a hybridprune checkpoint atomically.

    Args:
        path: Destination file.
        model: The (possibly pruned) model; its ``hp_model_name``/``hp_model_kwargs`` are used
            when ``model_name``/``model_kwargs`` are not given.
        normalization: Input normalisation of the weights.
        model_name: Registry name of the base architecture.
        model_kwargs: Factory options of the base architecture.
        record: Pruning record (``PruningRecord.to_dict()``) or ``None``.
        input_size: (C, H, W); defaults to the registry's.
        metrics: JSON-able metrics to keep with the weights.

    Returns:
        The path written.

    Raises:
        CheckpointError: if the model has no registry name (user modules cannot be rebuilt).
    """
    name = model_name or getattr(model, "hp_model_name", None)
    kwargs = model_kwargs or getattr(model, "hp_model_kwargs", None)
    if name is None or kwargs is None:
        raise CheckpointError(
            "cannot save a checkpoint of a model that is not from the model registry; "
            "build it with hybridprune.models.create_model or pass model_name and model_kwargs"
        )
    spec = get_model_spec(name)
    payload = {
        "format": FORMAT,
        "model": {"name": name, "kwargs": dict(kwargs)},
        "normalization": normalization.to_dict(),
        "input_size": list(input_size or spec.input_size),
        "record": record,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({reason[:160]}); expected a hybridprune "
            f"checkpoint or a classic CIFAR ResNet file saved with torch.save"
        ) from None


def _infer_classic(state: dict[str, torch.Tensor], path: Path) -> tuple[str, dict[str, Any]]:
    blocks = {(int(m[1]), int(m[2])) for k in state if (m := re.match(r"layer(\d)\.(\d+)\.", k))}
    if "linear.weight" not in state or not blocks:
        raise CheckpointError(
            f"{path}: state_dict has no CIFAR ResNet layout (expected conv1, layer1..3.N.*, linear keys)"
        )
    n = max(i for s, i in blocks if s == 1) + 1
    shortcut = "B" if any(".shortcut." in k for k in state) else "A"
    return f"resnet{6 * n + 2}", {"num_classes": int(state["linear.weight"].shape[0]), "shortcut": shortcut}


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    own = model.state_dict()
    # Files saved before PyTorch 0.4.1 have no BatchNorm counters; they carry no information.
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit model {name}: missing keys {missing[:3]}, unexpected keys {unexpected[:3]}"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{path} does not fit model {name}: {k} has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}"
            )
    model.load_state_dict(state, strict=True)


def load_checkpoint(
    path: str | os.PathLike,
    model_name: str | None = None,
    normalization: Normalization | None = None,
) -> LoadedCheckpoint:
    """Load a hybridprune checkpoint or a classic CIFAR ResNet file into a registry model.

    Args:
        path: The file. Loaded with ``weights_only=True``.
        model_name: For classic files, the expected architecture (inferred from the keys when
            ``None``); for hybridprune files, if given, must match the stored name.
        normalization: Overrides the stored normalisation. Classic files default to the ImageNet
            statistics they were trained with.

    Returns:
        A :class:`LoadedCheckpoint`.

    Raises:
        CheckpointError: for a missing, corrupt or non-checkpoint file, or one whose tensors do
            not fit the model.
    """
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    if raw.get("format") == FORMAT:
        name, kwargs = raw["model"]["name"], dict(raw["model"]["kwargs"])
        if model_name is not None and model_name != name:
            raise CheckpointError(f"{path} holds a {name} checkpoint, not {model_name}")
        model = create_model(name, **kwargs)
        if raw.get("record"):
            from hybridprune.pruning.record import apply_record  # pruning depends on models, not back

            model = apply_record(model, raw["record"])
        _load_state(model, raw["state_dict"], path, name)
        return LoadedCheckpoint(
            model=model.eval(),
            model_name=name,
            model_kwargs=kwargs,
            normalization=normalization or Normalization.from_dict(raw["normalization"]),
            input_size=tuple(raw.get("input_size") or get_model_spec(name).input_size),
            record=raw.get("record"),
            metrics=dict(raw.get("metrics") or {}),
        )
    state = raw.get("state_dict", raw)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()) or not state:
        raise CheckpointError(f"{path} has no state_dict of tensors; it is not a model checkpoint")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    inferred, kwargs = _infer_classic(state, path)
    name = model_name or inferred
    model = create_model(name, **kwargs)
    _load_state(model, state, path, name)
    return LoadedCheckpoint(
        model=model.eval(),
        model_name=name,
        model_kwargs=model.hp_model_kwargs,
        normalization=normalization or Normalization(IMAGENET_MEAN, IMAGENET_STD),
        input_size=get_model_spec(name).input_size,
        source_format="classic",
    )
