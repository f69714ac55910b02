"""Local runner: one or several worker processes on one study (any storage).

Each worker loops ``study.optimize(n_trials=1)`` until the study holds ``trials`` finished trials
(complete or failed by the objective) and no trial is left RUNNING, so re-running resumes and
nothing completed is redone.
With an RDB storage (SQLite, PostgreSQL) Optuna's heartbeat marks a trial whose worker died as
FAIL after ``grace_period`` seconds and ``RetryHeartbeatStaleTrialCallback`` queues it again;
workers wait for such trials instead of over-running the study.

Worker processes stop when the ``hybridprune run`` that started them dies, by any signal
(``kill -9`` too): on Linux the kernel sends them SIGTERM (``prctl(PR_SET_PDEATHSIG)``), and
everywhere a watchdog thread notices the parent is gone. A worker then fails its trial and queues
it again, as after Ctrl+C, so the next run retries it first (should that write not happen, the
trial stays RUNNING until its heartbeat goes stale or the next run finds its worker gone).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from hybridprune.search.config import StudyConfig

log = logging.getLogger(__name__)
POLL_S = 1.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ParentDied(BaseException):
    """Raised in a worker process whose parent is gone.

    A BaseException, so neither Optuna (which fails a trial on ``Exception``) nor a trial's own
    error handling catches it: the worker's loop fails the trial and queues it again, as after
    Ctrl+C, and stops its heartbeat.
    """


class WorkersFailed(RuntimeError):
    """Worker processes died or failed and the study did not reach its target."""


_stopping = False  # a worker's first SIGTERM was handled


def _on_parent_death(signum: int, frame: Any) -> None:
    global _stopping
    # once: a second SIGTERM (the kernel's and the watchdog's come together) must not interrupt the
    # clean-up with another exception. The handler stays: switching to SIG_IGN here races with a
    # SIGTERM already caught but not yet run, which CPython then prints as a traceback
    # ("Signal 15 ignored due to race condition").
    if _stopping:
        return
    _stopping = True
    from hybridprune.search.interrupts import interrupt  # not inside a storage call: after it

    interrupt(ParentDied(f"received {signal.Signals(signum).name}: the run that started it is gone or it was "
                         f"terminated"))


def watch_parent(parent_pid: int) -> None:
    """Make this (worker) process stop when ``parent_pid`` is no longer its parent.

    SIGTERM raises :class:`ParentDied` in the main thread; on Linux the kernel sends SIGTERM when
    the parent dies; a daemon thread checks ``os.getppid()`` every second everywhere (and covers
    a parent that died before this ran).
    """
    from hybridprune.search.interrupts import catch_swallowed

    signal.signal(signal.SIGTERM, _on_parent_death)
    catch_swallowed()  # a SIGTERM that lands in a finaliser is raised again, not dropped
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watchdog below still works
            pass

    def watchdog() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def worker(cfg: StudyConfig, storage: Any = None, *, threads: int | None = None,
           on_trial: Callable[[Any], None] | None = None, ctx: Any = None, index: int = 0,
           on_start: Callable[[Any], None] | None = None, study: Any = None) -> int:
    """Run trials of the study until it has ``cfg.study.trials`` finished ones.

    Args:
        cfg: The study.
        storage: Storage override (URL or object).
        threads: Torch intra-op threads of this worker.
        on_trial: Called with the study after each trial (progress).
        ctx: A prepared :class:`WorkerContext` (built here when ``None``; the caller closes a
            context it passes).
        index: This worker's index (its sampler draws from a stream of its own).
        on_start: Called with each trial once it is RUNNING in the storage, before its work.
        study: The study, already opened by :func:`~hybridprune.search.service.prepare` (opened
            here when ``None``); either way its sampler draws from this worker's stream.

    Returns:
        Number of trials this worker ran.
    """
    import torch

    from hybridprune.search.context import build_context
    from hybridprune.search.storage import get_artifact_store
    from hybridprune.search.study import has_heartbeat, open_study, worker_sampler

    if threads:
        torch.set_num_threads(threads)
    own_ctx = ctx is None
    ctx = ctx or build_context(cfg)
    if study is None:
        study = open_study(cfg, storage, worker=index)
    else:  # as open_study(worker=index) seeds it
        study.sampler = worker_sampler(cfg, study, index)
    store = get_artifact_store(cfg.artifact_dir)
    heartbeat = has_heartbeat(study)
    ctx.heartbeat = heartbeat
    try:
        return _loop(cfg, study, ctx, store, heartbeat, on_trial, on_start)
    finally:
        if own_ctx:
            ctx.close()  # a child process left running would keep this one alive


def _loop(cfg: StudyConfig, study: Any, ctx: Any, store: Any, heartbeat: bool,
          on_trial: Callable[[Any], None] | None, on_start: Callable[[Any], None] | None = None) -> int:
    import optuna

    from hybridprune.search._optuna import record_heartbeat, stop_orphaned_heartbeats
    from hybridprune.search.budget import used_up
    from hybridprune.search.objective import TRIAL_ERRORS, run_trial
    from hybridprune.search.study import abandon, counts

    def objective(trial: Any) -> Any:
        if heartbeat:
            # beat at once, not only when Optuna's heartbeat thread first gets to run: a worker
            # killed right after ask() then leaves a trial that goes stale and is retried, instead
            # of one without any heartbeat, which stays RUNNING for good
            record_heartbeat(study, trial)
        if on_start is not None:
            on_start(trial)
        return run_trial(ctx, trial, store)

    ran = 0
    last, since = None, time.monotonic()
    while True:
        if used_up(study):
            log.info("stopping: the study's time budget is used up (no new trial starts)")
            break
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
        c = counts(study)
        if c != last:
            last, since = c, time.monotonic()
        stuck = time.monotonic() - since > 2 * cfg.study.grace_period
        if c.exhausted(cfg.study.trials) and c.running == 0:
            log.warning("stopping: the sampler proposed %d configurations that were already evaluated "
                        "(the space is used up or the sampler has converged)", c.duplicates)
            break
        if c.done >= cfg.study.trials:
            if not heartbeat or c.running == 0 or stuck:
                break
            # the target is reached but trials are still RUNNING: wait until they finish or their
            # heartbeat goes stale (then they are failed and re-queued), so no run ends with a
            # dead worker's trial left RUNNING
            time.sleep(POLL_S)
            continue
        if heartbeat and c.waiting == 0 and c.done + c.running >= cfg.study.trials and not stuck:
            # others are finishing the last trials (or they go stale and are retried); trials
            # without a heartbeat (e.g. left RUNNING by a killed Ray driver) never go stale, so
            # after 2 x grace_period without change this worker runs a trial itself
            time.sleep(POLL_S)
            continue
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)  # this call runs a queued trial or creates the next one
        waiting, newest = {t.number for t in trials if t.state == TrialState.WAITING}, len(trials)
        try:
            study.optimize(objective, n_trials=1, catch=TRIAL_ERRORS,
                           gc_after_trial=False)
        except (KeyboardInterrupt, ParentDied):  # Ctrl+C, or the run stopped: inside the objective or Optuna's ask/tell
            # a trial interrupted inside ask() is RUNNING with no heartbeat and no worker yet: left
            # so, nothing would ever fail it (seen: a resumed run ending with it still RUNNING), so
            # it is failed and queued again here (abandon holds a second signal back until that is done)
            try:
                abandon(study, waiting, newest, cfg.study.max_retry, lock=cfg.run_dir / "abandon.lock")
            finally:
                stop_orphaned_heartbeats()
            raise
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            # another worker declared this trial dead (heartbeat older than grace_period) and queued
            # it again; the retry runs it, so this worker just goes on
            log.warning("trial was failed by the heartbeat while running (%s); raise study.grace_period", exc)
        ran += 1
        if on_trial is not None:
            on_trial(study)
    return ran


def _worker_main(cfg: StudyConfig, storage: Any, threads: int, index: int, parent_pid: int) -> None:
    from hybridprune.search.study import quiet_optuna

    watch_parent(parent_pid)
    quiet_optuna()
    try:
        worker(cfg, storage, threads=threads, index=index)
    except ParentDied as exc:
        log.warning("worker %d (pid %d) stops (%s); a trial it was running is retried by the next run",
                    index, os.getpid(), exc)
        sys.exit(3)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Poller:
    """Calls ``on_poll`` from a daemon thread every :data:`POLL_S` seconds, and on demand
    (:meth:`poll`), never twice at once; a failing poll is logged once and does not stop the run."""

    def __init__(self, on_poll: Callable[[], None]) -> None:
        self._on_poll = on_poll
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="progress-poll", daemon=True)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # the final state

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def poll(self, *_: Any) -> None:
        """Call ``on_poll`` now (arguments are ignored: usable as a trial callback)."""
        with self._lock:
            try:
                self._on_poll()
            except Exception as exc:  # progress display only: the study goes on
                if not self._failed:
                    self._failed = True
                    log.warning("progress view failed (%s); the study goes on", exc)


def run_local(cfg: StudyConfig, storage: Any = None, *, workers: int = 1,
              on_poll: Callable[[], None] | None = None, ctx: Any = None, study: Any = None) -> None:
    """Run the study with ``workers`` processes (1: in this process).

    Args:
        cfg: The study (already prepared: references enqueued, baseline cached).
        storage: Storage URL override (processes open their own connection).
        workers: Number of worker processes.
        on_poll: Called about every second while the study runs and, with one worker, whenever
            a trial starts or ends (progress view), from a background thread.
        ctx: Prepared context for the in-process worker.
        study: The prepared study for the in-process worker (one worker only).

    Raises:
        WorkersFailed: if a worker process died or failed and the study did not reach its target
            (when it did, a warning names the dead workers and this returns normally).
    """
    if workers <= 1:
        if on_poll is None:
            worker(cfg, storage, ctx=ctx, study=study)
            return
        with Poller(on_poll) as poller:  # trials run in this thread: poll from another one
            worker(cfg, storage, on_trial=poller.poll, on_start=poller.poll, ctx=ctx, study=study)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    mpctx = mp.get_context("spawn")
    procs = [mpctx.Process(target=_worker_main, args=(cfg, storage, threads, i, os.getpid()), daemon=False)
             for i in range(workers)]
    ctrl_c = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited: Ctrl+C is this process's to handle
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, ctrl_c)
    try:
        while any(p.is_alive() for p in procs):
            if on_poll:
                on_poll()
            time.sleep(POLL_S)
    except KeyboardInterrupt:  # stop the workers; their trials are failed and queued again on resume
        for p in procs:
            p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
    bad = [f"worker {i} (pid {p.pid}) {_exit_text(p.exitcode)}" for i, p in enumerate(procs) if p.exitcode != 0]
    if not bad:
        return
    from hybridprune.search.study import counts, open_study

    c = counts(open_study(cfg, storage, create=False))
    if c.done >= cfg.study.trials:
        log.warning("%s; the study reached its target of %d trials anyway", "; ".join(bad), cfg.study.trials)
        return
    raise WorkersFailed(f"{'; '.join(bad)}; the study holds {c.done} of {cfg.study.trials} finished trials; "
                        f"run the same command again to resume")
