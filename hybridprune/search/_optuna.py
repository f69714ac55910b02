"""Every private Optuna name hybridprune touches, in one place, each with the reason.

Optuna's public API has no way to do these things; when a release moves one of them, this module
is the only one to change (``grep -rn "\\._storage\\|\\._trial_id\\|optuna\\._" hybridprune benchmarks``
finds nothing else).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence


def study_system_attrs(study: Any) -> dict:
    """The study's system attributes, read fresh from its storage.

    Why private: ``Study.system_attrs`` was removed from the public API in Optuna 3; the latency
    cache and the reference baseline latency are shared between workers through them.
    """
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: Any, key: str, value: Any) -> None:
    """Write one study system attribute (see :func:`study_system_attrs`)."""
    study._storage.set_study_system_attr(study._study_id, key, value)


def trial_id(trial: Any) -> int:
    """The storage's id of a trial (Ray Tune carries it to the worker that evaluates it).

    Why private: Optuna exposes only the per-study ``number``; storages are keyed by ``_trial_id``.
    """
    return int(trial._trial_id)


def heartbeat_enabled(study: Any) -> bool:
    """Whether the study's storage runs Optuna heartbeats (RDB storages with an interval).

    Why private: ``is_heartbeat_enabled`` lives in ``optuna.storages._heartbeat``.
    """
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def heartbeat_grace_s(study: Any) -> float | None:
    """Seconds without a heartbeat after which Optuna declares a running trial stale, or ``None``
    where the storage runs no heartbeats.

    Why private: the grace period is an attribute of ``RDBStorage`` (behind Optuna's private
    ``_CachedStorage``); Optuna reads it only inside ``_get_stale_trial_ids``.
    """
    if not heartbeat_enabled(study):
        return None
    storage = study._storage
    grace = getattr(getattr(storage, "_backend", storage), "grace_period", None)
    return float(grace if grace is not None else 2 * storage.get_heartbeat_interval())


def record_heartbeat(study: Any, trial: Any) -> None:
    """Beat for ``trial`` now, before Optuna's heartbeat thread first runs (a worker killed right
    after ``ask()`` then leaves a trial that goes stale and is retried)."""
    study._storage.record_heartbeat(trial._trial_id)


def stop_orphaned_heartbeats() -> int:
    """Stop Optuna heartbeat threads left beating by an interrupted trial; returns how many.

    Why private: Optuna's ``HeartbeatThread`` (``optuna.storages._heartbeat``) starts a non-daemon
    thread in the ``__enter__`` of a ``with`` block. A Ctrl+C (or a worker's SIGTERM) that lands
    inside ``Thread.start()``, which waits until the new thread runs, skips ``__exit__``: the thread
    beats forever and the interpreter, which joins non-daemon threads, never exits. Its stop event
    is the third argument of the thread's target. Call this only when the process stops trials
    for good (it stops every heartbeat thread of the process).
    """
    import threading

    from optuna.storages._heartbeat import HeartbeatThread

    stopped = 0
    for thread in threading.enumerate():
        if getattr(thread, "_target", None) is HeartbeatThread._record_heartbeat:
            thread._args[2].set()
            stopped += 1
    return stopped


def save_finished_trial_note(study: Any, trial: Any, text: str) -> None:
    """An optuna-dashboard note on a finished trial.

    Why private: ``optuna_dashboard.save_note`` reads ``storage``, ``study`` and ``_trial_id`` of a
    live ``Trial``, and a finished trial cannot be reopened.
    """
    from optuna_dashboard import save_note

    save_note(_note_target(study, trial), text)


def finished_trial_note(study: Any, trial: Any) -> str:
    """The optuna-dashboard note of a finished trial (see :func:`save_finished_trial_note`)."""
    from optuna_dashboard import get_note

    return get_note(_note_target(study, trial))


def _note_target(study: Any, trial: Any) -> SimpleNamespace:
    return SimpleNamespace(storage=study._storage, study=study, _trial_id=trial._trial_id)


def hypervolume(loss_points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Hypervolume of minimisation points up to ``reference`` (0.0 for none).

    Why private: Optuna's exact hypervolume is ``optuna._hypervolume.compute_hypervolume``; the
    public ``optuna.visualization`` only plots it.
    """
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    pts = np.asarray(loss_points, dtype=float).reshape(-1, len(reference))
    if not len(pts):
        return 0.0
    return float(compute_hypervolume(pts, np.asarray(reference, dtype=float), assume_pareto=False))


def fail_trials(study: Any, trial_ids: Sequence[int], *, retry: bool = True) -> list[int]:
    """Fail running trials as Optuna's heartbeat would, and (``retry``) run its stale-trial
    callback (the retry) on each; a trial another process finished first is skipped.

    Why private: ``fail_stale_trials`` only fails the trials whose heartbeat is late, and the
    callback lives on the storage (``get_heartbeat_stale_trial_callback``).

    Returns:
        The storage ids of the trials this call failed.
    """
    import copy

    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    failed = []
    for tid in trial_ids:
        try:
            if storage.set_trial_state_values(tid, state=TrialState.FAIL):
                failed.append(tid)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    callback = storage.get_heartbeat_stale_trial_callback() if retry and heartbeat_enabled(study) else None
    if callback is not None:
        for tid in failed:
            callback(study, copy.deepcopy(storage.get_trial(tid)))
    return failed


class _OwnTrialFailures:
    """Drops Optuna's two warnings about a failed trial (the second with the traceback of an
    exception the objective already recorded as ``fail_reason`` and logged in one line)."""

    def filter(self, record: Any) -> bool:
        text = str(record.msg)
        return not (text.startswith("Trial ") and (" failed with parameters: " in text
                                                   or " failed with value " in text))


_FILTER = _OwnTrialFailures()


def quiet_trial_failures() -> None:
    """Keep Optuna's per-failed-trial warnings and tracebacks off the console (idempotent).

    Why private: the warnings come from the logger of ``optuna.study._optimize``, a private module
    (its name is the logger's), with no switch of their own.
    """
    import logging

    logger = logging.getLogger("optuna.study._optimize")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
