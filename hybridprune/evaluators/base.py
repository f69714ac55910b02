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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from hybridprune.errors import ConfigError, LatencyError
from hybridprune.evaluators.export import DEFAULT_OPSET, check_opset
from hybridprune.evaluators.timing import Protocol
from hybridprune.recipe import MAX_BATCH
from hybridprune.registry import Registry

LATENCY_BACKENDS: Registry[type["BaseLatencyBackend"]] = Registry("latency backend")
DEFAULT_BACKEND = "onnxruntime"
PROTOCOL_OPTIONS = tuple(name for name, _ in Protocol.FIELDS)
TAKES = ("onnx", "module")  # what a backend's _measure receives


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

    :meth:`measure` checks the precision and batch size and turns the model into what the backend
    takes (class attribute ``takes``): ONNX-taking backends get a path (a module is exported to a
    temporary static-batch ONNX file at ``opset``, deleted afterwards), module-taking backends
    get the ``nn.Module`` (an ONNX path is refused). Subclasses implement :meth:`_measure`.

    Class attributes (capabilities):
        name: Registry name.
        precisions: Precisions the backend measures.
        takes: ``"onnx"`` or ``"module"``: what :meth:`_measure` receives.
        queues_itself: True when the backend serialises measurements itself (the remote device
            agent does), so callers need no lock around :meth:`measure`.
        shares_host: True when the model runs on this machine, beside fine-tuning and whatever
            else loads it: a study then times each model interleaved with the baseline and keeps
            the ratio. A dedicated device (the agent) does not.
        isolatable: True when an ONNX file can be timed in a child process that imports neither
            torch nor Optuna (``[latency] isolate``).
        pairs: True when :meth:`measure_pair` times two ONNX files in alternating short blocks.

    Args:
        opset: ONNX opset of the export (ONNX-taking backends only; default
            :data:`hybridprune.evaluators.export.DEFAULT_OPSET`).
        warmup_runs, min_runs, max_runs, max_time_s, rel_ci, confidence: the measurement
            protocol (see :class:`hybridprune.evaluators.timing.Protocol`).

    Raises:
        ConfigError: if an option is unknown or invalid.
    """

    name: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    takes: ClassVar[str] = "onnx"
    queues_itself: ClassVar[bool] = False
    shares_host: ClassVar[bool] = True
    isolatable: ClassVar[bool] = False
    pairs: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.takes not in TAKES:
            raise TypeError(f"{cls.__name__}.takes must be one of {TAKES}, got {cls.takes!r}")
        for flag in ("queues_itself", "shares_host", "isolatable", "pairs"):
            if not isinstance(getattr(cls, flag), bool):
                raise TypeError(f"{cls.__name__}.{flag} must be a bool, got {getattr(cls, flag)!r}")
        if cls.isolatable and cls.takes != "onnx":
            raise TypeError(f"{cls.__name__}: only a backend that takes ONNX files can be isolatable")

    def __init__(self, **options: Any) -> None:
        opset = options.pop("opset", None) if self.takes == "onnx" else None
        unknown = set(options) - set(PROTOCOL_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} for latency backend "
                              f"{self.name!r}; allowed: {', '.join(self.option_names())}")
        try:
            self.protocol = Protocol.from_mapping(options)
        except ValueError as exc:
            raise ConfigError(f"latency protocol: {exc}") from None
        self.opset: int | None = None
        if self.takes == "onnx":
            self.opset = check_opset(DEFAULT_OPSET if opset is None else opset)

    @classmethod
    def option_names(cls) -> list[str]:
        """Options the constructor accepts."""
        return sorted([*PROTOCOL_OPTIONS, *(["opset"] if cls.takes == "onnx" else [])])

    def check_precision(self, precision: str) -> None:
        """Raise ConfigError unless this backend supports ``precision``."""
        if precision not in self.precisions:
            raise ConfigError(f"latency backend {self.name!r} supports precision "
                              f"{', '.join(self.precisions)}; got {precision!r}")

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
            LatencyError: if the export or the measurement fails.
            ConfigError: for an unsupported precision or batch size, or an ONNX file given to a
                backend that takes a module.
        """
        self.check_precision(precision)
        check_batch(batch_size)
        shape = tuple(input_shape)
        if self.takes == "module":
            if is_onnx_path(model):
                onnx_backends = ", ".join(n for n in LATENCY_BACKENDS.names()
                                          if LATENCY_BACKENDS.get(n).takes == "onnx")
                raise ConfigError(f"the {self.name} latency backend measures a PyTorch model, not an ONNX file; "
                                  f"use a backend that takes ONNX ({onnx_backends}) for .onnx files")
            return self._measure(model, input_shape=shape, batch_size=batch_size, precision=precision)
        from hybridprune.evaluators.export import onnx_for

        with onnx_for(model, shape, batch_size, self.opset) as path:
            return self._measure(path, input_shape=shape, batch_size=batch_size, precision=precision)

    def measure_pair(self, model: str | Path, baseline: str | Path, *, input_shape: tuple[int, ...] = (3, 32, 32),
                     batch_size: int = 1, precision: str = "fp32") -> LatencyResult:
        """Time two ONNX files in alternating short blocks of runs, each block's first runs
        dropped (backends whose ``pairs`` flag is set; see
        :func:`hybridprune.evaluators.timing.alternate_blocks`).

        Returns:
            The model's :class:`LatencyResult`; ``extra`` holds ``pair_ratio`` (median of the
            per-pair ratios model / baseline), ``pair_ratio_ci`` and ``baseline_median_ms``.
        """
        raise NotImplementedError(f"the {self.name} latency backend does not time pairs")

    @abc.abstractmethod
    def _measure(self, model: Any, *, input_shape: tuple[int, ...], batch_size: int,
                 precision: str) -> LatencyResult:
        """Measure an already checked and converted model.

        Args:
            model: A :class:`~pathlib.Path` of an ONNX file (``takes == "onnx"``) or an
                ``nn.Module`` (``takes == "module"``).
            input_shape, batch_size, precision: As given to :meth:`measure` (validated).

        Returns:
            A :class:`LatencyResult`.

        Raises:
            LatencyError: if the measurement fails.
        """


MAX_THREADS = 1024  # intra-op threads of a backend: beyond, the runtime spends its time spawning threads


def check_batch(batch_size: int) -> int:
    """Validate a batch size (ConfigError unless an int in [1, :data:`~hybridprune.recipe.MAX_BATCH`])."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= MAX_BATCH:
        raise ConfigError(f"batch size must be a whole number in [1, {MAX_BATCH}], got {batch_size!r}")
    return batch_size


def check_threads(threads: Any, backend: str) -> int:
    """Validate a backend's thread count (ConfigError unless an int in [1, :data:`MAX_THREADS`])."""
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"{backend} threads must be a whole number in [1, {MAX_THREADS}], got {threads!r}")
    return threads


def is_onnx_path(model: Any) -> bool:
    """Whether ``model`` names an ONNX file rather than being a module."""
    return isinstance(model, (str, Path))

