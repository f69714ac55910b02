"""Latency inside a study: measured once per architecture, in a process of its own.

* **Cache.** Two trials that prune to the same network (the same exported graph, weights aside)
  have the same latency. The measurement is stored as a study system attribute keyed by a
  fingerprint of the graph and the latency settings, so every worker and machine on the storage
  shares it; on a Jetson each measurement includes a TensorRT engine build of minutes.
* **Isolation.** A worker fine-tunes with PyTorch, whose OpenMP threads keep spinning after the
  last parallel region, and runs Optuna's heartbeat and progress threads; timing ONNX Runtime in
  that process makes the same architecture read differently from trial to trial. Local ONNX
  backends therefore time in a spawned child that imports neither torch nor Optuna and does
  nothing else (one per worker, started on first use).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from hybridprune.search import trials as T
from hybridprune.search._optuna import set_study_system_attr, study_system_attrs

_SECRET_OPTIONS = ("token", "token_env")


def architecture_key(onnx_path: str | Path) -> str:
    """Fingerprint of an ONNX graph with weights, names and metadata left out.

    Tensors are renamed in order of first use, so two models that differ only in which channels or
    which (same-shaped) blocks were removed, or in their trained weights, get the same key.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    g = model.graph
    names: dict[str, str] = {}

    def canon(name: str) -> str:
        return names.setdefault(name, f"t{len(names)}") if name else ""

    for v in g.input:
        v.name = canon(v.name)
        v.doc_string = ""
    for node in g.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [canon(x) for x in node.input]
        node.output[:] = [canon(x) for x in node.output]
    inits = []
    for init in g.initializer:
        init.name = canon(init.name)
        for fld in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "doc_string"):
            init.ClearField(fld)
        inits.append(init)
    inits.sort(key=lambda t: t.name)
    del g.initializer[:]
    g.initializer.extend(inits)
    for v in g.output:
        v.name = canon(v.name)
    del g.value_info[:]
    g.name = ""
    g.doc_string = ""
    body = g.SerializeToString(deterministic=True) + str([(o.domain, o.version) for o in model.opset_import]).encode()
    return hashlib.sha256(body).hexdigest()[:32]


def settings_key(arch_key: str, backend: str, options: Mapping[str, Any], batch_size: int, precision: str,
                 input_size: tuple[int, ...]) -> str:
    """Cache key: the architecture plus everything about how it is timed (tokens left out)."""
    spec = {"arch": arch_key, "backend": backend, "batch": batch_size, "precision": precision,
            "input": list(input_size),
            "options": {k: v for k, v in sorted(options.items()) if k not in _SECRET_OPTIONS}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def screen_key(key: str, screen_s: float) -> str:
    """``key`` for the 0-step screen's short reading (one round of ``screen_s`` seconds): never the
    study protocol's entry, which a candidate that goes on past the screen is timed for."""
    return hashlib.sha256(json.dumps([key, {"screen_s": float(screen_s)}]).encode()).hexdigest()[:32]


def machine_key(key: str, machine: str, pairing: Mapping[str, Any] | None = None) -> str:
    """``key`` (:func:`settings_key`) for one machine: a ratio timed on one CPU is not another's.
    ``pairing``: how a backend that times pairs forms them (``pairing`` of its result), so a ratio
    read in the old single-run pairs, which read small models slow, is never reused."""
    parts = [key, machine] + ([dict(pairing)] if pairing else [])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class LatencyCache:
    """Latency results of one study, kept in its storage (shared by all workers and machines)."""

    def __init__(self, study: Any) -> None:
        self._study = study

    def get(self, key: str) -> dict | None:
        """The stored result dict for ``key``, or ``None``."""
        return study_system_attrs(self._study).get(T.LATENCY_CACHE_PREFIX + key)

    def put(self, key: str, result: Mapping[str, Any]) -> None:
        """Store a result dict under ``key``."""
        set_study_system_attr(self._study, T.LATENCY_CACHE_PREFIX + key, dict(result))


_CHILD_BACKENDS: dict[str, Any] = {}


def _die_with_parent() -> None:
    """Pool initializer: on Linux the kernel kills the timer when its worker dies (kill -9 too);
    Ctrl+C, which the terminal sends to every process of the run, is its worker's to handle."""
    import ctypes
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _child_backend(name: str, options: dict) -> Any:
    """The child's backend for these settings, built once per child process."""
    from hybridprune.evaluators import get_latency_backend

    key = json.dumps([name, options], sort_keys=True, default=str)
    return _CHILD_BACKENDS.get(key) or _CHILD_BACKENDS.setdefault(key, get_latency_backend(name, **options))


def _measure_in_child(name: str, options: dict, path: str, input_shape: tuple, batch_size: int, precision: str) -> dict:
    backend = _child_backend(name, options)
    result = backend.measure(path, input_shape=input_shape, batch_size=batch_size, precision=precision).to_dict()
    result["extra"] = {**result.get("extra", {}), "measured_in_pid": os.getpid()}
    return result


def _pair_in_child(name: str, options: dict, path: str, baseline: str, input_shape: tuple, batch_size: int,
                   precision: str) -> dict:
    return _child_backend(name, options).measure_pair(path, baseline, input_shape=input_shape, batch_size=batch_size,
                                precision=precision).to_dict()


class IsolatedTimer:
    """Times ONNX files with a latency backend in a dedicated child process.

    Args:
        name: Backend name (one whose class is ``isolatable``).
        options: Its options (as in the study file).
    """

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = dict(options)
        self._pool: ProcessPoolExecutor | None = None

    def measure(self, path: str | Path, *, input_shape: tuple, batch_size: int, precision: str,
                options: Mapping[str, Any] | None = None) -> Any:
        """Measure ``path`` in the child (with ``options`` instead of this timer's, if given); returns a
        ``LatencyResult`` (its errors are re-raised here)."""
        from hybridprune.evaluators import LatencyResult

        self._start()
        fut = self._pool.submit(_measure_in_child, self.name, dict(options or self.options), str(path),
                                tuple(input_shape), batch_size, precision)
        return LatencyResult.from_dict(fut.result())

    def measure_pair(self, path: str | Path, baseline: str | Path, *, input_shape: tuple, batch_size: int,
                     precision: str, options: Mapping[str, Any] | None = None) -> Any:
        """``measure_pair`` of the backend, in the child (``options`` as in :meth:`measure`)."""
        from hybridprune.evaluators import LatencyResult

        self._start()
        fut = self._pool.submit(_pair_in_child, self.name, dict(options or self.options), str(path), str(baseline),
                                tuple(input_shape), batch_size, precision)
        return LatencyResult.from_dict(fut.result())

    def _start(self) -> None:
        import multiprocessing as mp

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                             initializer=_die_with_parent)
            atexit.register(self.close)

    def close(self) -> None:
        """Stop the child process."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
