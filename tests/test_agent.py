"""The stdlib-only device agent: started as a subprocess on loopback, driven over real HTTP."""

from __future__ import annotations

import ast
import concurrent.futures
import math
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridprune.errors import ConfigError, LatencyError
from hybridprune.evaluators import get_latency_backend
from hybridprune.evaluators.export import export_onnx
from hybridprune.models import create_model

from helpers import AGENT, TOKEN, fake_trtexec, pruned_resnet56, raw, small_model_bytes, start_agent

FAST = {"warmup_runs": 2, "min_runs": 5, "max_time_s": 0.3, "rel_ci": 0.05}


@pytest.fixture(scope="module")
def agent_url():
    proc, url = start_agent("--token", TOKEN, "--max-bytes", "2000000")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    return export_onnx(create_model("resnet20", width=4), tmp_path_factory.mktemp("m") / "r20.onnx")


def check_consistent(result, min_runs: int) -> None:
    values = [result.median_ms, result.mean_ms, result.p90_ms, result.p99_ms, result.std_ms, result.min_ms]
    assert all(math.isfinite(v) for v in values)
    assert result.runs >= min_runs
    assert result.max_ms >= result.p99_ms >= result.p90_ms >= result.median_ms >= result.min_ms > 0
    assert result.ci_low_ms <= result.median_ms <= result.ci_high_ms


def test_remote_measures_pruned_resnet56_end_to_end(agent_url):
    backend = get_latency_backend("remote", url=agent_url, token=TOKEN, **FAST)
    result = backend.measure(pruned_resnet56(), batch_size=2)
    check_consistent(result, FAST["min_runs"])
    assert result.backend == "remote:onnxruntime"
    assert result.batch_size == 2 and result.precision == "fp32"
    assert result.versions["onnxruntime"]
    assert result.extra["input_shapes"] == {"input": [2, 3, 32, 32]}
    assert result.extra["onnx"]["opsets"]["ai.onnx"] == 13
    info = backend.info()
    assert info["backend"] == "onnxruntime" and info["device"] and "l4t_release" in info


def test_agent_requires_token(agent_url, small_onnx):
    assert raw(agent_url, "GET", "/info", token=None)[0] == 401
    assert raw(agent_url, "GET", "/info", token="wrong")[0] == 401
    status, reply = raw(agent_url, "POST", "/measure", small_onnx.read_bytes(), token=None)
    assert status == 401 and "token" in reply["error"]
    with pytest.raises(LatencyError, match="401"):
        get_latency_backend("remote", url=agent_url, token="wrong", **FAST).measure(small_onnx)


def test_agent_rejects_oversized_upload(agent_url):
    status, reply = raw(agent_url, "POST", "/measure", b"\x08\x07" + b"\x00" * 2_000_100)
    assert status == 413 and "limit is 2000000" in reply["error"]


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"", "empty body"),
        (b"GIF89a not a model at all", "not an ONNX model"),
        (b'{"json": true}', "not an ONNX model"),
        (b"\x08\x07\x12\x05torch", "graph is missing"),  # ir_version + producer, no graph
        (b"\x08\x07\x3a\x04\x0a\x02\x08\x01", "onnxruntime cannot load"),  # well-formed but nonsense graph
    ],
)
def test_agent_rejects_invalid_models_with_reason(agent_url, body, reason):
    status, reply = raw(agent_url, "POST", "/measure", body)
    assert status == 400
    assert reason in reply["error"]


def test_agent_rejects_bad_options(agent_url, small_onnx):
    data = small_onnx.read_bytes()
    for query, reason in [("precision=fp64", "precision"), ("batch=0", "batch"), ("min_runs=x", "min_runs"),
                          ("rel_ci=-1", "rel_ci")]:
        status, reply = raw(agent_url, "POST", f"/measure?{query}", data)
        assert status == 400 and reason in reply["error"], (query, reply)
    assert raw(agent_url, "GET", "/nope")[0] == 404


def test_agent_measures_one_at_a_time(agent_url, small_onnx):
    backend = get_latency_backend("remote", url=agent_url, token=TOKEN, **FAST)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: backend.measure(small_onnx), range(3)))
    intervals = sorted(r.extra["agent_interval"] for r in results)
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert end <= start  # queued, never overlapping
    for r in results:
        check_consistent(r, FAST["min_runs"])


def test_unreachable_agent_fails_fast_with_bounded_retries(small_onnx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    backend = get_latency_backend("remote", url=f"http://127.0.0.1:{port}", retries=2, backoff=0.01, **FAST)
    start = time.monotonic()
    with pytest.raises(LatencyError, match="failed after 3 attempt"):
        backend.measure(small_onnx)
    assert time.monotonic() - start < 20  # generous: a hang would be minutes


def test_stalled_agent_times_out(small_onnx):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        backend = get_latency_backend("remote", url=url, timeout=0.3, retries=1, backoff=0.01, **FAST)
        with pytest.raises(LatencyError, match="2 attempt"):
            backend.measure(small_onnx)


def test_remote_options_are_validated():
    with pytest.raises(ConfigError, match="http://HOST:PORT"):
        get_latency_backend("remote", url="tx2:8470")
    with pytest.raises(ConfigError, match="retries"):
        get_latency_backend("remote", retries=-1)


def test_agent_cli_rejects_unavailable_backend():
    proc = subprocess.run([sys.executable, str(AGENT), "--port", "0", "--backend", "trtexec",
                           "--trtexec", "/nonexistent/trtexec"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not available" in proc.stderr


# --- the agent must run on a Jetson TX2: Python 3.6, standard library only -------------------

AGENT_FILES = [AGENT, AGENT.with_name("timing.py"), AGENT.with_name("trtexec.py")]  # what `agent bundle` packs


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: p.name)
def test_agent_is_python36_syntax(path):
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 6))  # rejects walrus, f"{x=}", positional-only, ...
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module != "__future__", "from __future__ imports are not allowed"
    assert "dataclass" not in source
    with pytest.raises(SyntaxError):  # the check has teeth
        ast.parse('x = 1\nprint(f"{x=}")', feature_version=(3, 6))


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: p.name)
def test_agent_imports_only_stdlib(path):
    tree = ast.parse(path.read_text())
    modules = set()
    own = {p.stem for p in AGENT_FILES}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: only the other agent files
                names = [a.name for a in node.names]
                assert set(names) <= own - {path.stem} and node.module is None, ast.dump(node)
            else:
                modules.add(node.module.split(".")[0])
    assert modules and modules <= set(sys.stdlib_module_names) | own, modules - set(sys.stdlib_module_names)
    # stdlib modules or functions added after 3.6 that are easy to reach for
    source = path.read_text()
    for newer in ("ThreadingHTTPServer", "capture_output", "text=True", "statistics.quantiles",
                  "math.comb", "math.prod", "NormalDist", "removeprefix", "importlib.metadata",
                  "asyncio.run", "contextlib.nullcontext", "time.monotonic_ns", "dict[", "list["):
        assert newer not in source, newer


def test_agent_starts_without_site_packages():
    proc = subprocess.run([sys.executable, "-I", "-S", str(AGENT), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--token" in proc.stdout


def test_bundled_agent_runs_alone_and_serves(tmp_path):
    from hybridprune.cli import main

    pyz = tmp_path / "deploy" / "agent.pyz"
    assert main(["agent", "bundle", "-o", str(pyz)]) == 0
    import zipfile

    with zipfile.ZipFile(pyz) as archive:
        assert sorted(archive.namelist()) == ["__main__.py", "agent.py", "timing.py", "trtexec.py"]
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    alone = tmp_path / "elsewhere"  # nothing of hybridprune reachable: isolated, no site, other cwd
    alone.mkdir()
    proc = subprocess.run([sys.executable, "-I", "-S", str(pyz), "--help"], capture_output=True, text=True,
                          timeout=60, cwd=alone)
    assert proc.returncode == 0 and "--token" in proc.stdout and "agent.pyz" in proc.stdout
    trtexec = tmp_path / "trtexec"  # /info never runs it; without site-packages only trtexec can serve
    trtexec.write_text("#!/bin/sh\nexit 1\n")
    trtexec.chmod(0o755)
    server = subprocess.Popen([sys.executable, "-I", "-S", str(pyz), "--port", "0", "--backend", "trtexec",
                               "--trtexec", str(trtexec), "--token", TOKEN], cwd=alone, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert "listening on" in line, server.stderr.read()
        status, info = raw(line.strip().rsplit(" ", 1)[-1], "GET", "/info")
        assert status == 200 and info["backend"] == "trtexec" and info["limits"]["min_runs"] == [1, 1000]
        assert info["device"] and info["python"] == platform.python_version()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bundled_agent_measures_under_python36(tmp_path, trtexec_fixtures):
    """The Jetson's interpreter: skipped where no python3.6 is on PATH."""
    import shutil

    from hybridprune.evaluators.bundle import build_agent_bundle
    python36 = shutil.which("python3.6")
    if python36 is None:
        pytest.skip("no python3.6 on PATH")
    version = subprocess.run([python36, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=60)
    if version.stdout.strip() != "(3, 6)":
        pytest.skip("python3.6 on PATH does not run (" + (version.stderr.strip().splitlines() or ["?"])[0][:100] + ")")
    pyz = build_agent_bundle(tmp_path / "agent.pyz")
    exe, log = fake_trtexec(tmp_path, trtexec_fixtures, "ok")
    server = subprocess.Popen([python36, "-I", "-S", str(pyz), "--port", "0", "--trtexec", str(exe)],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert "backend trtexec" in line, server.stderr.read()
        url = line.strip().rsplit(" ", 1)[-1]
        status, stats = raw(url, "POST", "/measure?precision=fp16&min_runs=30&max_time_s=1&rel_ci=0.05",
                            small_model_bytes(), token=None)
        assert status == 200, stats
        assert stats["versions"]["python"].startswith("3.6.") and stats["versions"]["tensorrt"] == "8.2.1"
        assert stats["runs"] >= 30 and stats["median_ms"] == pytest.approx(1.001) and stats["stable"]
        assert raw(url, "POST", "/measure?min_runs=5000", small_model_bytes(), token=None)[0] == 400
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "--fp16" in log.read_text()


def test_bundle_refuses_a_folder(tmp_path, capsys):
    from hybridprune.cli import main

    assert main(["agent", "bundle", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_remote_client_reports_oversized_model(agent_url):
    backend = get_latency_backend("remote", url=agent_url, token=TOKEN, **FAST)
    with pytest.raises(LatencyError, match="413.*limit is 2000000"):
        backend.measure(create_model("resnet56"))  # ~3.4 MB of ONNX
