"""PyTorch latency backend: eager or torch.compile, on CPU or CUDA (timed with CUDA events)."""

from __future__ import annotations

import copy
import platform
import time
from typing import Any

from hybridprune.errors import ConfigError, LatencyError
from hybridprune.evaluators.base import LATENCY_BACKENDS, BaseLatencyBackend, LatencyResult, check_threads
from hybridprune.evaluators.timing import device_description, run_protocol


@LATENCY_BACKENDS.register()
class TorchLatency(BaseLatencyBackend):
    """PyTorch inference under ``torch.inference_mode``.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        compile: Wrap the model with ``torch.compile`` first.
        threads: CPU intra-op threads during the measurement (default: torch's current setting);
            recorded in the result.
        channels_last: Use the channels-last memory format.
        **protocol: Measurement protocol options.
    """

    name = "torch"
    precisions = ("fp32", "fp16")
    takes = "module"
    queues_itself = False
    shares_host = True

    def __init__(self, device: str = "cpu", compile: bool = False, threads: int | None = None,
                 channels_last: bool = False, **protocol: Any) -> None:
        super().__init__(**protocol)
        if not (device == "cpu" or str(device).startswith("cuda")):
            raise ConfigError(f"torch latency device must be 'cpu' or 'cuda[:N]', got {device!r}")
        if threads is not None:
            check_threads(threads, "torch")
        self.device, self.compile, self.threads, self.channels_last = str(device), bool(compile), threads, channels_last

    @classmethod
    def option_names(cls) -> list[str]:
        """Options the constructor accepts."""
        return sorted([*super().option_names(), "device", "compile", "threads", "channels_last"])

    def _measure(self, model: Any, *, input_shape: tuple[int, ...], batch_size: int,
                 precision: str) -> LatencyResult:
        import torch

        cuda = self.device.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise LatencyError(f"torch latency device {self.device!r} requested but CUDA is not available")
        if precision == "fp16" and not cuda:
            raise ConfigError("fp16 torch latency needs device='cuda'; CPU measures fp32")
        dtype = torch.float16 if precision == "fp16" else torch.float32
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        net = copy.deepcopy(model).eval().to(self.device, dtype).to(memory_format=memory_format)
        x = torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(0))
        x = x.to(self.device, dtype).contiguous(memory_format=memory_format)
        if self.compile:
            net = torch.compile(net)
        previous = torch.get_num_threads()
        threads = self.threads or previous
        torch.set_num_threads(threads)
        try:
            stats = run_protocol(self._timer(net, x, cuda), self.protocol)
        except LatencyError:
            raise
        except Exception as exc:
            raise LatencyError(f"torch measurement failed: {type(exc).__name__}: {exc}") from exc
        finally:
            torch.set_num_threads(previous)
        device = torch.cuda.get_device_name(self.device) if cuda else device_description()
        versions = {"torch": torch.__version__, "python": platform.python_version()}
        if cuda:
            versions["cuda"] = str(torch.version.cuda)
        return LatencyResult.from_stats(stats, backend=self.name, device=device, precision=precision,
                                        batch_size=batch_size, versions=versions, threads=threads,
                                        compiled=self.compile, torch_device=self.device)

    @staticmethod
    def _timer(net: Any, x: Any, cuda: bool):
        import torch

        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

            def run_once() -> float:
                with torch.inference_mode():
                    start.record()
                    net(x)
                    end.record()
                end.synchronize()
                return float(start.elapsed_time(end))
        else:

            def run_once() -> float:
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    net(x)
                    return (time.perf_counter() - t0) * 1000.0

        return run_once
