"""Ray Tune backend: Tune schedules the trials, ``OptunaSearch`` samples them on the same storage.

How the gaps of ``ray.tune.search.optuna.OptunaSearch`` for this service are closed:

* The study (directions, metric names, references) is created by :func:`service.prepare` first;
  ``OptunaSearch(study_name=..., storage=...)`` then loads it (``load_if_exists``), so results land
  in the same study and dashboard as local runs, and enqueued reference points are asked first.
* The search space is a define-by-run function calling our space's ``suggest_params`` (the same
  code as local runs) and returning the Optuna trial id in the Tune config.
* OptunaSearch only ``tell``s objective values: each Tune trial re-opens its Optuna trial
  (``optuna.trial.Trial(study, trial_id)``) on the shared storage and runs the same
  :func:`run_trial`, which writes user attributes, constraints (``trial.set_constraint``, read
  by the samplers instead of a ``constraints_func``) and artifacts itself.
* A failing trial raises; Tune marks it ERROR and OptunaSearch tells FAIL (``fail_reason`` is
  already stored).

One GPU per trial where GPUs exist, else one CPU; at most ``study.workers`` trials at a time.
Set ``RAY_ADDRESS`` to join an existing cluster; otherwise a local Ray is started.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from hybridprune.search.config import StudyConfig

log = logging.getLogger(__name__)
TRIAL_ID_KEY = "optuna_trial_id"


class DefineByRun:
    """OptunaSearch's define-by-run space: our space's ``suggest_params`` (picklable for Tune)."""

    def __init__(self, space: Any) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict:
        self.space.suggest_params(trial)
        from hybridprune.search._optuna import trial_id

        return {TRIAL_ID_KEY: trial_id(trial)}


def _trainable(config: dict, cfg: StudyConfig) -> None:
    import optuna
    import torch
    from ray import tune

    from hybridprune.search.context import build_context
    from hybridprune.search.objective import run_trial
    from hybridprune.search.storage import get_artifact_store
    from hybridprune.search.study import quiet_optuna, storage_for

    quiet_optuna()
    torch.set_num_threads(1)
    ctx = build_context(cfg, train_if_missing=False)
    study = optuna.load_study(study_name=cfg.name, storage=storage_for(cfg, heartbeat=False),
                              sampler=optuna.samplers.RandomSampler())
    trial = optuna.trial.Trial(study, int(config[TRIAL_ID_KEY]))
    try:
        values = run_trial(ctx, trial, get_artifact_store(cfg.artifact_dir))
    finally:
        ctx.close()
    tune.report(dict(zip(cfg.objectives.names(), values)))


def run_ray(cfg: StudyConfig, *, ctx: Any) -> Any:
    """Run the remaining trials of the study with Ray Tune.

    Args:
        cfg: The study (prepared: baseline cached, references enqueued).
        ctx: The prepared context (its space defines the search).

    Returns:
        The ``ray.tune.ResultGrid``.

    Raises:
        MissingDependencyError: without ray[tune].
    """
    from hybridprune.search.study import counts, open_study, storage_for, worker_sampler

    ray = require_ray()
    import torch
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    study = open_study(cfg)
    sampler = worker_sampler(cfg, study, 0)
    remaining = cfg.study.trials - counts(study).done
    if remaining <= 0:
        return None
    define_by_run = DefineByRun(ctx.space)

    names = cfg.objectives.names()
    modes = ["max" if d == "maximize" else "min" for d in cfg.objectives.directions()]
    search = OptunaSearch(
        space=define_by_run, metric=names, mode=modes, study_name=cfg.name, storage=storage_for(cfg, heartbeat=False),
        sampler=sampler,
    )
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=max(1, min(os.cpu_count() or 1, cfg.study.workers)), include_dashboard=False,
                     log_to_driver=True, configure_logging=False)
    gpus = 1 if torch.cuda.is_available() else 0
    trainable = tune.with_resources(tune.with_parameters(_trainable, cfg=cfg), {"cpu": 1, "gpu": gpus})
    from hybridprune.search.budget import deadline

    end = deadline(study)
    left = None if end is None else max(1.0, end - time.time())  # Ray Tune's own wall-time stop
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search, num_samples=remaining,
                                    max_concurrent_trials=cfg.study.workers, time_budget_s=left),
        run_config=tune.RunConfig(name=f"{cfg.name}-ray", storage_path=str(cfg.run_dir / "ray"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    return tuner.fit()


def require_ray():
    """Import ``ray.tune`` or explain how to install it.

    Raises:
        MissingDependencyError: when ray[tune] is not importable.
    """
    from hybridprune.registry import lazy_import

    lazy_import("ray.tune", "ray", "--backend ray")
    return lazy_import("ray", "ray", "--backend ray")
