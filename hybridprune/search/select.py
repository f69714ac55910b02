"""Pick the most accurate trial that meets a latency budget, and export it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridprune.errors import HybridPruneError
from hybridprune.io import atomic_dir
from hybridprune.search import trials as T
from hybridprune.search.pareto import Row, completed


class NoFeasibleTrial(HybridPruneError):
    """No completed trial meets the budget; ``closest`` lists the nearest ones."""

    def __init__(self, message: str, closest: list[Row]) -> None:
        super().__init__(message)
        self.closest = closest


@dataclass(frozen=True)
class Selection:
    """The chosen trial and where its files went."""

    row: Row
    directory: Path
    files: dict[str, str]


def baseline_latency(study: Any) -> float:
    """Latency of the study's unpruned baseline trial (the enqueued reference).

    Raises:
        NoFeasibleTrial: when the baseline trial has not completed.
    """
    for t in completed(study):
        if t.user_attrs.get(T.REFERENCE) == "baseline":
            return T.latency_ms(t)
    raise NoFeasibleTrial(f"study {study.study_name!r} has no completed unpruned baseline trial to scale "
                          f"--max-latency-ratio by; give --max-latency-ms", [])


def choose(study: Any, max_latency_ms: float, min_accuracy: float | None = None) -> Any:
    """The completed trial with the best accuracy among those with latency <= budget.

    Ties go to the lower latency, then the lower trial number. A latency exactly equal to the
    budget meets it.

    Args:
        study: The Optuna study.
        max_latency_ms: Latency budget (the study's latency statistic).
        min_accuracy: Optional minimum validation accuracy (fraction).

    Returns:
        The ``FrozenTrial``.

    Raises:
        NoFeasibleTrial: when none qualifies (message lists the closest trials).
    """
    refined = T.refined(study)

    def latency(t: Any) -> float:  # a refined trial's re-measured latency replaces the search's
        return float(refined.get(t.number, {}).get(T.R_LATENCY, T.latency_ms(t)))

    trials = [t for t in completed(study) if t.user_attrs.get(T.ARTIFACTS) and T.counts_towards_target(t)]
    ok = [
        t
        for t in trials
        if latency(t) <= max_latency_ms and (min_accuracy is None or T.accuracy(t) >= min_accuracy)
    ]
    if ok:
        return min(ok, key=lambda t: (-T.accuracy(t), latency(t), t.number))
    if not trials:
        raise NoFeasibleTrial(f"study {study.study_name!r} has no completed trials yet", [])

    def gap(t: Any) -> float:
        lat = max(0.0, latency(t) / max_latency_ms - 1.0)
        acc = 0.0 if min_accuracy is None else max(0.0, min_accuracy - T.accuracy(t))
        return lat + acc

    closest = [Row.from_trial(t) for t in sorted(trials, key=gap)[:5]]
    want = f"latency <= {max_latency_ms} ms" + (f" and accuracy >= {min_accuracy}" if min_accuracy is not None else "")
    fastest = min(trials, key=latency)
    raise NoFeasibleTrial(
        f"no completed trial of {len(trials)} meets {want}; the fastest is trial {fastest.number} at "
        f"{latency(fastest):.3f} ms with accuracy {T.accuracy(fastest):.4f}", closest)


def export_trial(study: Any, trial: Any, artifact_dir: str | Path, out: str | Path) -> Selection:
    """Write the trial's checkpoint, ONNX file, record JSON and a short report into ``out``.

    A trial refined by ``refine`` exports its refined checkpoint and ONNX file, and the report
    shows its test top-1 and its latency ratio to the baseline.

    Args:
        study: The study.
        trial: A completed ``FrozenTrial`` with artifacts.
        artifact_dir: The study's artifact store directory.
        out: Destination directory (created).

    Returns:
        A :class:`Selection`.

    Raises:
        HybridPruneError: when an artifact is missing from the store.
    """
    from optuna.artifacts import download_artifact

    from hybridprune.search.storage import get_artifact_store

    out = Path(out)
    store = get_artifact_store(artifact_dir)
    refined = T.refined(study, trial)
    ids = refined.get(T.R_ARTIFACTS) or trial.user_attrs[T.ARTIFACTS]
    row = Row.from_trial(trial)
    names = {"checkpoint": "model.pt", "onnx": "model.onnx", "record": "record.json", "report": "REPORT.md"}
    # the folder is replaced as a whole: a kill never leaves one trial's model beside another's report
    with atomic_dir(out) as tmp:
        for key in ("checkpoint", "onnx"):
            try:
                download_artifact(artifact_store=store, artifact_id=ids[key], file_path=str(tmp / names[key]))
            except Exception as exc:
                raise HybridPruneError(f"artifact {key} ({ids[key]}) of trial {trial.number} is missing from "
                                       f"{artifact_dir}: {exc}") from None
        record = {"study": study.study_name, "trial": trial.number,
                  "values": dict(zip(study.metric_names or [], trial.values)),
                  "params": trial.params, "user_attrs": trial.user_attrs, "constraints": trial.constraints,
                  "refined": refined or None}
        (tmp / names["record"]).write_text(json.dumps(record, indent=2, default=str))
        (tmp / names["report"]).write_text(_report(study, trial, row, refined))
    files = {k: out / v for k, v in names.items()}
    return Selection(row=row, directory=out, files={k: str(v) for k, v in files.items()})


def _refined_lines(r: dict) -> list[str]:
    if not r:
        return []
    lo, hi = r.get(T.R_RATIO_CI) or (float("nan"), float("nan"))
    return [
        f"- refined ({r[T.R_EPOCHS]:g} more epochs): test top-1 {100 * r[T.R_TEST]:.2f}%, "
        f"validation top-1 {100 * r[T.R_VAL]:.2f}%",
        f"- refined latency: {r.get(T.R_LATENCY, float('nan')):.3f} ms, {r.get(T.R_RATIO, float('nan')):.3f} x the "
        f"unpruned baseline (CI {lo:.3f}-{hi:.3f}, {r.get('rounds', '?')} interleaved rounds); model.pt and "
        f"model.onnx are the refined model",
    ]


def _report(study: Any, trial: Any, row: Row, refined: dict | None = None) -> str:
    lat = trial.user_attrs.get(T.LATENCY_RESULT, {})
    before = trial.user_attrs.get(T.ACCURACY_BEFORE)
    return "\n".join(
        [
            f"# {study.study_name}: trial {trial.number}",
            "",
            f"- validation accuracy: {100 * row.accuracy:.2f}% after {trial.user_attrs.get(T.FIDELITY_STEPS, '?')} "
            f"fine-tune steps" + (f" ({100 * float(before):.2f}% before fine-tuning)" if before is not None else ""),
            f"- latency: {row.latency_ms:.3f} ms ({lat.get('backend', '?')} on {lat.get('device', '?')}, "
            f"batch {lat.get('batch_size', '?')}, {lat.get('precision', '?')})",
            f"- params: {row.params:,}  MACs: {row.macs:,}"
            if row.params is not None and row.macs is not None
            else "- params: -",
            *_refined_lines(refined or {}),
            f"- pruning: channel ratio {row.channel_ratio}, {row.pruned_blocks} blocks removed "
            f"({', '.join(trial.user_attrs.get(T.REMOVED_BLOCKS) or []) or 'none'}), "
            f"criterion {row.criterion}, order {row.order}",
            "",
            "Files: model.pt (load with hybridprune.checkpoints.load_checkpoint), model.onnx, record.json.",
            "",
        ]
    )
