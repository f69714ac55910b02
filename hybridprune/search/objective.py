"""One trial: prune -> export and measure latency (cheap, first) -> fine-tune -> validation accuracy.

Before any work a trial looks for a completed twin (same space parameters) and reuses its results
(:mod:`~hybridprune.search.reuse`). Latency comes from the study's cache when the same
architecture was measured before (:mod:`~hybridprune.search.latency_cache`). A trial whose latency
breaks ``constraints.max_latency_ms`` is not fine-tuned: it reports its accuracy before
fine-tuning and is infeasible (the latency gate). With a ``[fidelity]`` table the fine-tune runs
rung by rung and stops where MO-ASHA says so (:mod:`~hybridprune.search.fidelity`).

Every key a trial stores is defined in :mod:`~hybridprune.search.trials`. Constraints are set with
``trial.set_constraint`` (feasible when <= 0). A trial that diverges, runs out of memory or cannot
be measured raises; it is recorded as FAIL with ``fail_reason``.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from hybridprune.errors import HybridPruneError, TrainingDiverged, first_line
from hybridprune.records import Metrics as M
from hybridprune.search import fidelity as F
from hybridprune.search import trials as T
from hybridprune.search.context import WorkerContext
from hybridprune.search.latency import Timed
from hybridprune.search.split import split_record
from hybridprune.search.storage import store_model
from hybridprune.search.study import worker_id

log = logging.getLogger(__name__)

#: Exceptions that fail one trial but not the study.
TRIAL_ERRORS: tuple[type[BaseException], ...] = (HybridPruneError, MemoryError, torch.OutOfMemoryError)


class UnexpectedTrialError(HybridPruneError):
    """Any other exception inside a trial (a bug, a full disk, a corrupt file): the trial fails with
    its reason and the study goes on; the traceback goes to the log."""


def constraint_values(cfg: Any, accuracy: float, latency_ms: float) -> dict[str, float]:
    """Constraint values of a trial (<= 0 means satisfied), by name."""
    out: dict[str, float] = {}
    if cfg.constraints.max_latency_ms is not None:
        out["latency"] = float(latency_ms - cfg.constraints.max_latency_ms)
    if cfg.constraints.min_accuracy is not None:
        out["accuracy"] = float(cfg.constraints.min_accuracy - accuracy)
    return out


def prune_config(ctx: WorkerContext, config: Any) -> tuple[torch.nn.Module, dict | None, list[str]]:
    """The baseline pruned by ``config``: ``(model, pruning record dict or None, removed block names)``."""
    if config.channel_ratio == 0 and config.pruned_blocks == 0:
        return copy.deepcopy(ctx.model), None, []
    from hybridprune.pruning import prune_model

    calib = ctx.calibration(config.calib_batches) if config.make_criterion().data_driven else None
    result = prune_model(ctx.model, config, ctx.example_inputs(), calib, memo=ctx.score_memo())
    return result.model, result.record.to_dict(), list(result.removed_blocks)


def run_trial(ctx: WorkerContext, trial: Any, artifact_store: Any) -> list[float]:
    """Evaluate one configuration and record everything on ``trial``.

    Args:
        ctx: The worker's context.
        trial: An ``optuna.trial.Trial`` (live, on the study's storage).
        artifact_store: Where checkpoint and ONNX go.

    Returns:
        Objective values in the order of ``cfg.objectives.names()``.

    Raises:
        HybridPruneError, MemoryError, torch.OutOfMemoryError: the trial fails (``fail_reason``
            is set first); any other exception is recorded the same way and raised as
            :class:`UnexpectedTrialError` (also a trial failure), Optuna's own exceptions as they are.
    """
    import optuna

    try:
        return _run(ctx, trial, artifact_store)
    except TRIAL_ERRORS as exc:
        _fail(trial, exc)
        raise
    except (optuna.TrialPruned, optuna.exceptions.UpdateFinishedTrialError):
        raise  # Optuna's own control flow: the trial is not ours to fail
    except Exception as exc:
        log.debug("trial %s: unexpected error", trial.number, exc_info=True)  # the reason is one line
        raise UnexpectedTrialError(_fail(trial, exc)) from exc


def _fail(trial: Any, exc: BaseException) -> str:
    """Record why ``trial`` failed (``fail_reason``, one line) and return the reason."""
    reason = f"{type(exc).__name__}: {first_line(exc)}"[:500]
    trial.set_user_attr(T.FAIL_REASON, reason)
    log.warning("trial %s failed: %s", trial.number, reason)
    return reason


def _values(cfg: Any, accuracy: float, latency_ms: float, cx: Any) -> list[float]:
    by_name = {T.ACCURACY: accuracy, T.LATENCY_MS: latency_ms, T.PARAMS: float(cx.params), T.MACS: float(cx.macs)}
    return [by_name[name] for name in cfg.objectives.names()]


def _finish(trial: Any, cfg: Any, timer: T.PhaseTimer, accuracy: float, latency_ms: float, cx: Any) -> list[float]:
    constraints = constraint_values(cfg, accuracy, latency_ms)
    trial.set_user_attr(T.CONSTRAINTS, constraints)
    for key, value in constraints.items():
        trial.set_constraint(key, value)
    trial.set_user_attr(T.TIME_S, timer.as_dict())
    return _values(cfg, accuracy, latency_ms, cx)


class _Progress:
    """A fine-tune progress callback that records step, total, elapsed and ETA on the trial
    (``T.PROGRESS``, at most every ``every_s`` seconds) for ``run``'s live view and log lines."""

    def __init__(self, trial: Any, every_s: float = 5.0) -> None:
        import time

        self.trial, self.every_s, self.clock = trial, every_s, time.monotonic
        self.start = self.last = self.clock()
        self.offset, self.total = 0, None

    def __call__(self, info: Any) -> None:
        now = self.clock()
        total = self.total or info.total_steps
        step = self.offset + info.step
        if now - self.last < self.every_s and step != total:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / step * (total - step) if step else None
        self.trial.set_user_attr(T.PROGRESS, {"step": step, "total": total, "elapsed_s": round(elapsed, 1),
                                              "eta_s": None if eta is None else round(eta, 1)})


def finetune_seed(cfg: Any) -> int:
    """The seed of every trial's fine-tune: the study's seed, the same for every trial.

    Common random numbers: every candidate is fine-tuned on the same batches, augmented the same
    way, so the search compares models, not draws; and the distillation teacher computes each batch
    once for all trials of a worker (:class:`~hybridprune.distill.MemoTeacher`). Rung ``k`` adds
    ``1000 * k`` (:func:`run_rung`).
    """
    return int(cfg.study.seed)


def run_budget(ctx: WorkerContext, model: torch.nn.Module, seed: int, train_kw: dict) -> Any:
    """Fine-tune ``model`` in place for ``[finetune]``'s fixed budget (a study without ``[fidelity]``)."""
    from hybridprune.training import finetune

    return finetune(model, ctx.data, ctx.cfg.finetune.budget, ctx.normalization, seed=seed, **train_kw)


def run_rung(ctx: WorkerContext, model: torch.nn.Module, k: int, done: int, steps: int, seed: int,
             train_kw: dict) -> Any:
    """Train ``model`` from rung ``k - 1`` (``done`` steps) to rung ``k`` (``steps``) in place.

    A rung of 0 steps is adaptive batch norm: statistics only, no optimizer step (returns ``None``);
    otherwise the fine-tune's :class:`~hybridprune.training.TrainResult`. Seeds follow the trial's
    (``seed``) and the rung's index, so a replay (:mod:`~hybridprune.search.rebuild`) trains the same.
    """
    from hybridprune.accuracy import adapt_batchnorm
    from hybridprune.training import Budget, finetune

    f = ctx.cfg.finetune
    if steps == 0:
        adapt_batchnorm(model, ctx.data.train, ctx.normalization, batches=ctx.cfg.fidelity.bn_batches,
                        batch_size=f.batch_size, seed=seed, device=ctx.device)
        return None
    return finetune(model, ctx.data, Budget(steps=steps - done), ctx.normalization, seed=seed + 1000 * k, **train_kw)


def finetune_kwargs(ctx: WorkerContext, progress: Any = None) -> dict:
    """The keyword arguments every fine-tune of a trial runs with (teacher, device, recipe)."""
    f = ctx.cfg.finetune
    return dict(teacher=ctx.teacher() if f.distill else None, device=ctx.device, evaluate_val=False,
                progress=progress, **f.train_kwargs())


def _time(ctx: WorkerContext, trial: Any, measured: Any, timer: T.PhaseTimer, screen_s: float | None) -> Any:
    """Time ``measured`` (the study's latency step; a screen reading with ``screen_s``) and record it on ``trial``."""
    with timer.phase("latency"):
        timed = ctx.latency.trial(trial.study, measured, screen_s=screen_s)
    lat = timed.result
    trial.set_user_attr(T.LATENCY_RESULT, lat.to_dict())
    trial.set_user_attr(T.LATENCY_MS, timed.latency_ms)
    trial.set_user_attr(T.LATENCY_RATIO, timed.ratio)
    trial.set_user_attr(T.LATENCY_BACKEND, lat.backend)
    trial.set_user_attr(T.LATENCY_CACHED, timed.cached)
    trial.set_user_attr(T.LATENCY_KEY, timed.key)
    if timed.screen or trial.user_attrs.get(T.LATENCY_SCREEN):  # set only where a screen reading was involved
        trial.set_user_attr(T.LATENCY_SCREEN, True if timed.screen else None)
    if timed.machine is not None:
        trial.set_user_attr(T.LATENCY_MACHINE, timed.machine)
    return timed


def _finetune(ctx: WorkerContext, trial: Any, model: torch.nn.Module, latency_ms: float, timer: T.PhaseTimer,
              study_latency: Callable[[], float]) -> float:
    """Fine-tune (rung by rung with ``[fidelity]``) and return the validation accuracy reached.

    ``latency_ms`` is the trial's latency; where it is the screen's short reading, ``study_latency()``
    times it with the study's protocol (and records it) once the candidate goes on past the screen."""
    from hybridprune.accuracy import evaluate

    cfg = ctx.cfg
    progress = _Progress(trial)
    train_kw = finetune_kwargs(ctx, progress)

    def score(steps: int | None = None) -> float:
        val = ctx.data.val if steps is None else ctx.rung_val(steps)
        with timer.phase("eval"):
            res = evaluate(model, val, ctx.normalization, device=ctx.device, **ctx.precision_kwargs())
        if not math.isfinite(res.loss):
            raise TrainingDiverged(f"validation loss is {res.loss} after fine-tuning")
        return float(res.top1)

    seed = finetune_seed(cfg)
    if not cfg.fidelity.enabled:
        with timer.phase("finetune"):
            ft = run_budget(ctx, model, seed, train_kw)
        trial.set_user_attr(T.FINETUNE, ft.to_dict())
        trial.set_user_attr(T.FIDELITY_STEPS, ft.steps)
        return score()
    rungs = cfg.fidelity.rungs()
    label = trial.user_attrs.get(T.REFERENCE)  # reference points climb every rung unless they are screened
    reference = label is not None and (cfg.fidelity.references == "full" or label == T.REF_BASELINE)
    done, history, accuracy = 0, [], float("nan")
    progress.total = rungs[-1]
    ft = None
    promoted = _promoted_screen(trial)
    for k, steps in enumerate(rungs):
        progress.offset = done
        with timer.phase("finetune" if steps else "adapt_bn"):
            ft = run_rung(ctx, model, k, done, steps, seed, train_kw) or ft
        done = steps
        defer = cfg.fidelity.defer_screen and k == 0 and steps == 0
        if defer and promoted is not None:  # its original's screen, same seed and batches: not scored again
            accuracy, decision = promoted, F.PROMOTED
        else:
            accuracy = score(steps)
            # the bar reads every trial: only where a decision is ranked (not at the last rung)
            ranked = cfg.fidelity.floor_aware and k < len(rungs) - 1
            bar = F.floor_bar(trial.study, k, cfg.constraints.min_accuracy) if ranked else None
            order = _rank_order(ctx, trial) if k < len(rungs) - 1 else {}
            own = {"own_cost": order["cost"](trial)} if "cost" in order else {}
            decision = F.decide(trial.study, trial.number, k, len(rungs), accuracy, latency_ms, cfg.fidelity.eta,
                                reference, defer=defer, bar=bar, **order, **own)
        history.append(F.RungResult(k, steps, accuracy, latency_ms, decision).to_dict())
        trial.set_user_attr(T.RUNGS, history)
        if ft is not None:
            trial.set_user_attr(T.FINETUNE, ft.to_dict())
        trial.set_user_attr(T.FIDELITY_STEPS, steps)
        if defer and decision != F.PROMOTED:
            queued = F.promote(trial.study, cfg.fidelity.eta, bar, **order)
            if queued:
                log.info("trial %s: screened trial(s) %s now rank in the top 1/eta: promoted", trial.number, queued)
        if decision not in (F.CONTINUE, F.PROMOTED):
            break
        if steps == 0:
            latency_ms = study_latency()
            budget = cfg.constraints.max_latency_ms
            if budget is not None and latency_ms > budget:  # the short reading was under it, the study's is not
                trial.set_user_attr(T.GATED, f"latency {latency_ms:.4g} ms is over the budget constraints."
                                             f"max_latency_ms = {budget:g} ms: not fine-tuned past the screen")
                break
    return accuracy


def _rank_order(ctx: WorkerContext, trial: Any) -> dict:
    """Keyword arguments of the ``[fidelity] rank`` for :func:`~hybridprune.search.fidelity.decide` and
    :func:`~hybridprune.search.fidelity.promote`: none for the epsilon-net order; the baseline's latency
    on the study basis as the hypervolume reference point; and, per cost, the cost line fit to the
    study's fine-tunes so far (refit at every decision)."""
    rank = ctx.cfg.fidelity.rank
    if rank == F.EPSILON_NET:
        return {}
    order = {"rank": rank, "ref_latency": ctx.latency.reference_ms(trial.study)}
    if rank == F.HYPERVOLUME_PER_COST:
        from hybridprune.search.fidelity_cost import study_cost

        order["cost"] = study_cost(trial.study)
    return order


def _promoted_screen(trial: Any) -> float | None:
    """The screen accuracy of the trial a promoted ``trial`` repeats (``None`` if not promoted)."""
    number = trial.user_attrs.get(T.PROMOTED_FROM)
    if number is None:
        return None
    original = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == int(number))
    return float(original.user_attrs[T.RUNGS][0]["accuracy"])


def _run(ctx: WorkerContext, trial: Any, store: Any) -> list[float]:
    from hybridprune.accuracy import evaluate
    from hybridprune.evaluators import export_onnx
    from hybridprune.models.complexity import complexity, describe_architecture
    from hybridprune.search.reuse import find_twin, reuse

    cfg = ctx.cfg
    timer = T.PhaseTimer()
    config = ctx.space.suggest(trial)
    trial.set_user_attr(T.CONFIG, config.to_dict())
    trial.set_user_attr(T.WORKER, worker_id())
    if trial.user_attrs.get(T.REFERENCE):  # marked where the dashboard's user looks: the trial's note
        from optuna_dashboard import save_note

        from hybridprune.search.notes import reference_trial_note

        save_note(trial, reference_trial_note(trial.user_attrs[T.REFERENCE]))
    for key in (T.RUNGS, T.GATED, T.DUPLICATE_OF):  # a heartbeat retry starts with its failed twin's records
        if trial.user_attrs.get(key):
            trial.set_user_attr(key, None)
    twin = find_twin(trial.study, trial.number, trial.params, heartbeat=ctx.heartbeat,
                     promoted_from=trial.user_attrs.get(T.PROMOTED_FROM))
    if twin is not None:
        log.info("trial %s repeats trial %s: its results are reused", trial.number, twin.number)
        return reuse(trial, twin)

    with timer.phase("prune"):
        model, record, removed = prune_config(ctx, config)
        model = model.cpu().eval()
    with timer.phase("complexity"):
        cx = complexity(model, input_size=ctx.input_size)
    model.to(ctx.device)
    trial.set_user_attr(T.PARAMS, int(cx.params))
    trial.set_user_attr(T.MACS, int(cx.macs))
    trial.set_user_attr(T.ARCHITECTURE, describe_architecture(model))
    trial.set_user_attr(T.REMOVED_BLOCKS, removed)
    trial.set_user_attr(T.RECORD, record)

    cfg.run_dir.mkdir(parents=True, exist_ok=True)  # the storage may live elsewhere
    with tempfile.TemporaryDirectory(prefix=f"trial{trial.number}-", dir=cfg.run_dir) as tmp:
        tmp = Path(tmp)
        with timer.phase("export"):
            onnx_path = export_onnx(model, tmp / "measure.onnx", (cfg.latency.batch_size, *ctx.input_size), check=False)
        measured = Timed(model, onnx_path)
        timed = _time(ctx, trial, measured, timer, cfg.fidelity.screen_latency_s)  # set only with a 0-step screen

        def study_latency() -> float:
            """The study protocol's latency, for a candidate that goes on past a short screen reading."""
            nonlocal timed
            if timed.screen:  # a copy: a backend that times the module must not touch the one being fine-tuned
                timed = _time(ctx, trial, Timed(copy.deepcopy(measured.module), measured.onnx), timer, None)
            return timed.latency_ms

        budget = cfg.constraints.max_latency_ms
        if budget is not None and timed.latency_ms > budget:  # never gate on the short reading alone
            study_latency()
        lat, latency_ms = timed.result, timed.latency_ms
        gated = budget is not None and latency_ms > budget
        if gated or cfg.finetune.eval_before:
            with timer.phase("eval_before"):
                before = evaluate(model, ctx.data.val, ctx.normalization, device=ctx.device, **ctx.precision_kwargs())
            trial.set_user_attr(T.ACCURACY_BEFORE, float(before.top1))
        if gated:
            trial.set_user_attr(T.GATED, f"latency {latency_ms:.4g} ms is over the budget "
                                         f"constraints.max_latency_ms = {budget:g} ms: not fine-tuned")
            trial.set_user_attr(T.ACCURACY, float(before.top1))
            return _finish(trial, cfg, timer, float(before.top1), latency_ms, cx)

        accuracy = _finetune(ctx, trial, model, latency_ms, timer, study_latency)
        lat, latency_ms = timed.result, timed.latency_ms
        trial.set_user_attr(T.ACCURACY, accuracy)
        with timer.phase("save"):
            model = model.cpu().eval()
            metrics = {M.VAL_TOP1: accuracy, M.LATENCY_MS: latency_ms, M.LATENCY: lat.to_dict(),
                       M.PARAMS: int(cx.params), M.MACS: int(cx.macs), M.STUDY: cfg.name, M.TRIAL: trial.number,
                       M.FINETUNE_STEPS: trial.user_attrs.get(T.FIDELITY_STEPS), M.SPLIT: split_record(cfg)}
            trial.set_user_attr(T.ARTIFACTS, store_model(trial, store, model, ctx.normalization, tmp, "model",
                                                         record=record, input_size=ctx.input_size,
                                                         batch_size=cfg.latency.batch_size, metrics=metrics))
    return _finish(trial, cfg, timer, accuracy, latency_ms, cx)
