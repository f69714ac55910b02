"""Creating / loading a study and reading its state (counts, reference points)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from hybridprune.errors import ConfigError
from hybridprune.search.config import StudyConfig
from hybridprune.search.samplers import get_sampler
from hybridprune.search.storage import get_storage


def quiet_optuna() -> None:
    """Keep Optuna's experimental-feature warnings and per-trial INFO lines off the console."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_for(cfg: StudyConfig, storage: Any = None, *, heartbeat: bool = True) -> Any:
    """The study's storage (``storage`` overrides the study file), with heartbeat settings.

    ``heartbeat=False`` for ask/tell users (Ray), for which Optuna's heartbeat does not work.
    """
    s = cfg.study
    return get_storage(storage if storage is not None else cfg.storage_url,
                       heartbeat_interval=s.heartbeat_interval if heartbeat else None,
                       grace_period=s.grace_period if heartbeat else None, max_retry=s.max_retry)


def open_study(cfg: StudyConfig, storage: Any = None, *, create: bool = True, sampler: Any = None):
    """Create the study (or load it: re-running resumes) with the study file's sampler.

    Args:
        cfg: The study config.
        storage: Storage object or URL; default the study file's.
        create: Create it when missing (``False``: ConfigError if it does not exist).
        sampler: Override the sampler.

    Returns:
        ``optuna.Study``.

    Raises:
        ConfigError: when the stored study has other objectives than the file, or is missing.
    """
    import optuna

    quiet_optuna()
    storage = storage if isinstance(storage, optuna.storages.BaseStorage) else storage_for(cfg, storage)
    sampler = sampler or get_sampler(cfg.sampler, seed=cfg.study.seed, n_trials=cfg.study.trials)
    names = cfg.objectives.names()
    if not create:
        try:
            study = optuna.load_study(study_name=cfg.name, storage=storage, sampler=sampler)
        except KeyError:
            raise ConfigError(f"study {cfg.name!r} has not been run yet (no such study in {cfg.storage_url}); "
                              f"start it with: hybridprune run {cfg.path}") from None
    else:
        study = optuna.create_study(study_name=cfg.name, storage=storage, sampler=sampler,
                                    directions=cfg.objectives.directions(), load_if_exists=True)
    if study.metric_names is None:
        study.set_metric_names(names)
    elif list(study.metric_names) != names:
        raise ConfigError(f"study {cfg.name!r} in the storage optimises {study.metric_names}, the study file "
                          f"{names}; use another study.name or storage")
    return study


def enqueue_references(study: Any, space: Any) -> int:
    """Enqueue the unpruned baseline and the paper's settings first (skipped if already there).

    Returns:
        How many points were newly enqueued.
    """
    before = len(study.get_trials(deepcopy=False))
    for i, params in enumerate(space.reference_points()):
        kind = "baseline" if i == 0 and all(not v for k, v in params.items() if k in ("channel_ratio", "pruned_blocks", "phi")) else "paper"
        study.enqueue_trial(params, user_attrs={"reference": kind}, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False)) - before


@dataclass(frozen=True)
class Counts:
    """Trial counts of a study. ``done`` = complete + failed by the objective (not stale)."""

    complete: int
    failed: int
    running: int
    waiting: int
    stale: int

    @property
    def done(self) -> int:
        """Trials that count towards the study's target."""
        return self.complete + self.failed


def counts(study: Any) -> Counts:
    """Count a study's trials by what they mean for "run until N finished"."""
    from optuna.trial import TrialState

    c = {"complete": 0, "failed": 0, "running": 0, "waiting": 0, "stale": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.FAIL:
            c["failed" if "fail_reason" in t.user_attrs else "stale"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    return Counts(**c)


def pareto_trials(study: Any) -> list:
    """The feasible Pareto-optimal completed trials, by increasing latency."""
    return sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0]))
