"""trtexec output parsing on genuine TensorRT 8.2-10.3 logs, and the agent's trtexec backend."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from hybridprune.evaluators.timing import Protocol
from hybridprune.evaluators.trtexec import TrtexecBackend, TrtexecParseError, parse_trtexec_output, trt_version_string

from helpers import fake_trtexec

EXPECTED = {
    "trt8201_jetson_best.txt": {
        "version": "8.2.1", "throughput": 72.2544, "walltime": 3.03096, "gpu_total": 2.99948,
        "latency": {"min_ms": 13.7075, "max_ms": 14.8861, "mean_ms": 13.8259, "median_ms": 13.7999,
                    "p99_ms": 14.8121},
        "gpu_compute": {"min_ms": 13.5784, "max_ms": 14.7576, "mean_ms": 13.6963, "median_ms": 13.6698,
                        "p99_ms": 14.6803},
        "end_to_end_median": 13.8109, "d2h_min": 0.00830078,
    },
    "trt8x_xavier_nx_pr1124.txt": {
        "version": None, "throughput": 27207.0, "walltime": 3.00158, "gpu_total": 2.88214,
        "latency": {"min_ms": 0.564209, "max_ms": 0.593018, "mean_ms": 0.573891, "median_ms": 0.572998,
                    "p99_ms": 0.587769},
        "gpu_compute": {"min_ms": 0.554932, "max_ms": 0.58374, "mean_ms": 0.564682, "median_ms": 0.564087,
                        "p99_ms": 0.578552},
        "end_to_end_median": 0.585938, "d2h_min": 0.00219727,
    },
    "trt8400_xavier_oe4t_pr952.txt": {
        "version": "8.4.0", "throughput": 41087.7, "walltime": 3.00119, "gpu_total": 2.99202,
        "latency": {"min_ms": 0.387207, "max_ms": 0.447357, "mean_ms": 0.402238, "median_ms": 0.401947,
                    "p99_ms": 0.420288},
        "gpu_compute": {"min_ms": 0.375977, "max_ms": 0.403564, "mean_ms": 0.388221, "median_ms": 0.388443,
                        "p99_ms": 0.393188},
        "end_to_end_median": None, "d2h_min": 0.00195312,
    },
    "trt10300_jetpack6_resnet50.txt": {
        "version": "10.3.0", "throughput": 318.007, "walltime": 3.00622, "gpu_total": 3.00249,
        "latency": {"min_ms": 3.12671, "max_ms": 3.15479, "mean_ms": 3.14068, "median_ms": 3.14062,
                    "p90_ms": 3.14587, "p95_ms": 3.14771, "p99_ms": 3.15039},
        "gpu_compute": {"min_ms": 3.12671, "max_ms": 3.15479, "mean_ms": 3.14068, "median_ms": 3.14062,
                        "p90_ms": 3.14587, "p95_ms": 3.14771, "p99_ms": 3.15039},
        "end_to_end_median": None, "d2h_min": 0.0,
    },
}


def test_every_fixture_has_expectations(trtexec_fixtures):
    assert sorted(p.name for p in trtexec_fixtures.glob("*.txt")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parser_reads_exact_numbers(trtexec_fixtures, name):
    want = EXPECTED[name]
    got = parse_trtexec_output((trtexec_fixtures / name).read_text())
    assert got["latency"] == want["latency"]
    assert got["gpu_compute"] == want["gpu_compute"]
    assert got["throughput_qps"] == want["throughput"]
    assert got["total_host_walltime_s"] == want["walltime"]
    assert got["total_gpu_compute_s"] == want["gpu_total"]
    assert got.get("tensorrt_version") == want["version"]
    assert got["d2h"]["min_ms"] == want["d2h_min"]
    if want["end_to_end_median"] is None:
        assert "end_to_end" not in got
    else:
        assert got["end_to_end"]["median_ms"] == want["end_to_end_median"]


@pytest.mark.parametrize("text", ["", "&&&& FAILED TensorRT.trtexec [TensorRT v8201]\n",
                                  "[I] === Performance summary ===\n[I] Throughput: 10 qps\n",
                                  "Average over 10 runs is 3.1 ms (host walltime is 3.2 ms)\n"])
def test_parser_rejects_text_without_summary(text):
    with pytest.raises(TrtexecParseError, match="no trtexec performance summary"):
        parse_trtexec_output(text)


def test_version_codes():
    assert trt_version_string("8201") == "8.2.1"
    assert trt_version_string("8601") == "8.6.1"
    assert trt_version_string("100300") == "10.3.0"


# A stand-in for NVIDIA's trtexec (which needs an NVIDIA GPU): it checks the arguments the agent
# passes, prints a genuine TensorRT 8.2 summary and writes an --exportTimes file like trtexec does.
FAKE_TRTEXEC = r'''#!{python}
import json, sys
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:])
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
assert ("onnx" in args) != ("loadEngine" in args), args
if "saveEngine" in args:
    open(args["saveEngine"], "wb").write(b"engine")
n = int(args["iterations"])
times = [dict(startComputeMs=i, endComputeMs=i + 1, latencyMs=1.0 + (i % 3) * 0.001, computeMs=0.9) for i in range(n)]
json.dump(times, open(args["exportTimes"], "w"))
sys.stdout.write(open({fixture!r}).read())
'''


def test_trtexec_backend_builds_once_then_loads_cached_engine(tmp_path, trtexec_fixtures):
    log = tmp_path / "calls.log"
    exe = tmp_path / "trtexec"
    exe.write_text(FAKE_TRTEXEC.format(python=sys.executable, log=str(log),
                                       fixture=str(trtexec_fixtures / "trt8201_jetson_best.txt")))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    workdir = tmp_path / "work"
    workdir.mkdir()
    backend = TrtexecBackend(str(workdir), trtexec=str(exe))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"unused by the stand-in")
    protocol = Protocol(min_runs=30, max_time_s=1, rel_ci=0.05)
    first = backend.measure(str(model), protocol, "fp16", 1, model_hash="abc")
    second = backend.measure(str(model), protocol, "fp16", 1, model_hash="abc")
    calls = log.read_text().splitlines()
    assert "--onnx=" in calls[0] and "--fp16" in calls[0] and "--saveEngine=" in calls[0]
    assert all("--loadEngine=" in c and "--onnx=" not in c for c in calls[1:])
    assert all("--exportTimes=" in c and "--iterations=30" in c for c in calls)
    for stats in (first, second):
        assert stats["runs"] >= 30 and stats["stable"]
        assert stats["median_ms"] == pytest.approx(1.001)
        assert stats["trtexec_summary"]["latency"]["median_ms"] == 13.7999
    assert backend.versions()["tensorrt"] == "8.2.1"
    assert os.path.exists(workdir / "abc-fp16.engine")


def test_trtexec_backend_reports_failure(tmp_path):
    exe = tmp_path / "trtexec"
    exe.write_text(f"#!{sys.executable}\nimport sys\nprint('[E] Error[4]: network has no inputs')\nsys.exit(1)\n")
    exe.chmod(0o755)
    backend = TrtexecBackend(str(tmp_path), trtexec=str(exe))
    from hybridprune.evaluators.agent import BadRequest

    with pytest.raises(BadRequest, match="trtexec failed \\(exit 1\\).*no inputs"):
        backend.measure(str(tmp_path / "m.onnx"), Protocol(min_runs=2, max_time_s=1), "fp32", 1)


def test_crashed_build_leaves_no_engine_and_is_retryable(tmp_path, trtexec_fixtures):
    from hybridprune.evaluators.trtexec import TrtexecCrashed
    exe, log = fake_trtexec(tmp_path, trtexec_fixtures, "crash")  # dies after writing half an engine
    workdir = tmp_path / "work"
    workdir.mkdir()
    backend = TrtexecBackend(str(workdir), trtexec=str(exe))
    with pytest.raises(TrtexecCrashed, match="killed by signal 11") as info:
        backend.measure(str(tmp_path / "m.onnx"), Protocol(min_runs=5, max_time_s=1), "fp32", 1, model_hash="abc")
    assert info.value.status == 503
    assert list(workdir.iterdir()) == []  # no partial engine to be loaded next time
    assert len(log.read_text().splitlines()) == 1


def test_cached_engine_that_fails_to_load_is_rebuilt_once(tmp_path, trtexec_fixtures):
    exe, log = fake_trtexec(tmp_path, trtexec_fixtures, "ok")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "abc-fp16.engine").write_bytes(b"eng")  # left half-written by an older agent
    backend = TrtexecBackend(str(workdir), trtexec=str(exe))
    stats = backend.measure(str(tmp_path / "m.onnx"), Protocol(min_runs=30, max_time_s=1, rel_ci=0.05), "fp16", 1,
                            model_hash="abc")
    calls = log.read_text().splitlines()
    assert "--loadEngine=" in calls[0]  # tried the cache, it failed ...
    assert "--onnx=" in calls[1] and "--fp16" in calls[1]  # ... so rebuilt
    assert stats["engine_rebuilt"] and stats["stable"] and stats["median_ms"] == pytest.approx(1.001)
    assert (workdir / "abc-fp16.engine").read_bytes() == b"engine"
    assert sorted(p.name for p in workdir.iterdir()) == ["abc-fp16.engine", "times.json"]


def test_engine_that_never_loads_fails_after_one_rebuild(tmp_path, trtexec_fixtures):
    from hybridprune.evaluators.agent import BadRequest

    exe = tmp_path / "trtexec"
    log = tmp_path / "calls.log"
    exe.write_text(f"#!{sys.executable}\nimport json, random, sys\n"
                   f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                   "args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)\n"
                   "if 'loadEngine' in args:\n"
                   "    print('[E] engine deserialization failed'); sys.exit(1)\n"
                   "open(args['saveEngine'], 'wb').write(b'engine')\n"
                   "times = [{'latencyMs': random.uniform(1, 100)} for _ in range(5)]\n"
                   "json.dump(times, open(args['exportTimes'], 'w'))\n"
                   f"sys.stdout.write(open({str(trtexec_fixtures / 'trt8201_jetson_best.txt')!r}).read())\n")
    exe.chmod(0o755)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "abc-fp32.engine").write_bytes(b"bad")
    backend = TrtexecBackend(str(workdir), trtexec=str(exe))
    with pytest.raises(BadRequest, match="deserialization failed"):  # never stable: loads again, fails again
        backend.measure(str(tmp_path / "m.onnx"), Protocol(min_runs=5, max_time_s=60, rel_ci=1e-6), "fp32", 1,
                        model_hash="abc")
    calls = log.read_text().splitlines()
    assert ["loadEngine" in c for c in calls] == [True, False, True]  # one rebuild, not a loop
