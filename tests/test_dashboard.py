"""``hybridprune dashboard`` serves optuna-dashboard on loopback for the study, with artifacts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import REPO, load

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _dashboard(study_file, env=None):
    """``hybridprune dashboard`` in a subprocess on a free loopback port; yields (process, base URL)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridprune.cli", "dashboard", str(study_file), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _first_answer(proc, ask):
    """``ask()``'s result once the server answers (the deadline guards against a hang only)."""
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            return ask()
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "dashboard did not answer"
            time.sleep(0.3)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def test_dashboard_lists_trials_with_our_attributes(tiny_study):
    cfg, study = load(tiny_study)
    with _dashboard(tiny_study) as (proc, base):
        studies = _first_answer(proc, lambda: json.loads(_get(f"{base}/api/studies"))["study_summaries"])
        (entry,) = [s for s in studies if s["study_name"] == cfg.name]
        detail = json.loads(_get(f"{base}/api/studies/{entry['study_id']}"))
        assert len(detail["trials"]) == len(study.trials)
        assert detail["objective_names"] == ["accuracy", "latency_ms"]
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(complete) == 3
        for t in complete:
            attrs = {a["key"] for a in t["user_attrs"]}
            assert {"latency_ms", "finetune_steps", "params", "macs", "record", "time_s"} <= attrs
            names = {a["filename"] for a in t["artifacts"]}
            assert names == {"model.pt", "model.onnx"}
        t = complete[0]
        onnx = next(a for a in t["artifacts"] if a["filename"] == "model.onnx")
        blob = _get(f"{base}/artifacts/{entry['study_id']}/{t['trial_id']}/{onnx['artifact_id']}")
        assert blob == (cfg.artifact_dir / onnx["artifact_id"]).read_bytes()


def test_dashboard_token(tiny_study):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)

    env = {**os.environ, "HYBRIDPRUNE_DASHBOARD_TOKEN": "s3cret"}
    with _dashboard(tiny_study, env) as (proc, base):

        def status(path, headers=None):
            try:
                with opener.open(urllib.request.Request(base + path, headers=headers or {}), timeout=30) as r:
                    return r.status, dict(r.headers)
            except urllib.error.HTTPError as exc:
                return exc.code, dict(exc.headers)

        code, _ = _first_answer(proc, lambda: status("/api/studies"))
        assert code == 401
        assert status("/api/studies", {"Authorization": "Bearer wrong"})[0] == 401
        assert status("/api/studies", {"Authorization": "Bearer s3cret"})[0] == 200
        code, headers = status("/dashboard?token=s3cret")
        assert code == 303 and headers["Location"] == "/dashboard"
        cookie = headers["Set-Cookie"].split(";")[0]
        assert status("/api/studies", {"Cookie": cookie})[0] == 200


def test_dashboard_rejects_a_bad_port(tiny_study, capsys):
    from hybridprune.cli import main

    assert main(["dashboard", str(tiny_study), "--port", "70000"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err


def _chromium() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_dashboard_in_a_real_browser_shows_the_study_note(tiny_study, tmp_path):
    """Headless Chromium renders the study page; the notes a user reads come through the dashboard's API.

    ``HYBRIDPRUNE_SCREENSHOT_DIR`` keeps the screenshots (to look at them); Debian's ``chromium``
    package provides the browser, and the test skips without one.
    """
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    cfg, study = load(tiny_study)
    keep = os.environ.get("HYBRIDPRUNE_SCREENSHOT_DIR")
    out = (Path(keep) if keep else tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    with _dashboard(tiny_study) as (proc, base):
        studies = _first_answer(proc, lambda: json.loads(_get(f"{base}/api/studies"))["study_summaries"])
        (entry,) = [s for s in studies if s["study_name"] == cfg.name]
        detail = json.loads(_get(f"{base}/api/studies/{entry['study_id']}"))
        assert "## About" in detail["note"]["body"] and "**Constraints**" in detail["note"]["body"]
        baseline = next(t for t in detail["trials"]
                        if any(a["key"] == "reference" and a["value"] == "baseline" for a in t["user_attrs"]))
        assert "Reference point: baseline" in baseline["note"]["body"]
        for page, url in (("study", f"{base}/dashboard/studies/{entry['study_id']}"),
                          ("trials", f"{base}/dashboard/studies/{entry['study_id']}/trials")):
            png = out / f"dashboard-{page}.png"
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1400,1000", "--virtual-time-budget=8000", f"--screenshot={png}", url],
                           check=True, capture_output=True, timeout=120)
            data = png.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one
