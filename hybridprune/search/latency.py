"""The one latency step of a study: how a trial, ``refine`` and ``publish`` time a model.

:class:`StudyLatency` owns everything about it: the backend, the lock that serialises local
measurements across workers, the isolated child process (backends whose ``isolatable`` flag is
set), the study's latency cache, and the interleaved rounds.

**One model, one latency.** On a backend that runs on this machine (``shares_host``) the load of
everything else (the other worker's fine-tune, a test run, a browser) drifts from minute to
minute, so a latency read in one trial cannot be compared with one read an hour later. Each model
is therefore timed in ``[latency] rounds`` rounds that alternate it with the unpruned baseline;
its latency ratio is the median of its per-round ratios, and its latency is that ratio times the
study's *reference baseline latency*, measured once and stored in the study. Trials, refined
models and published models are then all on one basis: ``reference_ms x ratio``. A dedicated
device (the TX2 agent) runs nothing else; there each model is timed once and its ratio is its
latency over the reference.

**A study that spans machines.** A study resumed in another session may run on another CPU, and
a ratio read on one CPU is not the ratio on another (0.771x on one 2-vCPU EPYC, 0.688x on one
with other vector units, for the same model). On a backend that shares the host, the latency
cache is therefore keyed by the machine too (:func:`~hybridprune.evaluators.timing.machine_description`:
CPU model and vector flags): an architecture timed on one CPU is timed again on another, always
against the baseline next to it, and each trial records which machine timed it
(``latency_machine``; ``status`` lists the machines when there is more than one). The reference
baseline latency stays the study's first, so every ratio lands on one basis; ``refine`` and
``publish`` re-time every model they report on the one machine they run on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hybridprune.evaluators.timing import pair_blocks
from hybridprune.io import device_lock
from hybridprune.search import trials as T
from hybridprune.search._optuna import set_study_system_attr, study_system_attrs
from hybridprune.search.latency_cache import (
    IsolatedTimer,
    LatencyCache,
    architecture_key,
    machine_key,
    screen_key,
    settings_key,
)

log = logging.getLogger(__name__)

#: Key of the baseline's own entry in interleaved results (model numbers may be negative: reference models).
BASELINE = "baseline"
#: Rounds whose baseline read within this fraction of its fastest reading count as quiet.
QUIET = 0.02
#: Study system attribute: the reference baseline latency (ms) per latency-settings key.
REFERENCE_ATTR = "latency_reference"


@dataclass(frozen=True)
class Timed:
    """A model in both forms a backend may take: the ``nn.Module`` and its exported ONNX file."""

    module: Any
    onnx: Path


@dataclass(frozen=True)
class TrialLatency:
    """A trial's latency: the backend's result, the study-basis value, the ratio, and the cache key."""

    result: Any
    latency_ms: float
    ratio: float
    cached: bool
    key: str
    machine: str | None = None
    screen: bool = False  # the 0-step screen's short reading ([fidelity] screen_latency_s)


def ratio_summary(model_ms: list[float], baseline_ms: list[float], confidence: float = 0.95,
                  ratios: list[float] | None = None) -> dict:
    """Median latency, the ratio to the baseline of the quietest rounds, and the CI of all ratios.

    The ratio is the median of the per-round ratios of the rounds whose baseline read within
    :data:`QUIET` of its fastest reading. A shared (virtual) machine switches between states for
    seconds at a time, and in a loaded state the ratio itself shifts (by ~10% for a pruned
    ResNet-56 on a 2-vCPU EPYC), so the quietest rounds are the ones that agree from trial to
    trial; the CI over all rounds shows the spread.

    Args:
        model_ms: The model's latency per round.
        baseline_ms: The baseline's latency in the same rounds (measured next to it).
        confidence: Nominal coverage of the CI (with few rounds it is the whole range of ratios).
        ratios: The per-round ratios where a round measured them itself (paired blocks);
            default ``model_ms / baseline_ms``.
    """
    from hybridprune.evaluators.timing import median_ci_indices

    per_round = list(ratios if ratios is not None else (m / b for m, b in zip(model_ms, baseline_ms)))
    fastest = min(baseline_ms)
    quiet = [r for r, b in zip(per_round, baseline_ms) if b <= fastest * (1 + QUIET)]
    ratios = sorted(per_round)
    lo, hi = median_ci_indices(len(ratios), confidence)
    return {T.R_MEASURED: statistics.median(model_ms), T.R_RATIO: statistics.median(quiet),
            T.R_RATIO_CI: [ratios[lo], ratios[hi]], T.R_ROUNDS: len(ratios), T.R_CONFIDENCE: confidence}


def interleaved_latency(pair: Callable[[Any, Any], tuple[float, float, float]], baseline: Any,
                        models: dict[int, Any], rounds: int,
                        on_round: Callable[[int, int], None] | None = None) -> dict[Any, dict]:
    """Time ``models`` against ``baseline`` for ``rounds`` rounds; :func:`ratio_summary` per model.

    ``pair(model, baseline)`` measures the two next to each other and returns ``(model ms,
    baseline ms, ratio)``, so each ratio compares measurements taken under the same load. The
    baseline's own entry (key :data:`BASELINE`) has ratio 1. ``on_round(done, rounds)`` follows each round.
    """
    times: dict[int, list[float]] = {n: [] for n in models}
    base: dict[int, list[float]] = {n: [] for n in models}
    ratios: dict[int, list[float]] = {n: [] for n in models}
    alone: list[float] = []
    for done in range(1, rounds + 1):
        for n, model in models.items():
            m, b, r = pair(model, baseline)
            times[n].append(m)
            base[n].append(b)
            ratios[n].append(r)
        if not models:
            alone.append(pair(baseline, baseline)[1])
        if on_round is not None:
            on_round(done, rounds)
    out = {n: ratio_summary(times[n], base[n], ratios=ratios[n]) for n in models}
    every = [v for n in models for v in base[n]] + alone
    out[BASELINE] = {T.R_MEASURED: statistics.median(every), T.R_RATIO: 1.0, T.R_RATIO_CI: [1.0, 1.0],
                     T.R_ROUNDS: rounds}
    return out


def machines_line(study: Any) -> str | None:
    """``latency timed on 2 machines: A (12 trials), B (3)`` when a study's trials were timed on
    more than one machine (``None`` otherwise)."""
    from collections import Counter

    seen = Counter(t.user_attrs[T.LATENCY_MACHINE] for t in study.get_trials(deepcopy=False)
                   if t.user_attrs.get(T.LATENCY_MACHINE) and not t.user_attrs.get(T.DUPLICATE_OF))
    if len(seen) < 2:
        return None
    parts = [f"{m} ({n} trial{'s' if n > 1 else ''})" for m, n in seen.most_common()]
    return (f"latency timed on {len(seen)} machines: {'; '.join(parts)}. Each ratio was read next to the baseline on "
            f"its machine, but ratios differ between CPUs; refine and publish re-time every model on one")


class StudyLatency:
    """Times the models of one study (see the module docstring).

    Args:
        settings: The study's ``[latency]`` section.
        backend: Its latency backend instance.
        input_size: One sample's shape (C, H, W).
        lock_path: File locked around local measurements (``None``: the backend queues itself).
        baseline: The unpruned baseline module; its ONNX file is exported on first use.
        work_dir: Where that ONNX file goes (a temporary folder inside it, removed by :meth:`close`).
    """

    def __init__(self, settings: Any, backend: Any, input_size: tuple[int, ...], *, lock_path: Path | None,
                 baseline: Any, work_dir: Path) -> None:
        self.settings = settings
        self.backend = backend
        self.input_size = tuple(int(s) for s in input_size)
        self.lock_path = None if backend.queues_itself else lock_path
        self.interleave = bool(type(backend).shares_host)
        isolate = settings.isolate and type(backend).isolatable
        self.timer = IsolatedTimer(settings.backend, settings.options) if isolate else None
        self._baseline_module = baseline
        self._work_dir = Path(work_dir)
        self._tmp: Path | None = None
        self._baseline: Timed | None = None
        self._baseline_key: str | None = None
        self._baseline_settings_key: str | None = None
        self._machine: str | None = None
        self._screen_backends: dict[float, Any] = {}

    @property
    def shape(self) -> dict[str, Any]:
        """Keyword arguments of every ``measure`` call: input shape, batch size, precision."""
        s = self.settings
        return dict(input_shape=self.input_size, batch_size=s.batch_size, precision=s.precision)

    def lock(self):
        """Context manager serialising local measurements across workers (a no-op for a queueing agent)."""
        return device_lock(self.lock_path)

    def export(self, module: Any, name: str) -> Timed:
        """``module`` with a static-batch ONNX export of it in this object's temporary folder."""
        from hybridprune.evaluators import export_onnx

        if self._tmp is None:
            self._work_dir.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=f"latency-{os.getpid()}-", dir=self._work_dir))
        path = export_onnx(module.cpu().eval(), self._tmp / f"{name}.onnx",
                           (self.settings.batch_size, *self.input_size), check=False)
        return Timed(module, path)

    @property
    def baseline(self) -> Timed:
        """The unpruned baseline in both forms (exported once)."""
        if self._baseline is None:
            self._baseline = self.export(self._baseline_module, "baseline")
            self._baseline_settings_key = self.settings_key(self._baseline)
            self._baseline_key = self.key(self._baseline)
        return self._baseline

    def pair(self, model: Timed, baseline: Timed, screen_s: float | None = None) -> tuple[float, float, float, Any]:
        """One measurement of ``model`` next to ``baseline`` (no lock): ``(model ms, baseline ms, ratio,
        model's LatencyResult)``; with ``screen_s``, capped at that many seconds instead of ``max_time_s``.

        A backend that ``pairs`` alternates short blocks of runs of the two (each block's first
        runs dropped, so neither is timed with the other's weights in its caches), so even load
        that changes within a second hits both; any other is measured baseline first, then the model.
        """
        if type(self.backend).pairs:
            if self.timer is not None:
                result = self.timer.measure_pair(model.onnx, baseline.onnx, **self.shape,
                                                 options=self._screen_options(screen_s))
            else:
                result = self._backend(screen_s).measure_pair(model.onnx, baseline.onnx, **self.shape)
            extra = result.extra
            return self.value(result), float(extra["baseline_median_ms"]), float(extra["pair_ratio"]), result
        b = self.value(self.once(baseline, screen_s))
        result = self.once(model, screen_s)
        return self.value(result), b, self.value(result) / b, result

    def once(self, model: Timed, screen_s: float | None = None) -> Any:
        """One measurement of ``model`` (no lock): a ``LatencyResult``, dispatched on the backend's ``takes``
        (``screen_s`` as in :meth:`pair`)."""
        if self.timer is not None:
            return self.timer.measure(model.onnx, **self.shape, options=self._screen_options(screen_s))
        backend = self._backend(screen_s)
        return backend.measure(model.module if backend.takes == "module" else model.onnx, **self.shape)

    def _screen_options(self, screen_s: float | None) -> dict | None:
        """The isolated child's options for a screen reading (``None``: the study's own)."""
        if screen_s is None or self.timer is None:
            return None
        return {**self.timer.options, "max_time_s": float(screen_s)}

    def _backend(self, screen_s: float | None) -> Any:
        """The backend, or a copy of it whose protocol stops after ``screen_s`` seconds."""
        if screen_s is None:
            return self.backend
        if screen_s not in self._screen_backends:
            import copy

            from hybridprune.evaluators.timing import Protocol

            short = copy.copy(self.backend)
            short.protocol = Protocol.from_mapping({**self.backend.protocol.to_dict(), "max_time_s": float(screen_s)})
            self._screen_backends[screen_s] = short
        return self._screen_backends[screen_s]

    def value(self, result: Any) -> float:
        """The study's latency statistic of ``result``, in ms."""
        return float(getattr(result, self.settings.statistic))

    @property
    def machine(self) -> str | None:
        """The machine a host-sharing backend times on (CPU model and vector flags); ``None`` for a
        dedicated device, which the backend's options name."""
        if self._machine is None and self.interleave:
            from hybridprune.evaluators.timing import machine_description

            self._machine = machine_description()
        return self._machine

    def settings_key(self, model: Timed) -> str:
        """``model``'s architecture plus every timing setting (the reference baseline's key)."""
        if model is self._baseline and self._baseline_settings_key is not None:
            return self._baseline_settings_key
        s = self.settings
        return settings_key(architecture_key(model.onnx), s.backend, s.options, s.batch_size, s.precision,
                            self.input_size)

    def key(self, model: Timed) -> str:
        """Cache key of ``model``: :meth:`settings_key`, plus the machine on a host-sharing backend."""
        if model is self._baseline and self._baseline_key is not None:
            return self._baseline_key
        key = self.settings_key(model)
        if self.machine is None:
            return key
        return machine_key(key, self.machine, pair_blocks() if type(self.backend).pairs else None)

    def reference_ms(self, study: Any) -> float:
        """The study's reference baseline latency, measured once (median of ``rounds``) and stored.

        Keyed by the settings, not the machine: a study resumed on another CPU keeps the basis its
        first machine set, and its ratios, read next to the baseline, land on that basis."""
        key = self.settings_key(self.baseline)
        with self.lock():
            stored = (study_system_attrs(study).get(REFERENCE_ATTR) or {}).get(key)
            if stored is not None:
                return float(stored)
            ms = statistics.median(self.value(self.once(self.baseline)) for _ in range(self.settings.rounds))
            refs = dict(study_system_attrs(study).get(REFERENCE_ATTR) or {})
            refs[key] = ms
            set_study_system_attr(study, REFERENCE_ATTR, refs)
        return ms

    def trial(self, study: Any, model: Timed, *, screen_s: float | None = None) -> TrialLatency:
        """A trial's latency on the study basis: from the study's cache, or measured (and cached).

        The cache is checked and filled under the lock, so local workers never time one
        architecture twice. ``screen_s``: the 0-step screen's reading, one round capped at that many
        seconds (``[fidelity] screen_latency_s``), on the same basis, cached under its own key.
        """
        from hybridprune.evaluators import LatencyResult

        reference = self.reference_ms(study)
        protocol_key = self.key(model)
        screen = screen_s is not None
        key = screen_key(protocol_key, screen_s) if screen else protocol_key  # the screen's reading, cached apart
        cache = LatencyCache(study) if self.settings.cache else None
        with self.lock():
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                try:
                    result = LatencyResult.from_dict(hit)
                    ratio = float(result.extra.get(T.R_RATIO, self.value(result) / reference))
                    if not (math.isfinite(ratio) and ratio > 0):
                        raise ValueError(f"ratio {ratio}")
                    return TrialLatency(result, ratio * reference, ratio, True, key, self.machine, screen)
                except (TypeError, KeyError, ValueError, AttributeError) as exc:  # written by hand or another version
                    log.warning("latency cache entry %s is unusable (%s: %s): measuring again", key,
                                type(exc).__name__, exc)
            result, ratio, extra = self._measure_ratio(model, protocol_key, reference, screen_s)
            result = dataclasses.replace(result, extra={**result.extra, **extra})
            if cache is not None:
                cache.put(key, result.to_dict())
        return TrialLatency(result, ratio * reference, ratio, False, key, self.machine, screen)

    def _measure_ratio(self, model: Timed, key: str, reference: float,
                       screen_s: float | None) -> tuple[Any, float, dict]:
        if key == self.key(self.baseline):  # the baseline's own architecture: ratio 1 by definition
            result = self.once(model, screen_s)
            return result, 1.0, {T.R_RATIO: 1.0, "reference_ms": reference}
        if not self.interleave:
            result = self.once(model, screen_s)
            return result, self.value(result) / reference, {"reference_ms": reference}
        results, model_ms, base_ms, ratios = [], [], [], []
        for _ in range(1 if screen_s is not None else self.settings.rounds):
            m, b, r, result = self.pair(model, self.baseline, screen_s)
            results.append(result)
            model_ms.append(m)
            base_ms.append(b)
            ratios.append(r)
        summary = ratio_summary(model_ms, base_ms, ratios=ratios)
        median_round = sorted(range(len(results)), key=lambda i: model_ms[i])[len(results) // 2]
        extra = {T.R_RATIO: summary[T.R_RATIO], T.R_RATIO_CI: summary[T.R_RATIO_CI], "reference_ms": reference,
                 "round_ms": model_ms, "baseline_round_ms": base_ms}
        return results[median_round], summary[T.R_RATIO], extra

    def interleaved(self, study: Any, baseline: Timed, models: dict[int, Timed], rounds: int,
                    on_round: Callable[[int, int], None] | None = None) -> dict[Any, dict]:
        """Re-time ``models`` against ``baseline`` in interleaved rounds (``refine``, ``publish``).

        Returns:
            Per model number, and :data:`BASELINE` for the baseline: :func:`ratio_summary`'s fields with
            ``latency_ms`` = ratio x the study's reference baseline latency (the study basis) and
            ``measured_ms`` the median of this run's own readings.
        """
        reference = self.reference_ms(study)

        def pair(m: Timed, b: Timed) -> tuple[float, float, float]:
            with self.lock():
                return self.pair(m, b)[:3]

        timed = interleaved_latency(pair, baseline, models, rounds, on_round)
        return {n: {**r, T.R_LATENCY: r[T.R_RATIO] * reference, T.R_REFERENCE: reference} for n, r in timed.items()}

    def close(self) -> None:
        """Stop the isolated child and remove the exported files."""
        if self.timer is not None:
            self.timer.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp, self._baseline, self._baseline_key, self._baseline_settings_key = None, None, None, None
