"""The latency backend registry and the factory normalising user input into a backend."""

from __future__ import annotations

from typing import Any, Mapping

from hybridprune.errors import ConfigError
from hybridprune.evaluators import onnxruntime_backend as _ort  # noqa: F401  (registers backends)
from hybridprune.evaluators import remote as _remote  # noqa: F401
from hybridprune.evaluators import tensorrt_backend as _trt  # noqa: F401
from hybridprune.evaluators import torch_backend as _torch  # noqa: F401
from hybridprune.evaluators.base import DEFAULT_BACKEND, LATENCY_BACKENDS, BaseLatencyBackend


def list_latency_backends() -> list[str]:
    """Registered latency backend names (onnxruntime, remote, tensorrt, torch)."""
    return LATENCY_BACKENDS.names()


def get_latency_backend(backend: None | str | Mapping[str, Any] | BaseLatencyBackend = None,
                        **options: Any) -> BaseLatencyBackend:
    """Normalise user input into a latency backend (like ``optuna.storages.get_storage``).

    Args:
        backend: None (the default, onnxruntime), a registered name, a mapping with a ``name``
            (or ``backend``) key plus options (e.g. a study file's ``[latency]`` table), or an
            existing backend, returned as is.
        **options: Constructor options (merged over the mapping's).

    Returns:
        A :class:`BaseLatencyBackend`.

    Raises:
        UnknownNameError: for an unknown name, listing the valid ones.
        ConfigError: for bad options, or options given with a ready backend.
        MissingDependencyError: if the backend's optional dependency is missing (tensorrt).
    """
    if isinstance(backend, BaseLatencyBackend):
        if options:
            raise ConfigError(f"options {sorted(options)} cannot be applied to an existing latency backend")
        return backend
    if isinstance(backend, Mapping):
        merged = dict(backend)
        name = merged.pop("name", None) or merged.pop("backend", None) or DEFAULT_BACKEND
        merged.update(options)
        return get_latency_backend(name, **merged)
    if backend is None:
        backend = DEFAULT_BACKEND
    if not isinstance(backend, str):
        raise ConfigError(f"latency backend must be a name ({', '.join(list_latency_backends())}), a mapping "
                          f"or a BaseLatencyBackend, got {type(backend).__name__}")
    cls = LATENCY_BACKENDS.get(backend)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"bad option for latency backend {backend!r} ({exc}); allowed: "
                          f"{', '.join(cls.option_names())}") from None
