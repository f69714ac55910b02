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
* Ctrl+C and SIGTERM stop a Ray run as they stop a local one (:class:`GracefulStop`): the trials
  it was running are queued again for the resume, and ``run`` reports the interrupt. Left to
  themselves, Tune's Ctrl+C ends ``fit`` as if the run had finished and ``ray.init``'s SIGTERM
  handler calls ``sys.exit``; either way the running trials stayed RUNNING in the study for good.

One GPU per trial where GPUs exist, else one CPU; at most ``study.workers`` trials at a time.
Set ``RAY_ADDRESS`` to join an existing cluster; otherwise a local Ray is started.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
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


class GracefulStop:
    """Context manager around ``Tuner.fit``: Ctrl+C or SIGTERM ends the Tune run as Tune's own
    Ctrl+C does (its SIGUSR1 handler: running trials stopped, experiment state saved), and is kept
    in :attr:`requested` for the caller to re-raise; a second one stops at once.

    Takes over a signal only where its handler is the default, hybridprune's own or Ray's (which
    ``ray.init`` installs for SIGTERM); a caller's own handler stays. Tune's SIGINT handler is
    switched off for the while (``TUNE_DISABLE_SIGINT_HANDLER``), as it would end ``fit`` unnoticed.
    """

    def __enter__(self) -> GracefulStop:
        from hybridprune.search import interrupts

        self.requested: KeyboardInterrupt | None = None
        self._previous: dict[int, Any] = {}
        self._env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        if threading.current_thread() is not threading.main_thread():
            return self
        ours = (signal.SIG_DFL, signal.default_int_handler, interrupts._on_sigint, interrupts._on_sigterm)
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler in ours or getattr(handler, "__module__", "").startswith("ray."):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        if signal.SIGINT in self._previous:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        from hybridprune.search.interrupts import Terminated, interrupt

        exc = Terminated("received SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()
        if self.requested is not None:  # the second: now (held out of a storage call)
            interrupt(exc)
            return
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # Tune's loop not started: its
            interrupt(exc)                                              # default would end the process
            return
        self.requested = exc
        signal.raise_signal(signal.SIGUSR1)  # Tune's graceful stop, on the next bytecode

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        if signal.SIGINT in self._previous:
            if self._env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env


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
    trials = study.get_trials(deepcopy=False)
    waiting, since = {t.number for t in trials if t.state.name == "WAITING"}, len(trials)
    stop = GracefulStop()
    try:
        with stop:
            grid = tuner.fit()
    except KeyboardInterrupt:  # the second Ctrl+C, inside fit
        _queue_again(cfg, waiting, since)
        raise
    if stop.requested is not None:
        _queue_again(cfg, waiting, since)
        raise stop.requested
    return grid


def _queue_again(cfg: StudyConfig, waiting: set[int], since: int) -> None:
    """This run's interrupted trials (RUNNING, or failed by OptunaSearch without a reason) are
    failed and queued again, as the local backend does after Ctrl+C."""
    from hybridprune.search.study import abandon, open_study

    queued = abandon(open_study(cfg, create=False), waiting, since, cfg.study.max_retry, any_worker=True)
    if queued:
        log.info("interrupted trial(s) %s queued again for the resume", queued)


def require_ray():
    """Import ``ray.tune`` or explain how to install it.

    Raises:
        MissingDependencyError: when ray[tune] is not importable.
    """
    from hybridprune.registry import lazy_import

    lazy_import("ray.tune", "ray", "--backend ray")
    return lazy_import("ray", "ray", "--backend ray")
