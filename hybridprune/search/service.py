"""The search service: prepare a study (pre-flight, references) and run it locally or on Ray."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from hybridprune.errors import ConfigError
from hybridprune.search import trials as T
from hybridprune.search.config import StudyConfig, load_study_config
from hybridprune.search.fidelity import EPSILON_NET
from hybridprune.search.storage import resolve_storage_url

log = logging.getLogger(__name__)


def load(path: str, *, trials: int | None = None, workers: int | None = None, backend: str | None = None,
         storage: str | None = None, time_budget: str | None = None, import_models: bool = True) -> StudyConfig:
    """Read a study file and apply command-line overrides (validated like the file's values);
    ``import_models=False`` for read-only commands (see :func:`load_study_config`).

    Raises:
        ConfigError: for bad files or overrides.
    """
    cfg = load_study_config(path, import_models=import_models)
    over: dict[str, Any] = {}
    if trials is not None:
        over["trials"] = trials
    if workers is not None:
        over["workers"] = workers
    if backend is not None:
        over["backend"] = backend
    if storage is not None:
        over["storage"] = resolve_storage_url(storage, cfg.path.parent)
    if time_budget is not None:
        from hybridprune.search.config import parse_duration

        over["time_budget"] = parse_duration(time_budget, "--time-budget")
    return cfg.replace(**over) if over else cfg


def prepare(cfg: StudyConfig) -> tuple[Any, Any]:
    """Pre-flight check and study set-up: load data and baseline (training it once if needed),
    build the space and latency backend, open the study, enqueue the reference points.

    Returns:
        ``(study, context)``.

    Raises:
        HybridPruneError subclasses, before any trial runs.
    """
    from hybridprune.search.context import build_context
    from hybridprune.search.split import describe_split, split_record
    from hybridprune.search.study import (
        enqueue_references,
        enqueue_warm_start,
        fail_dead_trials,
        has_heartbeat,
        open_study,
        set_study_attr,
    )

    cfg.check_writable()
    ctx = build_context(cfg)
    study = open_study(cfg)
    set_study_attr(study, T.STUDY_SPACE, ctx.space.describe())
    set_study_attr(study, T.STUDY_FILE, cfg.portable(cfg.path))
    set_study_attr(study, T.STUDY_ARTIFACT_DIR, cfg.portable(cfg.artifact_dir))
    lat = cfg.latency
    set_study_attr(study, T.STUDY_LATENCY, {"backend": lat.backend, "statistic": lat.statistic,
                                            "batch_size": lat.batch_size, "precision": lat.precision})
    n_val, n_test = len(ctx.data.val), len(ctx.data.test)
    set_study_attr(study, T.STUDY_SPLIT, {**split_record(cfg), "val_images": n_val, "test_images": n_test,
                                          "val": describe_split(cfg, "val", n_val),
                                          "test": describe_split(cfg, "test", n_test)})
    if cfg.fidelity.enabled:
        set_study_attr(study, T.STUDY_FIDELITY, {"rungs": cfg.fidelity.rungs(), "eta": cfg.fidelity.eta,
                                                 "bn_val_images": cfg.fidelity.bn_val_images,
                                                 **({"defer_screen": True} if cfg.fidelity.defer_screen else {}),
                                                 **({"floor_aware": True} if cfg.fidelity.floor_aware else {}),
                                                 **({"rank": cfg.fidelity.rank} if cfg.fidelity.rank != EPSILON_NET
                                                    else {}),
                                                 **({"calibrate": True} if cfg.fidelity.calibrate else {}),
                                                 **({"screen_latency_s": cfg.fidelity.screen_latency_s}
                                                    if cfg.fidelity.screen_latency_s is not None else {})})
    if ctx.baseline_metrics:
        set_study_attr(study, T.STUDY_BASELINE_METRICS,
                       {k: v for k, v in ctx.baseline_metrics.items() if k != "train"})
    if cfg.study.references:
        enqueue_references(study, ctx.space)
    enqueue_warm_start(study, ctx.space)  # searched points: inside the budget, unlike the references
    if cfg.references.models:
        from hybridprune.search.references import prepare_references
        from hybridprune.search.storage import get_artifact_store

        prepare_references(cfg, ctx, study, get_artifact_store(cfg.artifact_dir))
    if not T.refined(study):  # once refined, refine keeps the note (with the refined front)
        from hybridprune.search.notes import save_study_note

        save_study_note(study)
    dead = fail_dead_trials(study)  # trials of dead workers stop counting as running (and are queued again)
    if dead:
        log.info("failed %d trial(s) whose worker on this machine has exited: %s", len(dead),
                 ", ".join(map(str, dead)))
    if has_heartbeat(study):
        import optuna

        optuna.storages.fail_stale_trials(study)
    removed = remove_stale_trial_dirs(cfg.run_dir, study) + remove_stale_temp_dirs(cfg.run_dir)
    if removed:
        log.info("removed %d temporary folder(s) of trials that no longer run: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return study, ctx


TRIAL_DIR = re.compile(r"^trial(\d+)-")
PROCESS_DIR = re.compile(r"^(?:latency|refine|reference\d+)-(\d+)-")  # tagged with the pid that made it


def remove_stale_temp_dirs(run_dir: Path) -> list[Path]:
    """Delete the temporary folders (``latency-``, ``refine-``, ``reference<i>-``, each tagged with
    its process id) that a killed process left in ``run_dir``; those of live processes stay.

    Returns:
        The folders removed.
    """
    from hybridprune.search.study import process_alive

    return _remove_dirs(run_dir, PROCESS_DIR, lambda pid: pid != os.getpid() and not process_alive(pid))


def _remove_dirs(run_dir: Path, pattern: re.Pattern, stale: Callable[[int], bool]) -> list[Path]:
    """Delete the folders of ``run_dir`` whose name matches ``pattern`` and whose number (its first
    group) is ``stale``; files and symlinks stay. Returns the folders removed."""
    if not Path(run_dir).is_dir():
        return []
    removed = []
    for path in sorted(Path(run_dir).iterdir()):
        m = pattern.match(path.name)
        if m and path.is_dir() and not path.is_symlink() and stale(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_stale_trial_dirs(run_dir: Path, study: Any) -> list[Path]:
    """Delete the ``trial<N>-*`` temporary folders a killed trial left in ``run_dir``.

    Only folders of trials that are not RUNNING (or not in the study at all) go; a trial that
    another worker or machine is running keeps its folder.

    Returns:
        The folders removed.
    """
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return _remove_dirs(run_dir, TRIAL_DIR, lambda number: number not in running)


def run(cfg: StudyConfig, *, on_poll: Callable[[], None] | None = None) -> Any:
    """Prepare and run the study to ``cfg.study.trials`` finished trials.

    Args:
        cfg: The study.
        on_poll: Progress callback (called after trials / every second).

    Returns:
        The ``optuna.Study``.
    """
    from hybridprune.search import budget as B

    study, ctx = prepare(cfg)
    budget = B.start(study, cfg.study.time_budget, cfg.study.budget_covers)
    try:
        if cfg.study.backend == "ray":
            from hybridprune.search.ray_runner import run_ray

            run_ray(cfg, ctx=ctx)
        elif cfg.study.backend == "local":
            from hybridprune.search.local import run_local

            one = cfg.study.workers <= 1  # the in-process worker reuses the prepared study and context
            run_local(cfg, workers=cfg.study.workers, on_poll=on_poll, ctx=ctx if one else None,
                      study=study if one else None)
        else:  # validated in the config already
            raise ConfigError(f"unknown backend {cfg.study.backend!r}")
    finally:
        if budget is not None:
            budget.finish()
        ctx.close()
    return study
