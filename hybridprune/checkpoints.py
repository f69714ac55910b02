"""Checkpoints: hybridprune's own (pruned) format, classic CIFAR ResNet files, plain state_dicts.

hybridprune's format is a plain dict of tensors and JSON-able values, so it loads with
``torch.load(weights_only=True)`` and needs no pickled module::

    {"format": "hybridprune/1", "model": {"name", "kwargs"}, "normalization": {"mean", "std"},
     "input_size": [C, H, W], "record": <pruning record dict or None>, "state_dict": {...},
     "metrics": {...}}

A pruned model is rebuilt as ``create_model(name, **kwargs)`` + ``apply_record(record)`` and then
gets its state_dict, strictly. ``name`` may be a factory reference (``/abs/path/net.py:make`` or
``package.module:make``, see :mod:`hybridprune.models.reference`); the model is then rebuilt
through it. A plain ``torch.save(model.state_dict())`` file loads when the model is named.

Everything read from a file is validated before use: a malformed file is one
:class:`~hybridprune.errors.CheckpointError` naming the file and the bad field, never a traceback.

Layering: checkpoints sit above both :mod:`hybridprune.models` (architectures) and
:mod:`hybridprune.pruning` (records), because loading a pruned model needs both; neither of those
packages imports this module (``tests/test_layers.py``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hybridprune.errors import CheckpointError, HybridPruneError, ModelReferenceError, first_line
from hybridprune.io import atomic_path
from hybridprune.models.reference import canonical_reference, is_reference
from hybridprune.models.registry import IMAGENET_MEAN, IMAGENET_STD, Normalization, create_model, get_model_spec

FORMAT = "hybridprune/1"
MAX_CLASSES = 100_000
MAX_ELEMENTS = 1_000_000_000  # 4 GB of float32: no model this tool prunes comes close
MAX_CHANNELS, MAX_SIDE = 64, 2048  # input_size bounds: info/prune run a forward pass at this size


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint file, with what the file said about it.

    Attributes:
        model: The module, in eval mode, weights loaded.
        model_name: Registry name or factory reference of the base architecture.
        model_kwargs: Factory options (``num_classes`` among them).
        normalization: Input normalisation the weights expect.
        input_size: (C, H, W).
        record: Pruning record dict, or ``None`` for an unpruned model.
        metrics: Whatever metrics were saved (accuracy, ...).
        source_format: ``hybridprune/1``, ``classic`` or ``state_dict``.
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
        model_name: Registry name or factory reference of the base architecture.
        model_kwargs: Factory options of the base architecture.
        record: Pruning record (``PruningRecord.to_dict()``) or ``None``.
        input_size: (C, H, W); defaults to the registry's.
        metrics: JSON-able metrics to keep with the weights.

    Returns:
        The path written.

    Raises:
        CheckpointError: if the model has no registry name or factory reference (a module built
            by hand cannot be rebuilt; build it with ``create_model("file.py:callable")``).
    """
    name = model_name or getattr(model, "hp_model_name", None)
    kwargs = model_kwargs or getattr(model, "hp_model_kwargs", None)
    if name is None or kwargs is None:
        raise CheckpointError(
            "cannot save a checkpoint of a model that is not from the model registry; build it with "
            "hybridprune.models.create_model (a registry name or 'path/to/file.py:callable') or pass "
            "model_name and model_kwargs"
        )
    spec = get_model_spec(name)
    payload = {
        "format": FORMAT,
        "model": {"name": spec.name, "kwargs": dict(kwargs)},
        "normalization": normalization.to_dict(),
        "input_size": list(input_size or spec.input_size),
        "record": record,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


MIN_TORCH = (2, 6)  # below 2.6, torch.load(weights_only=True) can be bypassed (CVE-2025-32434)


def _check_torch() -> None:
    """Refuse to unpickle files with a torch whose ``weights_only`` loader is not safe."""
    m = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    if m is None or (int(m[1]), int(m[2])) < MIN_TORCH:
        raise CheckpointError(
            f"torch {torch.__version__} cannot load checkpoints safely (weights_only=True is bypassable below "
            f"2.6, CVE-2025-32434); upgrade with: pip install 'torch>=2.6'"
        )


def _read(path: Path) -> Any:
    _check_torch()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({first_line(exc)[:160]}); expected a hybridprune "
            f"checkpoint or a classic CIFAR ResNet file saved with torch.save"
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num_classes(value: Any, path: Path) -> int:
    if not _is_int(value) or not 1 <= value <= MAX_CLASSES:
        raise CheckpointError(f"{path}: num_classes must be an integer in [1, {MAX_CLASSES}], got {_short(value)}")
    return value


def _check_state(state: Any, path: Path, what: str = "state_dict") -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: {what} must be a non-empty dict of tensors, got {type(state).__name__}")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: {what} must map names to tensors; {_short(k)} holds a {type(v).__name__}")
    return state


def _validate(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The fields of a hybridprune/1 payload, type- and range-checked."""
    missing = [k for k in ("model", "normalization", "state_dict") if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: hybridprune checkpoint lacks key(s) {missing}")
    model = raw["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not model["name"]:
        raise CheckpointError(f"{path}: 'model' must be a dict with a 'name' string, got {_short(model)}")
    kwargs = model.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise CheckpointError(f"{path}: model kwargs must be a dict with identifier keys, got {_short(kwargs)}")
    kwargs = dict(kwargs)
    kwargs["num_classes"] = _num_classes(kwargs.get("num_classes", 10), path)
    size = raw.get("input_size")
    if size is not None and (
        not isinstance(size, (list, tuple)) or len(size) != 3 or not all(_is_int(v) and v >= 1 for v in size)
        or size[0] > MAX_CHANNELS or max(size[1:]) > MAX_SIDE
    ):
        raise CheckpointError(
            f"{path}: input_size must be [C, H, W] with 1 <= C <= {MAX_CHANNELS} and 1 <= H, W <= {MAX_SIDE}, "
            f"got {_short(size)}"
        )
    norm = raw["normalization"]
    if not isinstance(norm, dict) or not all(
        isinstance(norm.get(k), (list, tuple)) and norm[k] and all(_is_number(v) for v in norm[k])
        for k in ("mean", "std")
    ):
        raise CheckpointError(
            f"{path}: normalization must be {{'mean': [numbers], 'std': [numbers]}}, got {_short(norm)}"
        )
    try:
        normalization = Normalization.from_dict(norm)
    except HybridPruneError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if size is not None and len(normalization.mean) != size[0]:
        raise CheckpointError(f"{path}: normalization has {len(normalization.mean)} channels, input_size {size[0]}")
    record = raw.get("record")
    if record is not None and not isinstance(record, dict):
        raise CheckpointError(f"{path}: record must be a pruning record dict or None, got {type(record).__name__}")
    metrics = raw.get("metrics") or {}
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise CheckpointError(f"{path}: metrics must be a dict with string keys, got {_short(metrics)}")
    return {
        "name": model["name"], "kwargs": kwargs, "normalization": normalization,
        "input_size": tuple(size) if size is not None else None, "record": record or None,
        "state": _check_state(raw["state_dict"], path), "metrics": dict(metrics),
    }


def _size_on_meta(name: str, kwargs: dict[str, Any]) -> int | None:
    """Elements the model would allocate, counted without allocating (meta device); None if unknown."""
    try:
        with torch.device("meta"):
            model = create_model(name, **kwargs)
        return sum(t.numel() for t in model.state_dict().values())
    except Exception:  # the real build below reports the failure
        return None


def _build(name: str, kwargs: dict[str, Any], path: Path) -> nn.Module:
    """``create_model`` with every failure as a CheckpointError naming the file.

    The model is first built on the meta device, so options from a tampered file (a width of a
    billion) are refused before anything is allocated.
    """
    size = _size_on_meta(name, kwargs)
    if size is not None and size > MAX_ELEMENTS:
        raise CheckpointError(
            f"{path}: model {name} with {_short(kwargs)} would hold {size:,} values (more than {MAX_ELEMENTS:,}); "
            f"the file is malformed"
        )
    try:
        return create_model(name, **kwargs)
    except ModelReferenceError as exc:
        raise CheckpointError(f"{path} was saved from model {name}, which cannot be loaded now: {exc}") from None
    except HybridPruneError as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {name} with {_short(kwargs)}: {exc}") from None
    except Exception as exc:  # a registry factory given nonsense options by a tampered file
        raise CheckpointError(f"{path}: cannot rebuild model {name}: {type(exc).__name__}: {exc}") from None


def _infer_classic(state: dict[str, torch.Tensor], path: Path) -> tuple[str, dict[str, Any]] | None:
    """(registry name, kwargs) of a classic CIFAR ResNet state_dict; None without that layout."""
    blocks = {(int(m[1]), int(m[2])) for k in state if (m := re.match(r"layer(\d)\.(\d+)\.", k))}
    first = [i for s, i in blocks if s == 1]
    if "linear.weight" not in state or not first:
        return None
    linear = state["linear.weight"]
    if linear.dim() != 2:
        raise CheckpointError(
            f"{path}: linear.weight must be a 2-D [classes, features] tensor, got shape {tuple(linear.shape)}"
        )
    n = max(first) + 1
    shortcut = "B" if any(".shortcut." in k for k in state) else "A"
    return f"resnet{6 * n + 2}", {"num_classes": _num_classes(int(linear.shape[0]), path), "shortcut": shortcut}


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
                f"{path} does not fit model {name}: {k} has shape {tuple(v.shape)}, "
                f"the model needs {tuple(own[k].shape)}"
            )
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"{path} does not fit model {name}: {first_line(exc)[:160]}") from None


def _classifier_classes(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """Class count of a plain state_dict: rows of the weight of the model's last Linear (or conv)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        return None
    w = state.get(f"{layers[-1][0]}.weight")
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() >= 2 else None


def _load_plain(
    path: Path, state: dict[str, torch.Tensor], name: str, normalization: Normalization | None
) -> LoadedCheckpoint:
    """A plain ``torch.save(model.state_dict())`` file for a named model (registry or reference)."""
    spec = get_model_spec(name)
    model = _build(spec.name, {}, path)
    n = _classifier_classes(model, state)
    if n is not None and n != model.hp_model_kwargs["num_classes"]:
        model = _build(spec.name, {"num_classes": _num_classes(n, path)}, path)
    _load_state(model, state, path, spec.name)
    model.hp_input_size = tuple(spec.input_size)
    return LoadedCheckpoint(
        model=model.eval(), model_name=spec.name, model_kwargs=dict(model.hp_model_kwargs),
        normalization=normalization or spec.normalization, input_size=tuple(spec.input_size),
        source_format="state_dict",
    )


def load_checkpoint(
    path: str | os.PathLike,
    model_name: str | None = None,
    normalization: Normalization | None = None,
    *,
    trust_model_code: bool = False,
) -> LoadedCheckpoint:
    """Load a hybridprune checkpoint, a classic CIFAR ResNet file, or a plain state_dict.

    Args:
        path: The file. Loaded with ``weights_only=True``.
        model_name: For classic files, the expected architecture (inferred from the keys when
            ``None``); for plain state_dicts (``torch.save(model.state_dict())``), the registry
            name or factory reference to load them into (required); for hybridprune files, if
            given, must match the stored name.
        normalization: Overrides the stored normalisation. Classic files default to the ImageNet
            statistics they were trained with, plain state_dicts to the model's default.
        trust_model_code: Import the file or module a hybridprune checkpoint names as its model
            (``file.py:callable``). Without it such a checkpoint loads only when ``model_name``
            is that same reference: a file is data, and loading it must not run code it names.

    Returns:
        A :class:`LoadedCheckpoint`.

    Raises:
        CheckpointError: for a missing, corrupt, malformed or non-checkpoint file, one whose
            recorded model reference cannot be loaded any more, or whose tensors do not fit.
        ConfigError: for a ``model_name`` that is unknown or cannot be loaded.
    """
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    if "format" in raw and raw["format"] != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {_short(raw['format'])}; this version reads {FORMAT}")
    if raw.get("format") == FORMAT:
        return _finite(_load_hybridprune(path, raw, model_name, normalization, trust_model_code), path)
    state = raw.get("state_dict", raw)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} has no state_dict of tensors; it is not a model checkpoint")
    state = {k.removeprefix("module."): v for k, v in _check_state(state, path).items()}
    if model_name is not None and (is_reference(model_name) or get_model_spec(model_name).family != "cifar_resnet"):
        return _finite(_load_plain(path, state, model_name, normalization), path)
    return _finite(_load_classic(path, state, model_name, normalization), path)


def _finite(loaded: LoadedCheckpoint, path: Path) -> LoadedCheckpoint:
    """Refuse weights or statistics that are NaN or infinite: every score of such a model is garbage."""
    for name, tensor in loaded.model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: {name} holds {bad} NaN or infinite value(s) of {tensor.numel()}; "
                                  f"the model is broken (a diverged training?)")
    return loaded


def _load_hybridprune(path: Path, raw: dict, model_name: str | None, normalization: Normalization | None,
                      trust_model_code: bool) -> LoadedCheckpoint:
    """A file in hybridprune's own format: model name and kwargs, pruning record, state, metrics."""
    f = _validate(raw, path)
    name = f["name"]
    if model_name is not None and canonical_reference(model_name) != name:
        raise CheckpointError(f"{path} holds a {name} checkpoint, not {model_name}")
    if is_reference(name) and model_name is None and not trust_model_code:
        raise CheckpointError(f"{path} names model code {name!r}, which loading it would import and run; a "
                              f"checkpoint may name registry models only: pass that reference yourself "
                              f"(--model {name}) or --trust-model-code if you trust the file")
    model = _build(name, f["kwargs"], path)
    if f["input_size"]:
        model.hp_input_size = f["input_size"]  # the size block detection traces at
    if f["record"]:
        from hybridprune.pruning.record import apply_record  # lazy: unpruned models need no torch-pruning

        try:
            model = apply_record(model, f["record"])
        except HybridPruneError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:
            raise CheckpointError(f"{path}: pruning record cannot be applied: {type(exc).__name__}: {exc}") from None
    _load_state(model, f["state"], path, name)
    input_size = f["input_size"] or tuple(get_model_spec(name).input_size)
    model.hp_input_size = input_size
    return LoadedCheckpoint(
        model=model.eval(), model_name=name, model_kwargs=f["kwargs"],
        normalization=normalization or f["normalization"], input_size=input_size,
        record=f["record"], metrics=f["metrics"],
    )


def _load_classic(path: Path, state: dict, model_name: str | None,
                  normalization: Normalization | None) -> LoadedCheckpoint:
    """A classic CIFAR ResNet state_dict (the public pretrained files), its depth inferred from the keys."""
    classic = _infer_classic(state, path)
    if classic is None:
        raise CheckpointError(
            f"{path}: state_dict has no CIFAR ResNet layout (conv1, layer1..3.N.*, linear); for a plain "
            f"state_dict of another model pass its name or reference (--model path/to/file.py:callable)"
        )
    inferred, kwargs = classic
    name = model_name or inferred
    model = _build(name, kwargs, path)
    _load_state(model, state, path, name)
    return LoadedCheckpoint(
        model=model.eval(),
        model_name=name,
        model_kwargs=model.hp_model_kwargs,
        normalization=normalization or Normalization(IMAGENET_MEAN, IMAGENET_STD),
        input_size=get_model_spec(name).input_size,
        source_format="classic",
    )
