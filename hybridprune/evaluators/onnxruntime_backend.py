"""ONNX Runtime (CPU execution provider) latency backend; the agent's own onnxruntime timer."""

from __future__ import annotations

from typing import Any

from hybridprune.errors import LatencyError
from hybridprune.evaluators.base import LATENCY_BACKENDS, BaseLatencyBackend, LatencyResult, check_threads
from hybridprune.evaluators.timing import AgentError, OnnxRuntimeBackend, device_description


@LATENCY_BACKENDS.register()
class OnnxRuntimeLatency(BaseLatencyBackend):
    """ONNX Runtime on CPU with a fixed intra-op thread count (recorded in the result).

    Args:
        threads: Intra-op threads (default 1).
        **options: ``opset`` and the measurement protocol options (see :class:`BaseLatencyBackend`).
    """

    name = "onnxruntime"
    takes = "onnx"
    queues_itself = False
    shares_host = True
    isolatable = True
    pairs = True

    def __init__(self, threads: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.threads = check_threads(threads, "onnxruntime")
        self._timer = OnnxRuntimeBackend(threads)

    @classmethod
    def option_names(cls) -> list[str]:
        """Options the constructor accepts."""
        return sorted([*super().option_names(), "threads"])

    def measure_pair(self, model: Any, baseline: Any, *, input_shape: tuple[int, ...] = (3, 32, 32),
                     batch_size: int = 1, precision: str = "fp32") -> LatencyResult:
        """See :meth:`BaseLatencyBackend.measure_pair`."""
        self.check_precision(precision)
        try:
            stats = self._timer.measure_pair(model, baseline, self.protocol, precision, batch_size)
        except AgentError as exc:
            raise LatencyError(f"onnxruntime: {exc}") from exc
        return LatencyResult.from_stats(stats, backend=self.name, device=device_description(),
                                        precision=precision, batch_size=batch_size,
                                        versions=self._timer.versions())

    def _measure(self, model: Any, *, input_shape: tuple[int, ...], batch_size: int,
                 precision: str) -> LatencyResult:
        try:
            stats = self._timer.measure(model, self.protocol, precision, batch_size)
        except AgentError as exc:
            raise LatencyError(f"onnxruntime: {exc}") from exc
        return LatencyResult.from_stats(stats, backend=self.name, device=device_description(),
                                        precision=precision, batch_size=batch_size,
                                        versions=self._timer.versions())
