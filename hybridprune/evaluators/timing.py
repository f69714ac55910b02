"""The measurement core shared by the host backends and the device agent.

Statistics of per-run latencies, the measurement protocol (warm-up, then timed runs until the
median's distribution-free confidence interval is narrow enough or a time cap is hit), device
information and the onnxruntime timer. Like ``agent.py`` it runs on Python 3.6 with only the
standard library (a Jetson TX2 on JetPack 4.6 has Python 3.6.9); optional runtimes (onnxruntime,
numpy) are loaded with importlib only when the onnxruntime timer is used.
"""

import glob
import importlib
import math
import os
import platform
import re
import shutil
import subprocess
import time

PRECISIONS = ("fp32", "fp16", "int8", "best")


class AgentError(Exception):
    """Base of the agent's errors; ``status`` is the HTTP status the server answers with."""

    status = 500


class BadRequest(AgentError):
    """The request (options or model bytes) is invalid: HTTP 400."""

    status = 400


class BackendUnavailable(AgentError):
    """The chosen backend cannot run on this machine."""

    status = 400


class Cancelled(AgentError):
    """The client went away, so its measurement was stopped (nobody is left to answer)."""

    status = 499


# ----------------------------------------------------------------------------------------------
# Statistics and the measurement protocol (shared with the host side)
# ----------------------------------------------------------------------------------------------


def percentile(sorted_values, q):
    """Linear-interpolation percentile (numpy's default) of an ascending list; ``q`` in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    pos = (len(sorted_values) - 1) * (q / 100.0)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def median_ci_indices(n, confidence=0.95):
    """0-based order-statistic indices (lo, hi) of a distribution-free CI of the median.

    The interval [x_(j), x_(n-j+1)] covers the median with probability 1 - 2 P(B < j), B ~
    Binomial(n, 1/2); ``j`` is the largest with 2 P(B < j) <= 1 - confidence. When even j = 1 is
    too wide a bet (n <= 5 at 95%), the whole range is returned.
    """
    if n < 1:
        raise ValueError("need at least one sample")
    alpha_half = (1.0 - confidence) / 2.0
    log_half_n = -n * math.log(2.0)
    cdf = 0.0
    j = 0  # number of order statistics cut from each tail
    for k in range(0, n // 2 + 1):
        log_pmf = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half_n
        cdf += math.exp(log_pmf)  # P(B <= k)
        if cdf > alpha_half:
            break
        j = k + 1
    j = max(1, j)
    return j - 1, n - j


def summarize(times_ms, confidence=0.95):
    """Statistics of per-run latencies in milliseconds.

    Returns:
        dict with median_ms, mean_ms, p90_ms, p99_ms, std_ms (sample), min_ms, max_ms, runs,
        ci_low_ms, ci_high_ms (distribution-free CI of the median) and rel_ci (its half-width
        relative to the median).
    """
    values = sorted(float(t) for t in times_ms)
    n = len(values)
    if n == 0:
        raise ValueError("no timed runs")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    median = percentile(values, 50)
    lo, hi = median_ci_indices(n, confidence)
    ci_low, ci_high = values[lo], values[hi]
    rel = (ci_high - ci_low) / 2.0 / median if median > 0 else float("inf")
    return {
        "median_ms": median,
        "mean_ms": mean,
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "std_ms": std,
        "min_ms": values[0],
        "max_ms": values[-1],
        "runs": n,
        "ci_low_ms": ci_low,
        "ci_high_ms": ci_high,
        "rel_ci": rel,
        "confidence": confidence,
    }


class Protocol(object):
    """Parameters of the measurement protocol, validated on construction.

    Args:
        warmup_runs: Untimed runs first (engine/JIT/cache warm-up).
        min_runs: Timed runs always made, even past the time cap.
        max_runs: Hard cap on timed runs.
        max_time_s: Stop after this long (once ``min_runs`` are done) even if not stable.
        rel_ci: Stop when the CI half-width of the median, relative to it, is at most this.
        confidence: Confidence level of that interval.
    """

    FIELDS = (("warmup_runs", int), ("min_runs", int), ("max_runs", int),
              ("max_time_s", float), ("rel_ci", float), ("confidence", float))
    # Allowed ranges (inclusive): one request must not be able to hold a device for hours.
    LIMITS = {"warmup_runs": (0, 1000), "min_runs": (1, 1000), "max_runs": (1, 1000000),
              "max_time_s": (0.001, 600.0), "rel_ci": (1e-6, 1.0), "confidence": (0.5, 0.999)}

    def __init__(self, warmup_runs=10, min_runs=20, max_runs=100000, max_time_s=10.0,
                 rel_ci=0.01, confidence=0.95):
        self.warmup_runs = int(warmup_runs)
        self.min_runs = int(min_runs)
        self.max_runs = int(max_runs)
        self.max_time_s = float(max_time_s)
        self.rel_ci = float(rel_ci)
        self.confidence = float(confidence)
        for key, _ in self.FIELDS:
            low, high = self.LIMITS[key]
            value = getattr(self, key)
            if not low <= value <= high:  # also rejects NaN
                raise ValueError("%s must be in [%s, %s], got %r" % (key, low, high, value))
        if self.min_runs > self.max_runs:
            raise ValueError("need min_runs <= max_runs, got min_runs=%d max_runs=%d"
                             % (self.min_runs, self.max_runs))

    @classmethod
    def from_mapping(cls, mapping):
        """Build from a dict of (possibly string) values; unknown keys are ignored."""
        kwargs = {}
        for key, typ in cls.FIELDS:
            if key in mapping and mapping[key] is not None:
                try:
                    kwargs[key] = typ(mapping[key])
                except (TypeError, ValueError):
                    raise ValueError("%s must be a number, got %r" % (key, mapping[key]))
        return cls(**kwargs)

    def to_dict(self):
        """The protocol's fields as a plain dict (what a client sends as query parameters)."""
        return dict((key, getattr(self, key)) for key, _ in self.FIELDS)

    def is_stable(self, times_ms):
        """Whether ``times_ms`` has at least min_runs and a narrow enough CI of the median."""
        if len(times_ms) < self.min_runs:
            return False
        return summarize(times_ms, self.confidence)["rel_ci"] <= self.rel_ci


def run_protocol(run_once, protocol, cancelled=None):
    """Warm up, then time ``run_once`` until the median is stable or the time cap is hit.

    Args:
        run_once: Callable making one inference and returning its latency in milliseconds.
        protocol: A :class:`Protocol`.
        cancelled: Optional callable, polled between runs at most every ``POLL_S`` seconds
            (outside the timed calls); when it returns True the measurement stops.

    Returns:
        :func:`summarize`'s dict plus ``stable`` (bool) and ``protocol``.

    Raises:
        Cancelled: if ``cancelled()`` returned True.
    """
    poll = _Poller(cancelled)
    load_before = _loadavg()
    for _ in range(protocol.warmup_runs):
        run_once()
        poll()
    times = []
    start = time.monotonic()
    next_check = protocol.min_runs
    stable = False
    while True:
        times.append(float(run_once()))
        poll()
        n = len(times)
        if n >= next_check:
            if protocol.is_stable(times):
                stable = True
                break
            next_check = n + max(1, n // 10)
        if n >= protocol.max_runs:
            break
        if n >= protocol.min_runs and time.monotonic() - start >= protocol.max_time_s:
            break
    stats = summarize(times, protocol.confidence)
    stats["stable"] = stable
    stats["protocol"] = protocol.to_dict()
    stats["loadavg"] = list(load_before) + list(_loadavg())  # 1-min load before and after
    return stats


# A pair alternates blocks, not single runs: a model run right after the other one runs with
# cold caches (its weights evicted by the other's), which slowed a 0.9 ms pruned ResNet-56 by
# 20-30% next to the 3.5 ms full one and read its ratio 0.299 for a steady-state 0.268 (AMD EPYC,
# AVX2, onnxruntime 1 thread). After a switch the first runs are dropped; a block then runs for
# at least PAIR_BLOCK_MS of timed runs, short enough that drifting load still hits both sides.
PAIR_BLOCK_MS = 25.0
PAIR_BLOCK_WARMUP = 2
PAIR_BLOCK_MIN_RUNS = 3


def pair_blocks():
    """How :func:`alternate_blocks` forms its pairs (recorded with each pair measurement)."""
    return {"block_ms": PAIR_BLOCK_MS, "block_warmup": PAIR_BLOCK_WARMUP, "block_min_runs": PAIR_BLOCK_MIN_RUNS}


def _block_median(run_once):
    """Median of one block of ``run_once`` (ms): PAIR_BLOCK_WARMUP untimed runs, then timed runs
    until they add up to PAIR_BLOCK_MS and number at least PAIR_BLOCK_MIN_RUNS."""
    for _ in range(PAIR_BLOCK_WARMUP):
        run_once()
    times, total = [], 0.0
    while len(times) < PAIR_BLOCK_MIN_RUNS or total < PAIR_BLOCK_MS:
        times.append(float(run_once()))
        total += times[-1]
    return percentile(sorted(times), 50.0)


def _last_ratios(model_ms, baseline_ms, n):
    """The per-pair ratios model / baseline of the last ``n`` pairs."""
    return [m / b for m, b in zip(model_ms[len(model_ms) - n:], baseline_ms[len(baseline_ms) - n:])]


class _RatioProtocol(Protocol):
    """``protocol`` for pairs of blocks: one warm-up pair (each block warms itself up);
    ``min_runs`` counts timed runs, and a pair holds at least PAIR_BLOCK_MIN_RUNS a side, so it
    asks for that many times fewer pairs; stable once the median per-pair *ratio*, the figure a
    pair is for, has a narrow enough CI (the model's own time drifts with the load that pairing
    cancels, so it rarely settles)."""

    def __init__(self, protocol, model_ms, baseline_ms):
        pairs = max(1, int(math.ceil(protocol.min_runs / float(PAIR_BLOCK_MIN_RUNS))))
        Protocol.__init__(self, **dict(protocol.to_dict(), warmup_runs=min(protocol.warmup_runs, 1), min_runs=pairs))
        self._model_ms, self._baseline_ms = model_ms, baseline_ms

    def is_stable(self, times_ms):
        return Protocol.is_stable(self, _last_ratios(self._model_ms, self._baseline_ms, len(times_ms)))


def alternate_blocks(model, baseline, protocol):
    """Time two ``run_once`` callables (one inference each, returning ms) in pairs of blocks, the
    order flipping every pair, until the protocol stops (a pair counts as one run; stable when
    the per-pair ratio's median is, see :class:`_RatioProtocol`).

    Returns:
        run_protocol's dict over the model's block medians, plus ``pair_ratio`` (median of the
        per-pair ratios model / baseline), ``pair_ratio_ci``, ``baseline_median_ms`` (median of
        the baseline's block medians) and ``pairing``.
    """
    model_ms, baseline_ms = [], []
    state = {"flip": False}

    def run_pair():
        state["flip"] = not state["flip"]
        if state["flip"]:
            model_ms.append(_block_median(model))
            baseline_ms.append(_block_median(baseline))
        else:
            baseline_ms.append(_block_median(baseline))
            model_ms.append(_block_median(model))
        return model_ms[-1]

    stats = run_protocol(run_pair, _RatioProtocol(protocol, model_ms, baseline_ms))
    n = stats["runs"]  # the protocol's warm-up pair comes first and is not timed
    ratio = summarize(_last_ratios(model_ms, baseline_ms, n), protocol.confidence)
    stats["pair_ratio"] = ratio["median_ms"]  # summarize names its fields for ms; these are ratios
    stats["pair_ratio_ci"] = [ratio["ci_low_ms"], ratio["ci_high_ms"]]
    stats["baseline_median_ms"] = percentile(sorted(baseline_ms[len(baseline_ms) - n:]), 50.0)
    stats["pairing"] = pair_blocks()
    return stats


POLL_S = 0.2  # how often a running measurement asks whether its client is still there


class _Poller(object):
    """Calls ``cancelled`` at most every POLL_S seconds; raises Cancelled when it says so."""

    def __init__(self, cancelled):
        self.cancelled = cancelled
        self.next_poll = time.monotonic() + POLL_S

    def __call__(self):
        if self.cancelled is None or time.monotonic() < self.next_poll:
            return
        self.next_poll = time.monotonic() + POLL_S
        if self.cancelled():
            raise Cancelled("measurement stopped: the client went away")


def _loadavg():
    try:
        return os.getloadavg()[:1]
    except (OSError, AttributeError):
        return [float("nan")]


# ----------------------------------------------------------------------------------------------
# Device information and the onnxruntime timer
# ----------------------------------------------------------------------------------------------


def read_first_line(path):
    """The first line of a text file, stripped (NULs too), or None if unreadable or empty."""
    try:
        with open(path) as handle:
            return handle.readline().strip().strip("\x00") or None
    except (OSError, IOError):
        return None


def device_description():
    """A one-line description of this machine (Jetson model or CPU model)."""
    model = read_first_line("/proc/device-tree/model")
    if model:
        return model
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return "%s (%d CPUs)" % (line.split(":", 1)[1].strip(), os.cpu_count() or 0)
    except (OSError, IOError):
        pass
    return "%s %s" % (platform.machine(), platform.processor() or platform.system())


VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "asimd")


def vector_flags():
    """The CPU's vector-unit flags that decide kernel speed (from /proc/cpuinfo), as a list."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith(("flags", "features")):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in VECTOR_FLAGS if f in have]
    except (OSError, IOError):
        pass
    return []


def machine_description():
    """:func:`device_description` plus the vector flags: what every speed or latency figure needs."""
    flags = vector_flags()
    return "%s; flags: %s" % (device_description(), " ".join(flags) or "unknown")


class OnnxRuntimeBackend(object):
    """onnxruntime CPU execution provider with a fixed intra-op thread count."""

    name = "onnxruntime"

    def __init__(self, threads=1):
        self.threads = int(threads)
        if self.threads < 1:
            raise ValueError("threads must be >= 1, got %d" % self.threads)

    def available(self):
        try:
            importlib.import_module("onnxruntime")
            importlib.import_module("numpy")
            return True
        except Exception:
            return False

    def versions(self):
        ort = importlib.import_module("onnxruntime")
        return {"onnxruntime": ort.__version__, "python": platform.python_version()}

    def measure(self, model_path, protocol, precision="fp32", batch=1, cancelled=None):
        """Time ``model_path`` with the protocol; returns run_protocol's dict plus details."""
        run_once, feed = self._runner(model_path, precision, batch)
        stats = run_protocol(run_once, protocol, cancelled)
        stats["threads"] = self.threads
        stats["input_shapes"] = dict((k, list(v.shape)) for k, v in feed.items())
        return stats

    def measure_pair(self, model_path, baseline_path, protocol, precision="fp32", batch=1):
        """Time ``model_path`` and ``baseline_path`` in alternating short blocks (see
        :func:`alternate_blocks`), so that load drift hits both alike and each is timed warm.

        Returns:
            run_protocol's dict of the model's block medians, plus ``pair_ratio`` (median of the
            per-pair ratios model / baseline), ``pair_ratio_ci`` (its distribution-free CI),
            ``baseline_median_ms`` and ``pairing`` (how the pairs were formed).
        """
        model, feed = self._runner(model_path, precision, batch)
        base, _ = self._runner(baseline_path, precision, batch)
        stats = alternate_blocks(model, base, protocol)
        stats["threads"] = self.threads
        stats["input_shapes"] = dict((k, list(v.shape)) for k, v in feed.items())
        return stats

    def _runner(self, model_path, precision, batch):
        """A ``run_once`` callable timing one inference of ``model_path`` (ms), and its input feed."""
        if precision != "fp32":
            raise BadRequest("the onnxruntime CPU backend measures fp32 only, got %r" % precision)
        try:
            ort = importlib.import_module("onnxruntime")
            np = importlib.import_module("numpy")
        except Exception as exc:
            raise BackendUnavailable("onnxruntime backend needs onnxruntime and numpy (%s)" % exc)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BadRequest("onnxruntime cannot load the model: %s" % str(exc).splitlines()[0])
        feed = {}
        rng = np.random.RandomState(0)
        for inp in session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else int(batch) for d in inp.shape]
            dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
            if inp.type not in ("tensor(float)", "tensor(float16)"):
                raise BadRequest("input %r has type %s; only float inputs are supported"
                                 % (inp.name, inp.type))
            feed[inp.name] = rng.standard_normal(shape).astype(dtype)

        def run_once():
            start = time.perf_counter()
            session.run(None, feed)
            return (time.perf_counter() - start) * 1000.0

        return run_once, feed


def tensorrt_version():
    """TensorRT version from NvInferVersion.h where installed (JetPack), else None."""
    for path in ("/usr/include/aarch64-linux-gnu/NvInferVersion.h",
                 "/usr/include/x86_64-linux-gnu/NvInferVersion.h", "/usr/include/NvInferVersion.h"):
        try:
            with open(path) as handle:
                text = handle.read()
        except (OSError, IOError):
            continue
        parts = [re.search(r"#define NV_TENSORRT_%s\s+(\d+)" % key, text)
                 for key in ("MAJOR", "MINOR", "PATCH")]
        if all(parts):
            return ".".join(p.group(1) for p in parts)
    return None


def power_info():
    """nvpmodel mode and current clocks where readable (Jetson), else empty values."""
    info = {"power_mode": None, "clocks_hz": {}}
    nvpmodel = shutil.which("nvpmodel")
    if nvpmodel:
        try:
            out = subprocess.check_output([nvpmodel, "-q"], stderr=subprocess.STDOUT,
                                          universal_newlines=True, timeout=5)
            info["power_mode"] = " ".join(line.strip() for line in out.strip().splitlines()
                                          if line.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    paths = sorted(glob.glob("/sys/devices/gpu.0/devfreq/*/cur_freq"))[:1]
    paths += sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))
    for path in paths:
        value = read_first_line(path)
        if value and value.isdigit():
            name = "gpu" if "/gpu" in path else path.split("/")[5]
            info["clocks_hz"][name] = int(value) * (1 if name == "gpu" else 1000)
    return info
