"""ONNX Runtime (CPU execution provider) latency backend; the agent's own onnxruntime timer."""

from __future__ import annotations

from typing import Any

from hybridprune.errors import ConfigError, LatencyError
from hybridprune.evaluators.timing import AgentError, OnnxRuntimeBackend, device_description
from hybridprune.evaluators.base import LATENCY_BACKENDS, BaseLatencyBackend, LatencyResult, check_batch


@LATENCY_BACKENDS.register()
class OnnxRuntimeLatency(BaseLatencyBackend):
    """ONNX Runtime on CPU with a fixed intra-op thread count (recorded in the result).

    Args:
        threads: Intra-op threads (default 1).
        opset: Opset used when exporting a module.
        **protocol: Measurement protocol options.
    """

    name = "onnxruntime"

    def __init__(self, threads: int = 1, opset: int = 13, **protocol: Any) -> None:
        super().__init__(**protocol)
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"onnxruntime threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self.opset = opset
        self._timer = OnnxRuntimeBackend(threads)

    @classmethod
    def option_names(cls) -> list[str]:
        return sorted([*super().option_names(), "threads", "opset"])

    def measure(self, model: Any, *, input_shape: tuple[int, ...] = (3, 32, 32), batch_size: int = 1,
                precision: str = "fp32") -> LatencyResult:
        """See :meth:`BaseLatencyBackend.measure`."""
        self.check_precision(precision)
        check_batch(batch_size)
        from hybridprune.evaluators.export import onnx_for

        with onnx_for(model, tuple(input_shape), batch_size, self.opset) as path:
            try:
                stats = self._timer.measure(path, self.protocol, precision, batch_size)
            except AgentError as exc:
                raise LatencyError(f"onnxruntime: {exc}") from exc
        return LatencyResult.from_stats(stats, backend=self.name, device=device_description(),
                                        precision=precision, batch_size=batch_size,
                                        versions=self._timer.versions())
