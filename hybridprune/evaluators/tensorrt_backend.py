"""Local TensorRT latency backend (optional ``tensorrt`` extra; needs an NVIDIA GPU).

Builds an engine from the ONNX file with the TensorRT Python API (``trt.Builder`` + ``OnnxParser``,
``BuilderFlag.FP16`` for fp16), then times ``execute_async_v2`` (TensorRT 8) or
``execute_async_v3`` (TensorRT 10) with CUDA events, buffers allocated through torch.
"""

from __future__ import annotations

import platform
from typing import Any

from hybridprune.errors import ConfigError, LatencyError
from hybridprune.evaluators.base import LATENCY_BACKENDS, BaseLatencyBackend, LatencyResult
from hybridprune.evaluators.timing import run_protocol
from hybridprune.registry import lazy_import


def load_tensorrt() -> Any:
    """Import tensorrt or raise MissingDependencyError naming the ``tensorrt`` extra."""
    return lazy_import("tensorrt", "tensorrt", "the tensorrt latency backend")


@LATENCY_BACKENDS.register()
class TensorRTLatency(BaseLatencyBackend):
    """TensorRT engine built and timed on the local GPU.

    Args:
        workspace_mib: Builder workspace limit.
        **options: ``opset`` and the measurement protocol options (see :class:`BaseLatencyBackend`).

    Raises:
        MissingDependencyError: if tensorrt is not installed.
    """

    name = "tensorrt"
    precisions = ("fp32", "fp16")
    takes = "onnx"
    queues_itself = False
    shares_host = True

    def __init__(self, workspace_mib: int = 1024, **options: Any) -> None:
        super().__init__(**options)
        self.trt = load_tensorrt()
        if not isinstance(workspace_mib, int) or workspace_mib < 1:
            raise ConfigError(f"workspace_mib must be a positive integer, got {workspace_mib!r}")
        self.workspace_mib = workspace_mib

    @classmethod
    def option_names(cls) -> list[str]:
        """Options the constructor accepts."""
        return sorted([*super().option_names(), "workspace_mib"])

    def _build(self, onnx_path: Any, precision: str) -> Any:
        trt = self.trt
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if hasattr(
            trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        with open(onnx_path, "rb") as handle:
            if not parser.parse(handle.read()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise LatencyError(f"TensorRT cannot parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        else:  # TensorRT < 8.4
            config.max_workspace_size = self.workspace_mib << 20
        if precision == "fp16":
            if not builder.platform_has_fast_fp16:
                raise LatencyError("this GPU has no fast fp16; measure fp32")
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise LatencyError("TensorRT engine build failed (see the TensorRT log above)")
        return trt.Runtime(logger).deserialize_cuda_engine(serialized)

    def _measure(self, model: Any, *, input_shape: tuple[int, ...], batch_size: int,
                 precision: str) -> LatencyResult:
        import torch

        if not torch.cuda.is_available():
            raise LatencyError("the tensorrt latency backend needs a CUDA GPU visible to torch")
        engine = self._build(model, precision)
        context = engine.create_execution_context()
        stream = torch.cuda.Stream()
        buffers, run = self._bind(engine, context, stream)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run_once() -> float:
            start.record(stream)
            run()
            end.record(stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        stats = run_protocol(run_once, self.protocol)
        versions = {"tensorrt": self.trt.__version__, "torch": torch.__version__,
                    "python": platform.python_version()}
        return LatencyResult.from_stats(stats, backend=self.name, device=torch.cuda.get_device_name(),
                                        precision=precision, batch_size=batch_size, versions=versions)

    def _bind(self, engine: Any, context: Any, stream: Any) -> tuple[list[Any], Any]:
        import torch

        trt = self.trt
        buffers = []
        if hasattr(engine, "num_io_tensors"):  # TensorRT >= 8.5 tensor API (required by 10)
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                shape = tuple(engine.get_tensor_shape(name))
                dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
                buf = torch.randn(shape, device="cuda").to(dtype)
                buffers.append(buf)
                context.set_tensor_address(name, buf.data_ptr())
            return buffers, lambda: context.execute_async_v3(stream.cuda_stream)
        for i in range(engine.num_bindings):  # TensorRT 8.2-8.4 binding API
            shape = tuple(engine.get_binding_shape(i))
            dtype = torch.float16 if engine.get_binding_dtype(i) == trt.DataType.HALF else torch.float32
            buffers.append(torch.randn(shape, device="cuda").to(dtype))
        bindings = [b.data_ptr() for b in buffers]
        return buffers, lambda: context.execute_async_v2(bindings, stream.cuda_stream)
