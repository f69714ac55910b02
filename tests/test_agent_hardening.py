"""Device agent under bad input and faults (issue 10): real agent processes on loopback.

trtexec needs an NVIDIA GPU, so a stand-in script takes its place: it checks the flags the agent
passes, logs each call, and can print a genuine TensorRT summary, crash, or produce noisy times.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from hybridprune.errors import LatencyError
from hybridprune.evaluators import agent as agent_mod
from hybridprune.evaluators import get_latency_backend
from hybridprune.evaluators.timing import Protocol

from helpers import AGENT, TOKEN, fake_trtexec, raw, small_model_bytes

FAST = {"warmup_runs": 1, "min_runs": 5, "max_time_s": 0.3, "rel_ci": 0.05}
HANG_GUARD_S = 60  # only guards against a hang; no test depends on how long anything takes

def launch(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``agent.py`` on a free loopback port; return (process, URL)."""
    proc = subprocess.Popen([sys.executable, str(AGENT), "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"agent did not start: {line!r} {proc.stderr.read()}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str]:
    """Signal the agent and return (exit code, stderr)."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=HANG_GUARD_S)
    return proc.returncode, err


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def send_raw(url: str, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=HANG_GUARD_S)
    sock.sendall(data)
    return sock


def read_reply(sock: socket.socket) -> tuple[int, dict]:
    """Read one HTTP reply from a raw socket (the agent closes after errors)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body.decode())


@pytest.fixture(scope="module")
def agent():
    proc, url = launch("--backend", "onnxruntime", "--token", TOKEN, "--max-bytes", "1000")
    yield url
    proc.terminate()
    proc.wait(timeout=HANG_GUARD_S)


@pytest.mark.parametrize("length", ["-1", "-50000000", "abc", "1_0", "+5", "0x10", "1e3", ""])
def test_bad_content_length_is_refused_at_once(agent, length):
    # The connection stays open: an agent that tried to read to EOF would never answer.
    sock = send_raw(agent, (f"POST /measure HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                            f"Content-Length: {length}\r\n\r\n").encode() + b"\x08" * 10)
    with sock:
        status, reply = read_reply(sock)
    assert status == 400 and "Content-Length must be a non-negative integer" in reply["error"]


@pytest.mark.parametrize("query, message", [
    ("min_runs=100000", "min_runs must be in [1, 1000], got 100000"),
    ("warmup_runs=5000", "warmup_runs must be in [0, 1000]"),
    ("max_runs=10000000", "max_runs must be in [1, 1000000]"),
    ("max_time_s=86400", "max_time_s must be in [0.001, 600.0]"),
    ("max_time_s=inf", "max_time_s must be in"),
    ("max_time_s=nan", "max_time_s must be in"),
    ("rel_ci=0", "rel_ci must be in"),
    ("confidence=0.99999", "confidence must be in [0.5, 0.999]"),
    ("batch=100000", "batch must be in [1, 4096]"),
])
def test_protocol_values_are_bounded(agent, query, message):
    status, reply = raw(agent, "POST", f"/measure?{query}", b"\x08\x07\x3a\x04\x0a\x02\x08\x01")
    assert status == 400 and message in reply["error"], reply


def test_protocol_limits_are_published(agent):
    limits = raw(agent, "GET", "/info")[1]["limits"]
    assert limits["min_runs"] == [1, 1000] and limits["batch"] == [1, 4096]
    assert {k: tuple(v) for k, v in limits.items() if k != "batch"} == Protocol.LIMITS


def test_errors_do_not_leak_private_paths(tmp_path):
    tmp = tmp_path / "agent-tmp"
    tmp.mkdir()
    proc, url = launch("--backend", "onnxruntime", env={"TMPDIR": str(tmp)})
    try:
        status, reply = raw(url, "POST", "/measure", b"\x08\x07\x3a\x04\x0a\x02\x08\x01", token=None)
    finally:
        stop(proc)
    assert status == 400 and "onnxruntime cannot load" in reply["error"]
    assert ".onnx" in reply["error"]  # onnxruntime names the file ...
    assert str(tmp) not in reply["error"] and "hybridprune-agent-" not in reply["error"]  # ... not where


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_uploaded_models(tmp_path, sig):
    tmp = tmp_path / "agent-tmp"
    tmp.mkdir()
    proc, url = launch("--backend", "onnxruntime", env={"TMPDIR": str(tmp)})
    status, _ = raw(url, "POST", "/measure?" + "&".join(f"{k}={v}" for k, v in FAST.items()),
                    small_model_bytes(), token=None)
    assert status == 200
    assert list(tmp.glob("hybridprune-agent-*/*.onnx"))  # the upload is there while serving
    code, err = stop(proc, sig)
    assert code == 0 and "Traceback" not in err
    assert not list(tmp.glob("hybridprune-agent-*"))


def test_tokenless_agent_checks_host_header():
    proc, url = launch("--backend", "onnxruntime")
    port = port_of(url)
    try:
        for host, want in [("evil.example", 403), (f"evil.example:{port}", 403), (f"127.0.0.1.nip.io:{port}", 403),
                           (f"localhost:{port}", 200), (f"127.0.0.1:{port}", 200), (f"[::1]:{port}", 200),
                           ("LOCALHOST.", 200), (f"192.0.2.7:{port}", 200)]:
            status, reply = raw(url, "GET", "/info", token=None, headers={"Host": host})
            assert status == want, (host, reply)
            if want == 403:
                assert "DNS rebinding" in reply["error"] and host in reply["error"]
        with send_raw(url, b"GET /info HTTP/1.0\r\n\r\n") as sock:  # no Host header at all
            assert read_reply(sock)[0] == 403
    finally:
        stop(proc)


def test_host_check_does_not_apply_with_a_token(agent):
    assert raw(agent, "GET", "/info", headers={"Host": "evil.example"})[0] == 200
    assert raw(agent, "GET", "/info", token=None, headers={"Host": "localhost"})[0] == 401


def test_warns_when_exposed_without_token():
    assert agent_mod.exposure_warning("0.0.0.0", None).startswith("warning: the agent listens on 0.0.0.0")
    assert "--token" in agent_mod.exposure_warning("192.0.2.7", "")
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert agent_mod.exposure_warning(host, None) is None
    assert agent_mod.exposure_warning("0.0.0.0", "tok") is None


def test_client_gone_detects_only_a_closed_peer():
    left, right = socket.socketpair()
    with left, right:
        assert not agent_mod.client_gone(left)  # connected and quiet
        right.sendall(b"GET /next HTTP/1.1\r\n")  # pipelined bytes are not a goodbye ...
        assert not agent_mod.client_gone(left)
        assert left.recv(100).startswith(b"GET")  # ... and were only peeked at
        right.close()
        assert agent_mod.client_gone(left)


def test_client_disconnects_are_logged_in_one_line():
    proc, url = launch("--backend", "onnxruntime")
    with send_raw(url, b"POST /measure HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\nabc"):
        pass  # gone with the body unsent
    sock = send_raw(url, b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
    sock.close()
    assert raw(url, "GET", "/info", token=None)[0] == 200  # still serving
    _, err = stop(proc)
    assert "Traceback" not in err
    assert all(line.startswith("hybridprune agent: ") for line in err.splitlines()), err


# --- trtexec faults ----------------------------------------------------------------------------


def trtexec_agent(tmp_path, fixtures, mode, *extra):
    exe, log = fake_trtexec(tmp_path, fixtures, mode)
    proc, url = launch("--backend", "trtexec", "--trtexec", str(exe), *extra, env={"TMPDIR": str(tmp_path)})
    return proc, url, log


def test_crash_is_5xx_and_retried_but_model_errors_are_not(tmp_path, trtexec_fixtures):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(small_model_bytes())
    cases = [("crash", 2, r"failed after 2 attempt\(s\): HTTP 503: trtexec was killed by signal 11"),
             ("oom", 2, r"failed after 2 attempt\(s\): HTTP 503: .*out of memory"),
             ("fail", 1, r"refused POST /measure\?.*\(400\): trtexec failed \(exit 1\): "
                         r".*unsupported operator [0-9a-f]+\.onnx")]
    for mode, attempts, pattern in cases:
        proc, url, log = trtexec_agent(tmp_path, trtexec_fixtures, mode)
        try:
            backend = get_latency_backend("remote", url=url, retries=1, backoff=0.01, **FAST)
            with pytest.raises(LatencyError, match=pattern) as info:
                backend.measure(onnx)
        finally:
            _, err = stop(proc)
        assert len(log.read_text().splitlines()) == attempts, mode
        assert str(tmp_path) not in str(info.value)
        assert "Traceback" not in err
    assert not list(tmp_path.glob("hybridprune-agent-*"))  # nothing left behind, no partial engine


def test_measurement_stops_when_the_client_goes_away(tmp_path, trtexec_fixtures):
    proc, url, log = trtexec_agent(tmp_path, trtexec_fixtures, "noisy")
    body = small_model_bytes()
    try:
        # never stable, 10-minute cap: only the client leaving can end this measurement early
        query = "precision=fp16&min_runs=5&max_time_s=600&rel_ci=0.000001"
        sock = send_raw(url, (f"POST /measure?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        deadline = time.monotonic() + HANG_GUARD_S
        while len(log.read_text().splitlines()) < 2:  # building done, timing in chunks
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        sock.close()
        # the device is free again: a second measurement runs (it would queue for 10 minutes)
        conn = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=HANG_GUARD_S)
        conn.request("POST", "/measure?precision=fp32&min_runs=5&max_time_s=1", body=body)
        reply = conn.getresponse()
        assert reply.status == 200, reply.read()
        conn.close()
    finally:
        _, err = stop(proc)
    calls = log.read_text().splitlines()
    fp16 = [c for c in calls if "fp16" in c]
    assert 2 <= len(fp16) < 20 and any("fp32" in c for c in calls)
    assert "measurement stopped: the client went away" in err and "Traceback" not in err


@pytest.mark.parametrize("token", ["ümlaut-秘密", "with space;and\"quote"])
def test_tokens_beyond_ascii_work_end_to_end(token):
    proc, url = launch("--backend", "onnxruntime", "--token", token)
    try:
        assert get_latency_backend("remote", url=url, token=token).info()["backend"] == "onnxruntime"
        with pytest.raises(LatencyError, match="401"):
            get_latency_backend("remote", url=url, token=token + "x").info()
        assert raw(url, "GET", "/info", token=None)[0] == 401
    finally:
        stop(proc)
