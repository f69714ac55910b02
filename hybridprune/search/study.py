"""Creating / loading a study and reading its state (counts, reference points)."""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridprune.errors import ConfigError
from hybridprune.search import trials as T
from hybridprune.search.config import StudyConfig
from hybridprune.search.interrupts import held
from hybridprune.search.samplers import get_sampler
from hybridprune.search.storage import get_storage, storage_file

log = logging.getLogger(__name__)


def quiet_optuna() -> None:
    """Keep Optuna's experimental-feature warnings, per-trial INFO lines and failed-trial tracebacks
    off the console."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from hybridprune.search._optuna import quiet_trial_failures

    quiet_trial_failures()  # the objective logs each failure in one line and records it on the trial
    # SQLAlchemy logs a traceback when it cannot close a cursor or reset a connection while another
    # exception (Ctrl+C, a worker's SIGTERM) unwinds a query. That exception is what happened and is
    # reported in one line; without a handler, logging's last resort printed the traceback on the
    # console. A handler configured by the user (on the root logger) still receives them.
    for name in ("sqlalchemy.engine", "sqlalchemy.pool"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


def storage_for(cfg: StudyConfig, storage: Any = None, *, heartbeat: bool = True) -> Any:
    """The study's storage (``storage`` overrides the study file), with heartbeat settings.

    ``heartbeat=False`` for ask/tell users (Ray), for which Optuna's heartbeat does not work.
    """
    s = cfg.study
    return get_storage(storage if storage is not None else cfg.storage_url,
                       heartbeat_interval=s.heartbeat_interval if heartbeat else None,
                       grace_period=s.grace_period if heartbeat else None, max_retry=s.max_retry)


def worker_seed(seed: int, worker: int, start: int) -> int:
    """The sampler seed of one worker: the study seed, the worker's index and the number of trials
    the study held when the worker started, hashed. Workers of one run, and a resumed run, draw
    from streams of their own; a one-worker run started afresh is reproducible."""
    digest = hashlib.sha256(f"{seed}:{worker}:{start}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def open_study(cfg: StudyConfig, storage: Any = None, *, create: bool = True, sampler: Any = None,
               worker: int | None = None):
    """Create the study (or load it: re-running resumes) with the study file's sampler.

    Args:
        cfg: The study config.
        storage: Storage object or URL; default the study file's.
        create: Create it when missing (``False``: ConfigError if it does not exist).
        sampler: Override the sampler.
        worker: Index of the worker that will sample from it: its sampler is seeded with
            :func:`worker_seed` (``None``: the study seed, for read-only use).

    Returns:
        ``optuna.Study``.

    Raises:
        ConfigError: when the stored study has other objectives than the file, or is missing.
    """
    import optuna

    quiet_optuna()
    if not create and not isinstance(storage, optuna.storages.BaseStorage):
        url = storage if isinstance(storage, str) else cfg.storage_url
        local = storage_file(url) if url else None
        if local is not None and not local.exists():  # a read-only command creates no database
            raise ConfigError(f"study {cfg.name!r} has not been run yet (no storage file {local}); "
                              f"start it with: hybridprune run {cfg.path}")
    storage = storage if isinstance(storage, optuna.storages.BaseStorage) else storage_for(cfg, storage)
    sampler = sampler or study_sampler(cfg, cfg.study.seed)
    names = cfg.objectives.names()
    if not create:
        try:
            study = optuna.load_study(study_name=cfg.name, storage=storage, sampler=sampler)
        except KeyError:
            raise ConfigError(f"study {cfg.name!r} has not been run yet (no such study in {cfg.storage_url}); "
                              f"start it with: hybridprune run {cfg.path}") from None
    else:
        try:  # load first: create_study would log a creation to a journal on every resumed run
            study = optuna.load_study(study_name=cfg.name, storage=storage, sampler=sampler)
        except KeyError:
            study = optuna.create_study(study_name=cfg.name, storage=storage, sampler=sampler,
                                        directions=cfg.objectives.directions(), load_if_exists=True)
    if study.metric_names is None:
        study.set_metric_names(names)
    elif list(study.metric_names) != names:
        raise ConfigError(f"study {cfg.name!r} in the storage optimises {study.metric_names}, the study file "
                          f"{names}; use another study.name or storage")
    if worker is not None:
        study.sampler = worker_sampler(cfg, study, worker)
    return study


def set_study_attr(study: Any, key: str, value: Any) -> None:
    """``study.set_user_attr(key, value)``, skipped when the study holds that value already, so that
    a resumed run adds nothing to a journal (or a database's history) that only repeats it."""
    import json

    if study.user_attrs.get(key, object()) != json.loads(json.dumps(value)):
        study.set_user_attr(key, value)


def worker_sampler(cfg: StudyConfig, study: Any, worker: int) -> Any:
    """The sampler of worker ``worker`` on ``study``, seeded by :func:`worker_seed` with the number
    of trials the study holds now."""
    start = len(study.get_trials(deepcopy=False))
    return study_sampler(cfg, worker_seed(cfg.study.seed, worker, start))


def study_sampler(cfg: StudyConfig, seed: int) -> Any:
    """The study's ``[sampler]`` seeded ``seed``; with ``[fidelity] calibrate`` it sees every stopped
    trial's accuracy on the last rung's scale (:mod:`hybridprune.search.fidelity_view`)."""
    sampler = get_sampler(cfg.sampler, seed=seed, n_trials=cfg.study.trials)
    if not cfg.fidelity.calibrate:
        return sampler
    from hybridprune.search.fidelity_view import CalibratedSampler

    return CalibratedSampler(sampler, cfg.objectives.names().index(T.ACCURACY))


def has_heartbeat(study: Any) -> bool:
    """Whether the study's storage runs Optuna heartbeats (RDB storages with an interval)."""
    from hybridprune.search._optuna import heartbeat_enabled

    return heartbeat_enabled(study)


def worker_id() -> str:
    """This process as a trial's ``worker`` record: ``host:pid``."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (another user's counts as alive)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone(pid: int, since: float) -> bool:
    """Whether process ``pid`` of this machine no longer runs the trial started at ``since``
    (epoch seconds): it does not exist, or the pid now belongs to a process started later."""
    import os

    if pid == os.getpid():  # this process runs no trial yet: the pid was reused
        return True
    if not process_alive(pid):
        return True
    try:  # Linux: the process's start, from boot time plus its start in clock ticks
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):  # another user's process, or not Linux
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") > since + 1.0


def fail_dead_trials(study: Any) -> list[int]:
    """Fail the running trials whose worker process ran on this machine and has exited, at once
    rather than a ``grace_period`` after its last heartbeat (a heartbeat storage then queues each
    again, as for a stale trial); trials of other machines and of live processes are left alone.

    With heartbeats, a trial that never named its worker and started more than ``grace_period``
    ago is failed too: its process died inside Optuna's ``ask()``, after the trial became RUNNING
    and before the objective's first heartbeat, so Optuna, which only fails trials whose last
    heartbeat is late, would leave it RUNNING for good (seen: a run ``kill -9``-ed there and
    resumed ended with it still RUNNING). The start counts as its first heartbeat; a live worker
    names itself milliseconds after ``ask()``.

    Returns:
        The numbers of the trials failed.
    """
    from datetime import datetime, timedelta

    from optuna.trial import TrialState

    from hybridprune.search._optuna import fail_trials, heartbeat_grace_s, trial_id

    host = worker_id().rpartition(":")[0]
    grace = heartbeat_grace_s(study)
    dead = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not t.datetime_start:
            continue
        name, _, pid = str(t.user_attrs.get(T.WORKER, "")).rpartition(":")
        if T.WORKER not in t.user_attrs:
            if grace is not None and datetime.now() - t.datetime_start > timedelta(seconds=grace):
                dead.append(t)
        elif name == host and pid.isdigit() and _gone(int(pid), t.datetime_start.timestamp()):
            dead.append(t)
    failed = set(fail_trials(study, [trial_id(t) for t in dead]))
    return [t.number for t in dead if trial_id(t) in failed]


@held  # a second Ctrl+C or stop signal waits until the trial is failed and queued again
def abandon(study: Any, waiting: set[int], since: int, max_retry: int | None, *, any_worker: bool = False,
            lock: Path | None = None) -> list[int]:
    """After Ctrl+C: fail this process's interrupted trial (one of the ``waiting`` queued trials,
    or a new one numbered ``since`` or more) and queue it
    again with its parameters and records, as Optuna's heartbeat retry does for a stale one
    (``failed_trial`` names it; at most ``max_retry`` times), so a resumed run evaluates it first
    and no reference point is lost. A trial Optuna already failed for the interrupt (no
    ``fail_reason``) is queued too; one interrupted inside Optuna's ``ask`` (still RUNNING, its
    worker not yet recorded) is failed here. ``any_worker``: the trials of every worker, not only
    this process's (a Ray run, whose trials run in Ray's worker processes). ``lock``: a file that
    the study's local workers all name, held while this reads which trials were already queued again
    and queues its own: a trial interrupted inside ``ask`` has no worker yet, so every stopping
    worker that had it WAITING claims it, and without the lock two of them each queued it (seen).

    Returns:
        The numbers queued again.
    """
    from hybridprune.io import device_lock

    with device_lock(lock):
        return _abandon(study, waiting, since, max_retry, any_worker)


def _abandon(study: Any, waiting: set[int], since: int, max_retry: int | None, any_worker: bool) -> list[int]:
    import optuna
    from optuna.trial import TrialState

    from hybridprune.search._optuna import fail_trials, trial_id

    me = worker_id()
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    own = [t for t in trials if (t.number in waiting or t.number >= since)
           and (any_worker or t.user_attrs.get(T.WORKER) in (None, me))
           and (t.state == TrialState.RUNNING or (t.state == TrialState.FAIL and T.FAIL_REASON not in t.user_attrs))
           and t.number not in retried]
    done = []
    try:
        fail_trials(study, [trial_id(t) for t in own if t.state == TrialState.RUNNING], retry=False)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        for t in own:
            retry(study, t)
            done.append(t.number)
    except Exception as exc:  # interrupted mid-write: the resume's dead-worker check retries it instead
        log.warning("could not queue interrupted trial(s) again: %s", exc)
    return done


def enqueue_references(study: Any, space: Any) -> int:
    """Enqueue the unpruned baseline and the paper's settings first (skipped if already there).

    Returns:
        How many points were newly enqueued.
    """
    return _enqueue(study, [(params, {T.REFERENCE: label}) for label, params in space.labelled_references()])


def enqueue_warm_start(study: Any, space: Any) -> int:
    """Enqueue the space's ``warm_start`` points (after the reference points, before the sampler's
    own; skipped if already there, so a resumed study does not run them twice).

    Returns:
        How many points were newly enqueued.
    """
    return _enqueue(study, [(params, {T.WARM_START: True}) for params in space.warm_start_points()])


def _enqueue(study: Any, points: list[tuple[dict[str, Any], dict[str, Any]]]) -> int:
    """Enqueue ``(params, user_attrs)`` points not already in ``study``; returns how many were new."""
    before = len(study.get_trials(deepcopy=False))
    for params, attrs in points:
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False)) - before


@dataclass(frozen=True)
class Counts:
    """Trial counts of a study. ``done`` = complete + failed by the objective (not stale), less
    the duplicates (completed by reusing an earlier trial's results)."""

    complete: int
    failed: int
    running: int
    waiting: int
    stale: int
    duplicates: int = 0

    @property
    def done(self) -> int:
        """Trials that count towards the study's target."""
        return self.complete - self.duplicates + self.failed

    def exhausted(self, target: int) -> bool:
        """Whether the sampler keeps proposing evaluated configurations (more duplicates than
        ``max(20, 2 * target)``: the space is used up or the sampler has converged)."""
        return self.duplicates > max(20, 2 * target)


def counts(study: Any) -> Counts:
    """Count a study's trials by what they mean for "run until N finished"."""
    from optuna.trial import TrialState

    c = {"complete": 0, "failed": 0, "running": 0, "waiting": 0, "stale": 0, "duplicates": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
            c["duplicates"] += not T.counts_towards_target(t)
        elif t.state == TrialState.FAIL:
            c["failed" if T.FAIL_REASON in t.user_attrs else "stale"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    return Counts(**c)


@dataclass(frozen=True)
class Savings:
    """What the study did not have to do: reused duplicates, cached latencies, gated and stopped
    fine-tunes (seconds estimated at the mean fine-tune time of the trials that fully ran)."""

    duplicates: int
    latency_cached: int
    latency_measured: int
    gated: int
    stopped: int
    finetune_steps_saved: int
    finetune_s_saved: float

    def line(self) -> str:
        """One line for ``status`` and ``run``."""
        return (f"saved: {self.duplicates} duplicate trial(s) reused, {self.latency_cached} of "
                f"{self.latency_cached + self.latency_measured} latencies from the cache, {self.gated} trial(s) over "
                f"the latency budget not fine-tuned, {self.stopped} stopped early by multi-fidelity; "
                f"~{self.finetune_s_saved:.0f} s of fine-tuning ({self.finetune_steps_saved} steps) not spent")


def savings(study: Any, full_steps: int | None) -> Savings:
    """Tally what deduplication, the latency cache and gate, and multi-fidelity saved.

    Args:
        study: The study.
        full_steps: Fine-tune steps of a trial that runs its whole budget (``None``: the most any
            trial of the study ran).
    """
    from hybridprune.search.pareto import completed

    done = completed(study)
    own = [t for t in done if T.counts_towards_target(t)]
    rate = [t.user_attrs[T.TIME_S]["finetune"] / t.user_attrs[T.FIDELITY_STEPS] for t in own
            if t.user_attrs.get(T.FIDELITY_STEPS) and "finetune" in t.user_attrs.get(T.TIME_S, {})]
    per_step = sum(rate) / len(rate) if rate else 0.0
    gated = [t for t in own if t.user_attrs.get(T.GATED)]
    promoted = {t.user_attrs.get(T.PROMOTED_FROM) for t in done} - {None}  # their fine-tune was spent after all
    stopped = [t for t in own if (t.user_attrs.get(T.RUNGS) or [{}])[-1].get("decision") == "stop"
               and t.number not in promoted]
    full = full_steps or max((int(t.user_attrs.get(T.FIDELITY_STEPS) or 0) for t in own), default=0)
    steps = full * len(gated) + sum(max(0, full - int(t.user_attrs.get(T.FIDELITY_STEPS) or 0)) for t in stopped)
    dup = [t for t in done if not T.counts_towards_target(t)]
    steps += sum(int(t.user_attrs.get(T.FIDELITY_STEPS) or 0) for t in dup)
    cached = sum(1 for t in own if t.user_attrs.get(T.LATENCY_CACHED))
    measured = sum(1 for t in own if t.user_attrs.get(T.LATENCY_CACHED) is False)
    return Savings(duplicates=len(dup), latency_cached=cached, latency_measured=measured, gated=len(gated),
                   stopped=len(stopped), finetune_steps_saved=steps, finetune_s_saved=steps * per_step)
