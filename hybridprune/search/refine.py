"""Refine a study's best trials: fine-tune them longer, score them on the test split, re-time them.

Latency is re-measured with rounds that alternate each refined model with the unpruned baseline,
so drift in the machine's load hits both alike; a model's latency ratio is the median of its
per-round ratios, with a distribution-free confidence interval of that median
(:func:`~hybridprune.evaluators.timing.median_ci_indices`).

Optuna does not let a finished trial be updated, so each refined trial's results are the study
user attribute ``refined:<number>`` (:func:`~hybridprune.search.trials.refined`), its checkpoint
and ONNX file are study artifacts, and its optuna-dashboard note is stored under the trial's id.
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from hybridprune.errors import ConfigError, HybridPruneError
from hybridprune.search import trials as T
from hybridprune.search.pareto import completed, pareto_rows, save_figure
from hybridprune.search.storage import upload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineOptions:
    """What ``refine`` does to each candidate (``lr``/``distill`` ``None``: the study's ``[finetune]``)."""

    epochs: float = 1.0
    lr: float | None = None
    distill: bool = True
    rounds: int = 5

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, (int, float)) and math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"--epochs must be > 0, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if not self.rounds >= 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")


def candidates(study: Any, *, top: int | None = None, max_latency_ms: float | None = None,
               numbers: list[int] | None = None) -> list[Any]:
    """The trials to refine: the Pareto set, the ``top`` most accurate, those under a budget or
    the trial ``numbers`` named, plus the baseline.

    Only feasible completed trials with artifacts that are not reused duplicates qualify (named
    ``numbers`` may be infeasible: below ``min_accuracy`` after the search's short fine-tune). The
    unpruned baseline trial (``reference == "baseline"``) always comes first.

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
    usable = [t for t in done if t.user_attrs.get(T.ARTIFACTS) and T.counts_towards_target(t)]
    ok = [t for t in usable if T.feasible(t)]
    base = [t for t in done if t.user_attrs.get(T.ARTIFACTS) and t.user_attrs.get(T.REFERENCE) == "baseline"]
    if not base:
        raise HybridPruneError(f"study {study.study_name!r} has no completed unpruned baseline trial with artifacts "
                               f"to refine as the reference")
    if numbers is not None:  # named trials may be infeasible: a short search fine-tune can undersell them
        by_number = {t.number: t for t in usable}
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
    return base[:1] + sorted((t for t in chosen if t.number != base[0].number), key=lambda t: t.number)


def refine_trial(ctx: Any, study: Any, trial: Any, store: Any, options: RefineOptions, tmp: Path) -> dict:
    """Fine-tune one trial's checkpoint for ``options.epochs`` more epochs, score it, upload it.

    Returns:
        The refined record (epochs, test/val top-1, artifact ids; latency fields come later).
    """
    from optuna.artifacts import download_artifact

    from hybridprune.checkpoints import load_checkpoint, save_checkpoint
    from hybridprune.evaluators import export_onnx
    from hybridprune.search.context import split_record
    from hybridprune.training import Budget, evaluate, finetune

    cfg, f = ctx.cfg, ctx.cfg.finetune
    start = time.perf_counter()
    source = tmp / f"trial{trial.number}-source.pt"
    artifact = trial.user_attrs[T.ARTIFACTS]["checkpoint"]
    try:
        download_artifact(artifact_store=store, artifact_id=artifact, file_path=str(source))
    except Exception as exc:
        raise HybridPruneError(f"checkpoint artifact {artifact} of trial {trial.number} is missing from "
                               f"{cfg.artifact_dir}: {exc}") from None
    loaded = load_checkpoint(source)
    model = loaded.model.to(ctx.device)
    ft = finetune(model, ctx.data, Budget(epochs=options.epochs), ctx.normalization,
                  teacher=ctx.model if options.distill else None, lr=options.lr or f.lr, batch_size=f.batch_size,
                  seed=cfg.study.seed + trial.number, device=ctx.device, evaluate_val=False,
                  **ctx.precision_kwargs())
    test = evaluate(model, ctx.data.test, ctx.normalization, device=ctx.device, **ctx.precision_kwargs()).top1
    val = evaluate(model, ctx.data.val, ctx.normalization, device=ctx.device, **ctx.precision_kwargs()).top1
    model = model.cpu().eval()
    metrics = {**loaded.metrics, "val_top1": float(val), "test_top1": float(test), "study": cfg.name,
               "trial": trial.number, "refine": {"epochs": options.epochs, "finetune": ft.to_dict()},
               "split": split_record(cfg)}
    ckpt = save_checkpoint(tmp / f"trial{trial.number}-refined.pt", model, ctx.normalization, record=loaded.record,
                           input_size=ctx.input_size, metrics=metrics)
    onnx = export_onnx(model, tmp / f"trial{trial.number}-refined.onnx", (cfg.latency.batch_size, *ctx.input_size))
    return {T.R_EPOCHS: options.epochs, T.R_TEST: float(test), T.R_VAL: float(val),
            "lr": options.lr or f.lr, "distill": options.distill, "seconds": time.perf_counter() - start,
            T.R_ARTIFACTS: {"checkpoint": upload(study, store, ckpt), "onnx": upload(study, store, onnx)}}


def ratio_summary(model_ms: list[float], baseline_ms: list[float], confidence: float = 0.95) -> dict:
    """Median latency and the median per-round ratio to the baseline with its distribution-free CI.

    Args:
        model_ms: The model's latency per round.
        baseline_ms: The baseline's latency in the same rounds (measured next to it).
        confidence: Nominal coverage of the CI (with few rounds it is the whole range of ratios).
    """
    from hybridprune.evaluators.timing import median_ci_indices

    ratios = sorted(m / b for m, b in zip(model_ms, baseline_ms))
    lo, hi = median_ci_indices(len(ratios), confidence)
    return {T.R_LATENCY: statistics.median(model_ms), T.R_RATIO: statistics.median(ratios),
            T.R_RATIO_CI: [ratios[lo], ratios[hi]], "rounds": len(ratios), "confidence": confidence}


def interleaved_latency(measure: Callable[[Path], float], baseline: Path, models: dict[int, Path],
                        rounds: int) -> dict[int, dict]:
    """Time ``models`` and ``baseline`` alternately for ``rounds`` rounds; :func:`ratio_summary` per model.

    Each round measures, for every model in turn, the baseline and then the model, so each ratio
    compares two measurements taken back to back. The baseline's own entry has ratio 1.
    """
    times: dict[int, list[float]] = {n: [] for n in models}
    base: dict[int, list[float]] = {n: [] for n in models}
    alone: list[float] = []
    for _ in range(rounds):
        for n, path in models.items():
            base[n].append(measure(baseline))
            times[n].append(measure(path))
        if not models:
            alone.append(measure(baseline))
    out = {n: ratio_summary(times[n], base[n]) for n in models}
    every = [v for n in models for v in base[n]] + alone
    out[-1] = {T.R_LATENCY: statistics.median(every), T.R_RATIO: 1.0, T.R_RATIO_CI: [1.0, 1.0], "rounds": rounds}
    return out


def _measure_fn(ctx: Any) -> Callable[[Path], float]:
    lat = ctx.cfg.latency
    shape = dict(input_shape=ctx.input_size, batch_size=lat.batch_size, precision=lat.precision)

    def measure(path: Path) -> float:
        with ctx.measure_lock():
            if ctx.timer is not None:
                result = ctx.timer.measure(path, **shape)
            else:
                result = ctx.backend.measure(path, **shape)
        return float(getattr(result, lat.statistic))

    return measure


def save_trial_note(study: Any, trial: Any, text: str) -> None:
    """An optuna-dashboard note on a (finished) trial via ``optuna_dashboard.save_note``."""
    from optuna_dashboard import save_note

    # save_note reads storage, study and _trial_id of a live Trial; a finished one cannot be reopened
    save_note(SimpleNamespace(storage=study._storage, study=study, _trial_id=trial._trial_id), text)


def trial_note(trial: Any, rec: dict) -> str:
    """Markdown note of one refined trial."""
    lo, hi = rec.get(T.R_RATIO_CI, [float("nan")] * 2)
    return "\n".join([
        f"## Refined trial {trial.number}", "",
        f"- fine-tuned {rec[T.R_EPOCHS]:g} more epochs (lr {rec.get('lr')}, distillation {rec.get('distill')})",
        f"- test top-1 {100 * rec[T.R_TEST]:.2f}%, validation top-1 {100 * rec[T.R_VAL]:.2f}% "
        f"(search: {100 * T.accuracy(trial):.2f}%)",
        f"- latency {rec.get(T.R_LATENCY, float('nan')):.3f} ms, {rec.get(T.R_RATIO, float('nan')):.3f} x the "
        f"unpruned baseline (CI {lo:.3f}-{hi:.3f}, interleaved rounds)",
        f"- artifacts: checkpoint `{rec[T.R_ARTIFACTS]['checkpoint']}`, ONNX `{rec[T.R_ARTIFACTS]['onnx']}`", ""])


def study_note(study: Any, rows: list[tuple[Any, dict]]) -> str:
    """Markdown table of all refined trials for the study's note."""
    lines = [f"## Refined front of {study.study_name}", "",
             "| trial | test top-1 | val top-1 | latency ms | ratio to baseline (CI) | note |",
             "|---:|---:|---:|---:|---|---|"]
    for t, r in rows:
        lo, hi = r[T.R_RATIO_CI]
        lines.append(f"| {t.number} | {100 * r[T.R_TEST]:.2f}% | {100 * r[T.R_VAL]:.2f}% | {r[T.R_LATENCY]:.3f} | "
                     f"{r[T.R_RATIO]:.3f} ({lo:.3f}-{hi:.3f}) | {t.user_attrs.get(T.REFERENCE) or ''} |")
    return "\n".join(lines) + "\n"


def refine(ctx: Any, study: Any, trials: list[Any], store: Any, options: RefineOptions,
           on_trial: Callable[[Any, dict, bool], None] | None = None) -> list[tuple[Any, dict]]:
    """Refine ``trials`` (the baseline first), re-time them interleaved, record everything on the study.

    A trial whose stored record has the same ``epochs`` is not fine-tuned again; each new record is
    stored as soon as its fine-tune ends, so a killed run resumes. The latency step always re-runs.

    Returns:
        ``(trial, record)`` pairs in the order of ``trials``.
    """
    from optuna.artifacts import download_artifact

    cfg = ctx.cfg
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    records: list[tuple[Any, dict]] = []
    with tempfile.TemporaryDirectory(prefix="refine-", dir=cfg.run_dir) as tmp:
        tmp = Path(tmp)
        for t in trials:
            rec = T.refined(study, t)
            reused = rec.get(T.R_EPOCHS) == options.epochs and bool(rec.get(T.R_ARTIFACTS))
            if not reused:
                rec = refine_trial(ctx, study, t, store, options, tmp)
                study.set_user_attr(f"{T.REFINED_PREFIX}{t.number}", rec)
            if on_trial is not None:
                on_trial(t, rec, reused)
            records.append((t, rec))
        paths = {}
        for t, rec in records:
            paths[t.number] = tmp / f"trial{t.number}-timed.onnx"
            download_artifact(artifact_store=store, artifact_id=rec[T.R_ARTIFACTS]["onnx"],
                              file_path=str(paths[t.number]))
        base_no = trials[0].number
        start = time.perf_counter()
        timed = interleaved_latency(_measure_fn(ctx), paths[base_no],
                                    {n: p for n, p in paths.items() if n != base_no}, options.rounds)
        timed[base_no] = timed.pop(-1)
        latency_s = time.perf_counter() - start
    out = []
    for t, rec in records:
        rec = {**rec, **timed[t.number]}
        study.set_user_attr(f"{T.REFINED_PREFIX}{t.number}", rec)
        save_trial_note(study, t, trial_note(t, rec))
        out.append((t, rec))
    from optuna_dashboard import save_note

    save_note(study, study_note(study, out))
    study.set_user_attr(T.STUDY_REFINED, {"epochs": options.epochs, "rounds": options.rounds,
                                          "trials": [t.number for t, _ in out], "baseline": base_no,
                                          "latency_seconds": latency_s})
    return out


def plot_refined(rows: list[tuple[Any, dict]], path: Path, title: str) -> Path:
    """Test top-1 vs re-measured latency of the refined trials, the unpruned baseline starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pruned = [(t, r) for t, r in rows if t.user_attrs.get(T.REFERENCE) != "baseline"]
    base = [(t, r) for t, r in rows if t.user_attrs.get(T.REFERENCE) == "baseline"]
    ax.scatter([r[T.R_LATENCY] for _, r in pruned], [100 * r[T.R_TEST] for _, r in pruned], c="tab:red", s=25,
               label="refined trials")
    for t, r in pruned:
        ax.annotate(str(t.number), (r[T.R_LATENCY], 100 * r[T.R_TEST]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.scatter([r[T.R_LATENCY] for _, r in base], [100 * r[T.R_TEST] for _, r in base], marker="*", s=140,
               facecolors="none", edgecolors="black", label="unpruned baseline")
    return save_figure(fig, ax, path, "latency (ms, interleaved with the baseline)", "test top-1 (%)", title)
