"""Refine a study's best trials: fine-tune them longer, score them on the test split, re-time them.

Latency is re-measured by the study's one latency step
(:meth:`~hybridprune.search.latency.StudyLatency.interleaved`): rounds that alternate each refined
model with the unpruned baseline, so drift in the machine's load hits both alike; a model's latency
ratio is the median of its per-round ratios, with a distribution-free confidence interval, and its
latency is that ratio times the study's reference baseline latency, the basis of every trial.

Optuna does not let a finished trial be updated, so each refined trial's results are the study
user attribute ``refined:<number>`` (:func:`~hybridprune.search.trials.refined`), its checkpoint
and ONNX file are artifacts in ``[study] refined_artifact_dir`` (default: the study's artifact store),
and its optuna-dashboard note is stored under the trial's id.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hybridprune.errors import ConfigError, HybridPruneError
from hybridprune.recipe import REFINE_DISTILL_WEIGHT
from hybridprune.search import trials as T
from hybridprune.search.latency import BASELINE
from hybridprune.search.notes import save_refined_notes
from hybridprune.search.objective import finetune_seed
from hybridprune.search.pareto import completed, pareto_rows, usable
from hybridprune.search.storage import artifact_exists, get_artifact_store, store_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineOptions:
    """What ``refine`` does to each candidate (``lr``/``distill`` ``None``: the study's ``[finetune]``)."""

    epochs: float = 1.0
    lr: float | None = None
    distill: bool = True
    rounds: int = 5
    distill_weight: float = REFINE_DISTILL_WEIGHT

    def peak_lr(self, default: float) -> float:
        """The learning rate refine uses: ``lr``, else ``default`` (the study's ``[finetune] lr``)."""
        return self.lr or default

    def __post_init__(self) -> None:
        from hybridprune.recipe import check_budget, check_lr

        check_budget(self.epochs, None, "refine", "--{}".format)
        if self.lr is not None:
            check_lr(self.lr, "--lr")
        from hybridprune.search.config import MAX_ROUNDS

        if not (isinstance(self.distill_weight, (int, float)) and 0 < self.distill_weight <= 1):
            raise ConfigError(f"--distill-weight must be in (0, 1], got {self.distill_weight}")
        if not self.rounds >= 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.rounds > MAX_ROUNDS:
            raise ConfigError(f"--rounds must be at most {MAX_ROUNDS}, got {self.rounds}")


def candidates(study: Any, *, top: int | None = None, max_latency_ms: float | None = None,
               numbers: list[int] | None = None) -> list[Any]:
    """The trials to refine: the Pareto set, the ``top`` most accurate, those under a budget or
    the trial ``numbers`` named, plus the baseline and every reference model (last).

    Only feasible completed trials with artifacts that are not reused duplicates qualify (named
    ``numbers`` may be infeasible: below ``min_accuracy`` after the search's short fine-tune). The
    unpruned baseline trial (:func:`~hybridprune.search.trials.baseline_trial`) always comes first.

    Raises:
        ConfigError: bad ``top``/budget/numbers, more than one given, a named trial that does not
        qualify. HybridPruneError: no qualifying trial or no baseline.
    """
    if sum(x is not None for x in (top, max_latency_ms, numbers)) > 1:
        raise ConfigError("give one of --top, --trial or a latency budget")
    if top is not None and top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    if max_latency_ms is not None and not max_latency_ms > 0:
        raise ConfigError(f"the latency budget must be > 0 ms, got {max_latency_ms}")
    done = completed(study)
    if not done:
        raise HybridPruneError(f"study {study.study_name!r} has no completed trials to refine")
    pickable = usable(study)
    ok = [t for t in pickable if T.feasible(t)]
    base = [t for t in [T.baseline_trial(study, with_artifacts=True)] if t is not None]
    if not base:
        raise HybridPruneError(f"study {study.study_name!r} has no completed unpruned baseline trial with artifacts "
                               f"to refine as the reference")
    if numbers is not None:  # named trials may be infeasible: a short search fine-tune can undersell them
        by_number = {t.number: t for t in pickable}
        bad = sorted({n for n in numbers if n not in by_number and n != base[0].number})
        if bad:
            raise ConfigError(f"--trial {', '.join(map(str, bad))}: not a completed trial with artifacts "
                              f"(that is not a reused duplicate); those are: "
                              f"{', '.join(str(n) for n in sorted(by_number)) or 'none'}")
        chosen = [by_number[n] for n in numbers if n in by_number]
    elif top is not None:
        chosen = sorted(ok, key=lambda t: (-T.accuracy(t), T.latency_ms(t), t.number))[:top]
    elif max_latency_ms is not None:
        chosen = [t for t in ok if T.latency_ms(t) <= max_latency_ms]
    else:
        front = {r.number for r in pareto_rows(study)}
        chosen = [t for t in ok if t.number in front]
    from hybridprune.search.references import reference_trials

    return (base[:1] + sorted((t for t in chosen if t.number != base[0].number), key=lambda t: t.number)
            + reference_trials(study))


def refine_trial(ctx: Any, study: Any, trial: Any, store: Any, options: RefineOptions, tmp: Path,
                 refined_store: Any) -> dict:
    """Fine-tune one trial's checkpoint (from ``store``, the study's artifacts) for ``options.epochs``
    more epochs, score it, upload it to ``refined_store`` (``[study] refined_artifact_dir``).

    Returns:
        The refined record (epochs, test/val top-1, artifact ids; latency fields come later).
    """
    from hybridprune.accuracy import evaluate
    from hybridprune.records import Metrics as M
    from hybridprune.search import shared_refine as S
    from hybridprune.search.references import model_name_of
    from hybridprune.search.split import describe_split, split_record
    from hybridprune.training import Budget, finetune

    cfg, f = ctx.cfg, ctx.cfg.finetune
    start = time.perf_counter()
    model, record, source_metrics, rebuilt = _source(ctx, store, trial, tmp / "source.pt")
    shared = S.shared_path(ctx, trial, model, options)  # a reference model: maybe refined by a twin study
    taken = S.take(shared, model_name_of(cfg, trial))
    if taken is not None:
        model, prior = taken
        print(f"trial {trial.number}: the same {trial.user_attrs.get(T.REFERENCE)} model with the same recipe was "
              f"refined by study {prior.get(S.SHARED_FROM)!r}; taking it ({shared.name}), not fine-tuning again",
              flush=True)
        done = {"epochs": options.epochs, S.SHARED_FROM: prior.get(S.SHARED_FROM)}
    model = model.to(ctx.device)
    if taken is None:
        ft = finetune(model, ctx.data, Budget(epochs=options.epochs), ctx.normalization,
                      teacher=ctx.teacher() if options.distill else None, distill_weight=options.distill_weight,
                      lr=options.peak_lr(f.lr), batch_size=f.batch_size,
                      seed=finetune_seed(cfg), device=ctx.device, evaluate_val=False,
                      **ctx.precision_kwargs())
        done = {"epochs": options.epochs, "finetune": ft.to_dict()}
    test = evaluate(model, ctx.data.test, ctx.normalization, device=ctx.device, **ctx.precision_kwargs()).top1
    val = evaluate(model, ctx.data.val, ctx.normalization, device=ctx.device, **ctx.precision_kwargs()).top1
    metrics = {**source_metrics, M.VAL_TOP1: float(val), M.TEST_TOP1: float(test), M.STUDY: cfg.name,
               M.TRIAL: trial.number, M.REFINE: done,
               M.SPLIT: split_record(cfg), M.TEST_SPLIT: describe_split(cfg, "test", len(ctx.data.test)),
               M.VAL_SPLIT: describe_split(cfg, "val", len(ctx.data.val))}
    ids = store_model(study, refined_store, model, ctx.normalization, tmp,
                      f"trial{trial.number}-refined",
                      record=record, input_size=ctx.input_size, batch_size=cfg.latency.batch_size,
                      metrics=metrics)
    rec = {T.R_EPOCHS: options.epochs, T.R_TEST: float(test), T.R_VAL: float(val),
           T.R_LR: options.peak_lr(f.lr), T.R_SEED: finetune_seed(cfg), T.R_DISTILL: options.distill,
           T.R_DISTILL_WEIGHT: options.distill_weight if options.distill else None,
           T.R_SECONDS: time.perf_counter() - start,
           T.R_ARTIFACTS: ids, **({T.R_REBUILT: rebuilt} if rebuilt else {})}
    if taken is not None:
        return {**rec, S.SHARED_FROM: prior.get(S.SHARED_FROM)}
    S.keep(shared, model, ctx.normalization, rec, cfg.name, ctx.input_size)
    return rec


def _source(ctx: Any, store: Any, trial: Any, path: Path) -> tuple[Any, dict | None, dict, dict | None]:
    """``(model, pruning record, metrics, rebuilt)`` of what ``trial`` stored: its checkpoint
    artifact, or, when the store no longer has it, the model rebuilt from the trial's record
    (:mod:`~hybridprune.search.rebuild`; ``rebuilt`` then says how its accuracy compares)."""
    from hybridprune.search.rebuild import rebuild

    artifact = trial.user_attrs.get(T.ARTIFACTS, {}).get(T.ARTIFACT_CHECKPOINT)
    if artifact and artifact_exists(store, artifact):
        loaded = _download_checkpoint(ctx, store, ctx.cfg.artifact_dir, artifact, trial, path)
        return loaded.model, loaded.record, dict(loaded.metrics), None
    made = rebuild(ctx, trial)
    print(made.describe(trial.number), flush=True)
    return made.model, made.record, made.metrics, made.to_dict()


def _download_checkpoint(ctx: Any, store: Any, where: Path, artifact: str, trial: Any, path: Path) -> Any:
    """Download and load a checkpoint artifact of ``trial`` from ``store`` (the folder ``where``;
    one error line when it is gone)."""
    from optuna.artifacts import download_artifact

    from hybridprune.checkpoints import load_checkpoint

    try:
        download_artifact(artifact_store=store, artifact_id=artifact, file_path=str(path))
    except Exception as exc:
        raise HybridPruneError(f"checkpoint artifact {artifact} of trial {trial.number} is missing from "
                               f"{where}: {exc}") from None
    from hybridprune.search.references import model_name_of

    loaded = load_checkpoint(path, model_name_of(ctx.cfg, trial))  # the study names its models; the file may not
    path.unlink()
    return loaded


def same_recipe(rec: dict, options: RefineOptions, default_lr: float, seed: int) -> bool:
    """Whether a stored refine record was made with ``options``' recipe: the same epochs, peak lr
    (``None``: the study's ``[finetune] lr``), seed, distillation and its weight; otherwise it is
    refined again."""
    return (rec.get(T.R_EPOCHS) == options.epochs and rec.get(T.R_LR) == options.peak_lr(default_lr)
            and rec.get(T.R_SEED) == seed
            and rec.get(T.R_DISTILL) == options.distill
            and (not options.distill or rec.get(T.R_DISTILL_WEIGHT) == options.distill_weight))


def refine(ctx: Any, study: Any, trials: list[Any], options: RefineOptions,
           on_trial: Callable[[Any, dict, bool], None] | None = None,
           on_round: Callable[[int, int], None] | None = None) -> list[tuple[Any, dict]]:
    """Refine ``trials`` (the baseline first), re-time them interleaved, record everything on the study.

    The trials' checkpoints come from the study's ``artifact_dir``; the refined ones go to its
    ``refined_artifact_dir`` (by default the same folder), where a later run finds them again.

    A trial whose stored record has the same recipe (epochs, lr, distillation: :func:`same_recipe`)
    is not fine-tuned again; each new record is
    stored as soon as its fine-tune ends, so a killed run resumes. The latency step always re-runs.

    Returns:
        ``(trial, record)`` pairs in the order of ``trials``.
    """
    cfg = ctx.cfg
    store, kept = get_artifact_store(cfg.artifact_dir), get_artifact_store(cfg.refined_artifact_dir)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    records: list[tuple[Any, dict]] = []
    with tempfile.TemporaryDirectory(prefix=f"refine-{os.getpid()}-", dir=cfg.run_dir) as tmp:
        tmp = Path(tmp)
        for t in trials:
            rec = T.refined(study, t)
            reused = (same_recipe(rec, options, cfg.finetune.lr, finetune_seed(cfg)) and bool(rec.get(T.R_ARTIFACTS))
                      and artifact_exists(kept, rec[T.R_ARTIFACTS][T.ARTIFACT_CHECKPOINT]))
            if not reused:
                rec = refine_trial(ctx, study, t, store, options, tmp, kept)
                study.set_user_attr(f"{T.REFINED_PREFIX}{t.number}", rec)
            if on_trial is not None:
                on_trial(t, rec, reused)
            records.append((t, rec))
        models = {}
        for t, rec in records:
            loaded = _download_checkpoint(ctx, kept, cfg.refined_artifact_dir,
                                          rec[T.R_ARTIFACTS][T.ARTIFACT_CHECKPOINT], t, tmp / f"timed{t.number}.pt")
            models[t.number] = ctx.latency.export(loaded.model, f"refined{t.number}")
        base_no = trials[0].number
        start = time.perf_counter()
        timed = ctx.latency.interleaved(study, models[base_no], {n: m for n, m in models.items() if n != base_no},
                                        options.rounds, on_round=on_round)
        timed[base_no] = timed.pop(BASELINE)
        latency_s = time.perf_counter() - start
    out = []
    for t, rec in records:
        rec = {**rec, **timed[t.number]}
        study.set_user_attr(f"{T.REFINED_PREFIX}{t.number}", rec)
        out.append((t, rec))
    save_refined_notes(study, out)
    study.set_user_attr(T.STUDY_REFINED, {T.R_EPOCHS: options.epochs, T.R_ROUNDS: options.rounds,
                                          T.RS_TRIALS: [t.number for t, _ in out], T.RS_BASELINE: base_no,
                                          T.RS_LATENCY_SECONDS: latency_s})
    return out
