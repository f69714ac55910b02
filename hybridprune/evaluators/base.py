"""The latency backend interface, its result type, registry and factory.

Every backend follows the same protocol (:func:`hybridprune.evaluators.timing.run_protocol`: warm-up,
then timed runs until the median's distribution-free confidence interval is narrow enough or a
time cap is hit); the statistics code lives in the stdlib-only ``timing`` module so the host and the
device agent share it.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hybridprune.errors import ConfigError, LatencyError
from hybridprune.evaluators.timing import PRECISIONS, Protocol
from hybridprune.registry import Registry

LATENCY_BACKENDS: Registry[type["BaseLatencyBackend"]] = Registry("latency backend")
DEFAULT_BACKEND = "onnxruntime"
PROTOCOL_OPTIONS = tuple(name for name, _ in Protocol.FIELDS)


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement (times in milliseconds per batch)."""

    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float
    runs: int
    batch_size: int
    precision: str
    backend: str
    device: str
    versions: dict[str, str] = field(default_factory=dict)
    min_ms: float = math.nan
    max_ms: float = math.nan
    ci_low_ms: float = math.nan
    ci_high_ms: float = math.nan
    rel_ci: float = math.nan
    stable: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.runs < 1 or self.batch_size < 1:
            raise LatencyError(f"a latency result needs runs >= 1 and batch_size >= 1, "
                               f"got runs={self.runs}, batch_size={self.batch_size}")
        if not (math.isfinite(self.median_ms) and self.median_ms >= 0):
            raise LatencyError(f"latency median must be a finite non-negative number, got {self.median_ms}")

    @property
    def per_sample_ms(self) -> float:
        """Median latency divided by the batch size."""
        return self.median_ms / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any], *, backend: str, device: str, precision: str,
                   batch_size: int, versions: Mapping[str, str], **extra: Any) -> "LatencyResult":
        """Build from :func:`~hybridprune.evaluators.timing.run_protocol`'s dict (or the agent's reply).

        Raises:
            LatencyError: if required statistics are missing or malformed.
        """
        try:
            known = {f.name for f in dataclasses.fields(cls)}
            rest = {k: v for k, v in stats.items() if k not in known}
            rest.update(extra)
            return cls(
                median_ms=float(stats["median_ms"]), mean_ms=float(stats["mean_ms"]),
                p90_ms=float(stats["p90_ms"]), p99_ms=float(stats["p99_ms"]),
                std_ms=float(stats["std_ms"]), runs=int(stats["runs"]), batch_size=int(batch_size),
                precision=precision, backend=backend, device=device,
                versions={str(k): str(v) for k, v in versions.items()},
                min_ms=float(stats.get("min_ms", math.nan)), max_ms=float(stats.get("max_ms", math.nan)),
                ci_low_ms=float(stats.get("ci_low_ms", math.nan)),
                ci_high_ms=float(stats.get("ci_high_ms", math.nan)),
                rel_ci=float(stats.get("rel_ci", math.nan)), stable=bool(stats.get("stable", False)),
                extra=rest,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyError(f"malformed latency statistics ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LatencyResult":
        """Inverse of :meth:`to_dict`."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class BaseLatencyBackend(abc.ABC):
    """Measures the latency of a model (``nn.Module``) or an ONNX file on one runtime.

    Args:
        warmup_runs, min_runs, max_runs, max_time_s, rel_ci, confidence: the measurement
            protocol (see :class:`hybridprune.evaluators.timing.Protocol`).

    Raises:
        ConfigError: if a protocol option is invalid.
    """

    name: str = ""
    precisions: tuple[str, ...] = ("fp32",)

    def __init__(self, **protocol: Any) -> None:
        unknown = set(protocol) - set(PROTOCOL_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} for latency backend "
                              f"{self.name!r}; allowed: {', '.join(self.option_names())}")
        try:
            self.protocol = Protocol.from_mapping(protocol)
        except ValueError as exc:
            raise ConfigError(f"latency protocol: {exc}") from None

    @classmethod
    def option_names(cls) -> list[str]:
        """Options the constructor accepts."""
        return sorted(PROTOCOL_OPTIONS)

    def check_precision(self, precision: str) -> None:
        """Raise ConfigError unless this backend supports ``precision``."""
        if precision not in self.precisions:
            raise ConfigError(f"latency backend {self.name!r} supports precision "
                              f"{', '.join(self.precisions)}; got {precision!r}")

    @abc.abstractmethod
    def measure(self, model: Any, *, input_shape: tuple[int, ...] = (3, 32, 32), batch_size: int = 1,
                precision: str = "fp32") -> LatencyResult:
        """Measure ``model`` (an ``nn.Module`` or a path to an ``.onnx`` file).

        Args:
            model: The model, or a path of an ONNX file (static shapes).
            input_shape: One sample's shape (C, H, W).
            batch_size: Batch size of each timed run.
            precision: ``fp32`` or, where the backend supports it, ``fp16``.

        Returns:
            A :class:`LatencyResult`.

        Raises:
            LatencyError: if the measurement fails.
            ConfigError: for an unsupported precision or batch size.
        """


def check_batch(batch_size: int) -> int:
    """Validate a batch size (ConfigError unless a positive int)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    return batch_size


def is_onnx_path(model: Any) -> bool:
    """Whether ``model`` names an ONNX file rather than being a module."""
    return isinstance(model, (str, Path))


def host_versions(**more: str) -> dict[str, str]:
    """Python version plus the given library versions."""
    return {"python": platform.python_version(), **more}
