#!/usr/bin/env python3
"""trtexec on the device: its output parser and the backend that builds, caches and times engines.

Part of the device agent: Python 3.6 and the standard library only, imported by ``agent.py`` and
packed beside it by ``hybridprune agent bundle``. :func:`parse_trtexec_output` reads the
"Performance summary" of TensorRT 8.2 to 10.x; :class:`TrtexecBackend` builds an engine per model
and precision (cached by model hash) and times it in chunks with the protocol of ``timing.py``.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import time

if __package__:  # imported as hybridprune.evaluators.trtexec
    from . import timing
else:  # imported by agent.py run as a script or from agent.pyz: timing.py lies beside this file
    import timing


class TrtexecCrashed(timing.AgentError):
    """trtexec died from a signal or a device fault: HTTP 503, a retry may succeed."""

    status = 503


class TrtexecParseError(timing.AgentError, ValueError):
    """trtexec printed text without a recognisable performance summary."""


# ----------------------------------------------------------------------------------------------
# trtexec output parsing
# ----------------------------------------------------------------------------------------------

_STAT_KEYS = {"min": "min_ms", "max": "max_ms", "mean": "mean_ms", "median": "median_ms"}
_SUMMARY_LINES = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
_LINE_RE = re.compile(r"\]\s*(?:\[[A-Z]\]\s*)?([A-Za-z0-9 \-]+?):\s*(.*)$")
_ITEM_RE = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*"
                      r"([-+0-9.eE]+)\s*ms")
_VERSION_RE = re.compile(r"\[TensorRT v(\d+)\]")


def trt_version_string(code):
    """``"8201"`` -> ``"8.2.1"``, ``"100300"`` -> ``"10.3.0"`` (TensorRT's version integer)."""
    value = int(code)
    if value >= 100000:  # TensorRT 10+: MMmmpp
        major, minor, patch = value // 10000, (value // 100) % 100, value % 100
    else:  # TensorRT 8.x: Mmpp
        major, minor, patch = value // 1000, (value // 100) % 10, value % 100
    return "%d.%d.%d" % (major, minor, patch)


def parse_trtexec_output(text):
    """Parse trtexec's "Performance summary" (TensorRT 8.2 to 10.x).

    Returns:
        dict with ``throughput_qps``, one sub-dict per summary line (``latency``, ``gpu_compute``,
        ``enqueue``, ``h2d``, ``d2h`` and ``end_to_end`` where printed) holding min_ms, max_ms,
        mean_ms, median_ms and p<N>_ms per printed percentile, ``total_host_walltime_s``,
        ``total_gpu_compute_s`` and ``tensorrt_version`` where printed.

    Raises:
        TrtexecParseError: if there is no performance summary with a Latency line.
    """
    result = {}
    in_summary = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if "=== Performance summary ===" in line:
            in_summary = True
            continue
        version = _VERSION_RE.search(line)
        if version:
            result["tensorrt_version"] = trt_version_string(version.group(1))
        if not in_summary:
            continue
        match = _LINE_RE.search(line)
        if not match:
            continue
        label, rest = match.group(1).strip(), match.group(2)
        if label == "Throughput":
            number = re.match(r"([-+0-9.eE]+)\s*qps", rest)
            if number:
                result["throughput_qps"] = float(number.group(1))
        elif label in ("Total Host Walltime", "Total GPU Compute Time"):
            number = re.match(r"([-+0-9.eE]+)\s*s\b", rest)
            if number:
                key = "total_host_walltime_s" if label.startswith("Total Host") else "total_gpu_compute_s"
                result[key] = float(number.group(1))
        elif label in _SUMMARY_LINES:
            stats = {}
            for item in _ITEM_RE.finditer(rest):
                if item.group(2) is not None:
                    pct = item.group(2)
                    pct = pct[:-2] if pct.endswith(".0") else pct
                    stats["p%s_ms" % pct.replace(".", "_")] = float(item.group(3))
                else:
                    stats[_STAT_KEYS[item.group(1)]] = float(item.group(3))
            if stats:
                result[_SUMMARY_LINES[label]] = stats
    if "latency" not in result or "median_ms" not in result["latency"]:
        first = text.strip().splitlines()[0][:80] if text.strip() else "<empty>"
        raise TrtexecParseError("no trtexec performance summary with a Latency line found "
                                "(expected TensorRT 8.2+ output; text starts with %r)" % first)
    return result


# ----------------------------------------------------------------------------------------------
# trtexec backend
# ----------------------------------------------------------------------------------------------


class TrtexecBackend(object):
    """NVIDIA trtexec: builds the engine on this device (cached by model hash) and times it.

    An engine is built under a temporary name and renamed into the cache only after trtexec
    succeeded, so a crash never leaves a partial engine behind; a cached engine that fails to
    load is deleted and rebuilt once.
    """

    name = "trtexec"
    CANDIDATES = ("/usr/src/tensorrt/bin/trtexec",)
    FLAGS = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8"], "best": ["--best"]}
    # trtexec output that means the device, not the model, failed: worth a retry (HTTP 503)
    TRANSIENT = ("out of memory", "cuda failure", "cuda error", "cudaerrormemoryallocation")

    def __init__(self, workdir, trtexec=None):
        self.workdir = workdir
        self.trtexec = trtexec or self.find()
        self.tensorrt_version = None
        self.proc = None  # the running trtexec, killed on shutdown

    @classmethod
    def find(cls):
        """trtexec's path (JetPack's location first, then PATH), or None."""
        for path in cls.CANDIDATES:
            if os.access(path, os.X_OK):
                return path
        return shutil.which("trtexec")

    def available(self):
        """Whether the trtexec executable exists."""
        return bool(self.trtexec) and os.access(self.trtexec, os.X_OK)

    def versions(self):
        """TensorRT and Python versions."""
        return {"tensorrt": self.tensorrt_version or timing.tensorrt_version(), "python": platform.python_version()}

    def kill(self):
        """Kill a running trtexec (on shutdown)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _run(self, args, timeout):
        proc = subprocess.Popen([self.trtexec] + args, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True)
        self.proc = proc
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise TrtexecCrashed("trtexec did not finish within %d s" % timeout)
        finally:
            self.proc = None
        version = _VERSION_RE.search(out)
        if version:
            self.tensorrt_version = trt_version_string(version.group(1))
        tail = " | ".join(line.strip() for line in out.strip().splitlines()[-3:])
        if proc.returncode < 0:
            raise TrtexecCrashed("trtexec was killed by signal %d: %s" % (-proc.returncode, tail))
        if proc.returncode != 0:
            lowered = out.lower()
            error = TrtexecCrashed if any(m in lowered for m in self.TRANSIENT) else timing.BadRequest
            raise error("trtexec failed (exit %d): %s" % (proc.returncode, tail))
        return out

    def measure(self, model_path, protocol, precision="fp32", batch=1, model_hash="", cancelled=None):
        """Build (or load the cached) engine and time it in chunks until stable or the cap.

        ``cancelled`` is polled between chunks; see :func:`run_protocol`.
        """
        if precision not in self.FLAGS:
            raise timing.BadRequest("precision must be one of %s, got %r"
                                    % (", ".join(timing.PRECISIONS), precision))
        if not self.available():
            raise timing.BackendUnavailable("trtexec not found (looked in %s and PATH)" % self.CANDIDATES[0])
        engine = os.path.join(self.workdir, "%s-%s.engine" % (model_hash or "model", precision))
        times_path = os.path.join(self.workdir, "times.json")
        deadline = time.monotonic() + protocol.max_time_s
        chunk_s = max(1, int(round(protocol.max_time_s / 3.0)))
        times, summary, stable, first, rebuilt = [], None, False, True, False
        while True:
            loading = os.path.exists(engine)
            partial = engine + ".partial"
            if loading:
                source = ["--loadEngine=%s" % engine]
            else:
                source = ["--onnx=%s" % model_path, "--saveEngine=%s" % partial] + self.FLAGS[precision]
            warm_ms = 200 if first else 50
            if first and protocol.warmup_runs == 0:
                warm_ms = 0
            args = source + ["--warmUp=%d" % warm_ms, "--duration=%d" % chunk_s,
                             "--iterations=%d" % protocol.min_runs, "--avgRuns=1",
                             "--exportTimes=%s" % times_path]
            if os.path.exists(times_path):
                os.remove(times_path)
            try:
                out = self._run(args, timeout=3600 if not loading else 600)
                summary = parse_trtexec_output(out)
            except timing.AgentError:
                _remove(partial)
                if not loading or rebuilt:
                    raise
                _remove(engine)  # a cached engine that does not load: rebuild it once
                rebuilt = True
                continue
            if not loading:
                if not os.path.exists(partial):
                    raise TrtexecCrashed("trtexec exited without writing the engine")
                os.rename(partial, engine)
            first = False
            chunk = _exported_latencies(times_path)
            if chunk is None:  # no per-query file: fall back to the printed summary
                break
            times.extend(chunk)
            if protocol.is_stable(times):
                stable = True
                break
            if time.monotonic() >= deadline or len(times) >= protocol.max_runs:
                break
            if cancelled is not None and cancelled():
                raise timing.Cancelled("measurement stopped: the client went away")
        if times:
            stats = timing.summarize(times, protocol.confidence)
        else:
            lat = summary["latency"]
            runs = int(round(summary.get("throughput_qps", 0) * summary.get("total_host_walltime_s", 0)))
            stats = {"median_ms": lat["median_ms"], "mean_ms": lat["mean_ms"],
                     "p90_ms": lat.get("p90_ms", lat.get("p99_ms")), "p99_ms": lat.get("p99_ms"),
                     "std_ms": float("nan"), "min_ms": lat["min_ms"], "max_ms": lat["max_ms"],
                     "runs": max(runs, 1), "ci_low_ms": float("nan"), "ci_high_ms": float("nan"),
                     "rel_ci": float("nan"), "confidence": protocol.confidence}
        stats["stable"] = stable
        stats["protocol"] = protocol.to_dict()
        stats["trtexec_summary"] = summary
        stats["engine_rebuilt"] = rebuilt
        return stats


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _exported_latencies(path):
    """Per-query ``latencyMs`` values from ``trtexec --exportTimes`` JSON, or None."""
    try:
        with open(path) as handle:
            records = json.load(handle)
    except (OSError, IOError, ValueError):
        return None
    values = [float(r["latencyMs"]) for r in records if isinstance(r, dict) and "latencyMs" in r]
    return values or None
