"""Contract of every registered latency backend, the shared protocol and its statistics."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
import torch

from hybridprune.errors import ConfigError, LatencyError, MissingDependencyError, UnknownNameError
from hybridprune.evaluators import (
    BaseLatencyBackend,
    LatencyResult,
    Protocol,
    get_latency_backend,
    list_latency_backends,
    run_protocol,
    summarize,
)
from hybridprune.evaluators.timing import median_ci_indices, percentile
from hybridprune.models import create_model

from helpers import start_agent

FAST = {"warmup_runs": 2, "min_runs": 5, "max_time_s": 0.3, "rel_ci": 0.05}


@pytest.fixture(scope="module")
def loopback_agent():
    proc, url = start_agent("--token", "t")
    yield {"url": url, "token": "t"}
    proc.terminate()
    proc.wait(timeout=10)


def _available(name: str, request) -> dict | None:
    """Options to build ``name`` here, or None where it cannot run on this machine."""
    if name == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return None
        return {} if torch.cuda.is_available() else None
    if name == "remote":  # a real agent on loopback (onnxruntime backend)
        return request.getfixturevalue("loopback_agent")
    return {}


@pytest.mark.parametrize("name", list_latency_backends())
def test_backend_contract(name, request):
    options = _available(name, request)
    if options is None:
        if name == "tensorrt":  # the missing extra must be a clear, typed error
            with pytest.raises(MissingDependencyError, match=r"pip install 'hybridprune\[tensorrt\]'"):
                get_latency_backend(name, **FAST)
        pytest.skip(f"{name} cannot measure on this machine")
    backend = get_latency_backend(name, **options, **FAST)
    assert isinstance(backend, BaseLatencyBackend) and backend.name == name
    model = create_model("resnet20", width=4)
    result = backend.measure(model, input_shape=(3, 16, 16), batch_size=3)
    assert isinstance(result, LatencyResult)
    assert result.backend.split(":")[0] == name and result.batch_size == 3 and result.precision == "fp32"
    assert result.runs >= FAST["min_runs"]
    stats = [result.median_ms, result.mean_ms, result.p90_ms, result.p99_ms, result.std_ms]
    assert all(math.isfinite(v) and v >= 0 for v in stats)
    assert result.max_ms >= result.p99_ms >= result.p90_ms >= result.median_ms >= result.min_ms > 0
    assert result.device and result.versions
    assert LatencyResult.from_dict(result.to_dict()) == result
    with pytest.raises(ConfigError, match="precision"):
        backend.measure(model, precision="int4")
    with pytest.raises(ConfigError, match="batch size"):
        backend.measure(model, batch_size=0)
    with pytest.raises(ConfigError, match="unknown option"):
        get_latency_backend(name, **options, warmup=3)


# what each registered backend declares; a new backend must be added here (and to the README)
CAPABILITIES = {"onnxruntime": ("onnx", False), "torch": ("module", False), "tensorrt": ("onnx", False),
                "remote": ("onnx", True)}


@pytest.mark.parametrize("name", list_latency_backends())
def test_backend_capabilities(name):
    from hybridprune.evaluators.base import LATENCY_BACKENDS
    from hybridprune.evaluators.export import DEFAULT_OPSET

    cls = LATENCY_BACKENDS.get(name)
    assert (cls.takes, cls.queues_itself) == CAPABILITIES[name]
    assert cls.takes in ("onnx", "module") and isinstance(cls.queues_itself, bool)
    assert set(cls.precisions) >= {"fp32"}
    # the shared preamble (checks, export) is the base class's; backends implement only _measure
    assert cls.measure is BaseLatencyBackend.measure and not cls.__abstractmethods__
    assert ("opset" in cls.option_names()) == (cls.takes == "onnx")
    if name != "tensorrt" or _tensorrt_installed():
        backend = get_latency_backend(name)
        assert backend.opset == (DEFAULT_OPSET if cls.takes == "onnx" else None)
    if cls.takes == "onnx":
        with pytest.raises(ConfigError, match="opset must be an integer between 7 and 20"):
            cls(opset=30)
    else:
        with pytest.raises(ConfigError, match="unknown option.*opset"):
            cls(opset=13)


def _tensorrt_installed() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


class _Recorder(BaseLatencyBackend):
    """A backend that records what the base class hands to _measure (not registered)."""

    name = "recorder"
    precisions = ("fp32", "fp16")

    def _measure(self, model, *, input_shape, batch_size, precision):
        import onnx

        self.seen = model
        if self.takes == "onnx":
            proto = onnx.load(str(model))
            self.dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
            self.opsets = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
        return LatencyResult(median_ms=1.0, mean_ms=1.0, p90_ms=1.0, p99_ms=1.0, std_ms=0.0, runs=1,
                             batch_size=batch_size, precision=precision, backend=self.name, device="-")


class _ModuleRecorder(_Recorder):
    takes = "module"


def test_base_measure_converts_models_for_the_backend(tmp_path):
    from pathlib import Path

    from hybridprune.evaluators.export import export_onnx

    model = create_model("resnet20", width=4)
    onnx_backend = _Recorder(opset=11)
    result = onnx_backend.measure(model, input_shape=(3, 16, 16), batch_size=2, precision="fp16")
    assert isinstance(onnx_backend.seen, Path) and onnx_backend.seen.suffix == ".onnx"
    assert onnx_backend.dims == [2, 3, 16, 16] and onnx_backend.opsets == [11]
    assert not onnx_backend.seen.exists()  # the temporary export is gone
    assert result.precision == "fp16" and result.batch_size == 2
    path = export_onnx(model, tmp_path / "m.onnx", (1, 3, 8, 8))
    onnx_backend.measure(path)
    assert onnx_backend.seen == path and path.exists()  # a file is passed through, not deleted

    module_backend = _ModuleRecorder()
    module_backend.measure(model, batch_size=3)
    assert module_backend.seen is model
    with pytest.raises(ConfigError, match="measures a PyTorch model.*onnxruntime, remote, tensorrt"):
        module_backend.measure(path)
    for backend in (onnx_backend, module_backend):
        with pytest.raises(ConfigError, match="precision"):
            backend.measure(model, precision="int8")
        with pytest.raises(ConfigError, match="batch size"):
            backend.measure(model, batch_size=0)


def test_capabilities_are_checked_when_a_backend_is_defined():
    with pytest.raises(TypeError, match="takes must be one of"):
        type("Bad", (BaseLatencyBackend,), {"takes": "tflite", "_measure": lambda self, m, **k: None})
    with pytest.raises(TypeError, match="queues_itself must be a bool"):
        type("Bad", (BaseLatencyBackend,), {"queues_itself": "yes", "_measure": lambda self, m, **k: None})


def test_factory_normalises_input():
    assert get_latency_backend(None).name == "onnxruntime"
    backend = get_latency_backend("torch", threads=1)
    assert get_latency_backend(backend) is backend
    from_mapping = get_latency_backend({"name": "onnxruntime", "threads": 1, "max_time_s": 2})
    assert from_mapping.threads == 1 and from_mapping.protocol.max_time_s == 2
    with pytest.raises(UnknownNameError, match="choose one of: onnxruntime, remote, tensorrt, torch"):
        get_latency_backend("tflite")
    with pytest.raises(ConfigError, match="existing latency backend"):
        get_latency_backend(backend, threads=2)
    with pytest.raises(ConfigError, match="must be a name"):
        get_latency_backend(3)
    with pytest.raises(ConfigError, match="threads"):
        get_latency_backend("onnxruntime", threads=0)
    with pytest.raises(ConfigError, match="min_runs"):
        get_latency_backend("onnxruntime", min_runs=0)


def test_backends_reject_unsupported_inputs(tmp_path):
    model = create_model("resnet20", width=4)
    with pytest.raises(ConfigError, match="not an ONNX file|PyTorch model"):
        get_latency_backend("torch").measure(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="fp16"):
        get_latency_backend("torch").measure(model, precision="fp16")
    with pytest.raises(LatencyError, match="CUDA"):
        if torch.cuda.is_available():
            raise LatencyError("CUDA present; nothing to check")
        get_latency_backend("torch", device="cuda").measure(model)
    with pytest.raises(LatencyError, match="does not exist"):
        get_latency_backend("onnxruntime").measure(tmp_path / "missing.onnx")


def test_package_import_stays_light():
    code = ("import sys, hybridprune.evaluators as e; "
            "print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- statistics and protocol (shared by host and agent) --------------------------------------


def test_summary_statistics_match_numpy():
    import numpy as np

    rng = random.Random(0)
    values = [rng.lognormvariate(0, 0.3) for _ in range(201)]
    stats = summarize(values)
    arr = np.array(values)
    assert stats["median_ms"] == pytest.approx(np.median(arr))
    assert stats["mean_ms"] == pytest.approx(arr.mean())
    assert stats["std_ms"] == pytest.approx(arr.std(ddof=1))
    assert stats["p90_ms"] == pytest.approx(np.percentile(arr, 90))
    assert stats["p99_ms"] == pytest.approx(np.percentile(arr, 99))
    assert stats["runs"] == 201
    assert stats["ci_low_ms"] <= stats["median_ms"] <= stats["ci_high_ms"]


def test_median_ci_order_statistics():
    # classic table values (95%): n=100 -> 40th and 61st order statistics (1-based)
    assert median_ci_indices(100) == (39, 60)
    assert median_ci_indices(5) == (0, 4)  # too few samples: whole range
    assert median_ci_indices(6) == (0, 5)
    lo, hi = median_ci_indices(1000, 0.99)
    assert lo < 500 < hi and lo + hi == 999
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_protocol_stops_when_stable_and_honours_limits():
    constant = run_protocol(lambda: 2.0, Protocol(warmup_runs=1, min_runs=8, max_time_s=60, rel_ci=0.01))
    assert constant["stable"] and constant["runs"] == 8 and constant["median_ms"] == 2.0
    rng = random.Random(1)
    capped = run_protocol(lambda: rng.uniform(1, 100), Protocol(min_runs=7, max_runs=50, max_time_s=60,
                                                                rel_ci=1e-6))
    assert not capped["stable"] and capped["runs"] == 50
    calls = []
    run_protocol(lambda: calls.append(1) or 1.0, Protocol(warmup_runs=4, min_runs=3, max_time_s=60))
    assert len(calls) == 4 + 3


def test_protocol_stops_when_cancelled(monkeypatch):
    from hybridprune.evaluators import timing

    monkeypatch.setattr(timing, "POLL_S", 0.0)  # ask after every run
    runs, asked = [], []
    with pytest.raises(timing.Cancelled, match="client went away"):
        run_protocol(lambda: runs.append(1) or 1.0 + len(runs) % 7, Protocol(warmup_runs=2, min_runs=5, rel_ci=1e-6),
                     cancelled=lambda: asked.append(1) or len(asked) >= 4)
    assert len(runs) == len(asked) == 4  # stopped right after the fourth question
    assert run_protocol(lambda: 1.0, Protocol(min_runs=3), cancelled=lambda: False)["runs"] == 3


@pytest.mark.parametrize("kwargs, word", [({"min_runs": 0}, "min_runs"), ({"max_time_s": 0}, "max_time_s"),
                                          ({"rel_ci": 0}, "rel_ci"), ({"confidence": 1.0}, "confidence"),
                                          ({"warmup_runs": -1}, "warmup_runs")])
def test_protocol_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Protocol(**kwargs)


def test_latency_result_validation():
    with pytest.raises(LatencyError, match="runs"):
        LatencyResult.from_stats({"median_ms": 1, "mean_ms": 1, "p90_ms": 1, "p99_ms": 1, "std_ms": 0, "runs": 0},
                                 backend="x", device="d", precision="fp32", batch_size=1, versions={})
    with pytest.raises(LatencyError, match="malformed"):
        LatencyResult.from_stats({"median_ms": 1}, backend="x", device="d", precision="fp32", batch_size=1,
                                 versions={})
