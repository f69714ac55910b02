"""Pick the most accurate trial that meets a latency budget, and export it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hybridprune.errors import HybridPruneError
from hybridprune.io import atomic_dir
from hybridprune.search import trials as T
from hybridprune.search.pareto import Row, usable


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
    test_top1: float | None = None  # held-out test top-1 of the exported model (refined or scored at export)


@dataclass(frozen=True)
class Candidate:
    """A trial as ``select`` compares it: accuracy and latency on one basis."""

    trial: Any
    accuracy: float
    latency_ms: float
    ratio: float


@dataclass(frozen=True)
class Basis:
    """What ``select`` compares: the search's numbers, or, once a study is refined, refine's.

    Attributes:
        name: ``"search"`` or ``"refined"``.
        baseline_ms: The study's reference baseline latency (the unpruned baseline trial's).
        candidates: Every trial that can be exported, on this basis.
        baseline: The unpruned baseline's own candidate (``None`` when it has none).
    """

    name: str
    baseline_ms: float
    candidates: list[Candidate]
    baseline: Candidate | None

    def describe(self) -> str:
        """One line saying what is compared."""
        refs = sum(T.is_reference(c.trial, T.REF_FAMILY) for c in self.candidates)
        n = f"{len(self.candidates) - refs}" + (f" (+{refs} reference model{'s' if refs > 1 else ''})" if refs else "")
        if self.name == "refined":
            return (f"basis: the {n} refined trials (validation top-1 after refine; latency = "
                    f"ratio to the baseline, timed interleaved, x the reference baseline latency "
                    f"{self.baseline_ms:.3f} ms)")
        return (f"basis: the {n} search trials (validation top-1 after the search's fine-tune; "
                f"latency on the study basis, reference baseline latency {self.baseline_ms:.3f} ms)")


def baseline_latency(study: Any) -> float:
    """Latency of the study's unpruned baseline trial (the reference every budget ratio scales).

    Raises:
        NoFeasibleTrial: when the baseline trial has not completed.
    """
    base = T.baseline_trial(study)
    if base is None:
        raise NoFeasibleTrial(f"study {study.study_name!r} has no completed unpruned baseline trial to scale "
                              f"--max-latency-ratio by; give --max-latency-ms", [])
    return T.latency_ms(base)


def basis(study: Any) -> Basis:
    """The candidates of ``select``: refined trials once the study has refined ones, else all trials.

    Refined and unrefined numbers are never mixed: a refined model's longer fine-tune and its
    re-timing would otherwise compete with search numbers of another fine-tune and another load.
    """
    from hybridprune.search.references import reference_trials

    base = T.baseline_trial(study)
    base_ms = T.latency_ms(base) if base is not None else float("nan")
    pickable = usable(study) + reference_trials(study)
    refined = T.refined(study)
    timed = [t for t in pickable if refined.get(t.number, {}).get(T.R_RATIO) is not None]
    if timed and base is not None:
        cands = [Candidate(t, float(refined[t.number][T.R_VAL]), refined[t.number][T.R_RATIO] * base_ms,
                           float(refined[t.number][T.R_RATIO])) for t in timed]
        name = "refined"
    else:
        cands = [Candidate(t, T.accuracy(t), T.latency_ms(t), T.latency_ms(t) / base_ms) for t in pickable]
        name = "search"
    own = next((c for c in cands if base is not None and c.trial.number == base.number), None)
    return Basis(name, base_ms, cands, own)


def choose(study: Any, max_latency_ms: float, min_accuracy: float | None = None,
           on: Basis | None = None, allow_reference: bool = False) -> Candidate:
    """The candidate with the best accuracy among those with latency <= budget, on one basis.

    Ties go to the lower latency, then the lower trial number. A latency exactly equal to the
    budget meets it.

    Args:
        study: The Optuna study.
        max_latency_ms: Latency budget (the study's latency statistic, on the study basis).
        min_accuracy: Optional minimum validation accuracy (fraction).
        on: The basis (default: :func:`basis` of ``study``).
        allow_reference: A reference model (``[references] models``) may be chosen too.

    Returns:
        The chosen :class:`Candidate`.

    Raises:
        NoFeasibleTrial: when none qualifies (message lists the closest trials).
    """
    on = on or basis(study)
    cands = [c for c in on.candidates if allow_reference or not is_family(c)]
    ok = [c for c in cands if c.latency_ms <= max_latency_ms and (min_accuracy is None or c.accuracy >= min_accuracy)]
    if ok:
        return min(ok, key=lambda c: (-c.accuracy, c.latency_ms, c.trial.number))
    if not cands:
        raise NoFeasibleTrial(f"study {study.study_name!r} has no completed trials yet", [])

    def gap(c: Candidate) -> float:
        lat = max(0.0, c.latency_ms / max_latency_ms - 1.0)
        acc = 0.0 if min_accuracy is None else max(0.0, min_accuracy - c.accuracy)
        return lat + acc

    closest = [_row(c) for c in sorted(cands, key=gap)[:5]]
    want = f"latency <= {max_latency_ms:.3f} ms" + (
        f" and accuracy >= {100 * min_accuracy:.2f}%" if min_accuracy is not None else "")
    fastest = min(cands, key=lambda c: c.latency_ms)
    raise NoFeasibleTrial(
        f"no completed trial of {len(cands)} ({on.name} basis) meets {want}; the fastest is trial "
        f"{fastest.trial.number} at {fastest.latency_ms:.3f} ms with accuracy {100 * fastest.accuracy:.2f}%", closest)


def is_family(c: Candidate) -> bool:
    """Whether a candidate is a reference model rather than a trial of the study."""
    return T.is_reference(c.trial, T.REF_FAMILY)


def reference_note(on: Basis, chosen: Candidate, max_latency_ms: float) -> str | None:
    """One line naming the reference model that meets the budget and beats every pruned model, if any."""
    from hybridprune.search.references import NAME

    pruned = [c for c in on.candidates if not is_family(c) and c.latency_ms <= max_latency_ms]
    best = max((c.accuracy for c in pruned), default=float("-inf"))
    better = [c for c in on.candidates if is_family(c) and c.latency_ms <= max_latency_ms and c.accuracy > best]
    if not better:
        return None
    top = max(better, key=lambda c: (c.accuracy, -c.latency_ms))
    what = "exported instead" if top is chosen else "pass --allow-reference to export it instead"
    return (f"note: reference model {top.trial.user_attrs[NAME]} meets the budget with a higher validation top-1 "
            f"than every pruned model: {100 * top.accuracy:.2f}% at {top.latency_ms:.3f} ms ({top.ratio:.3f} x the "
            f"baseline) against {100 * chosen.accuracy:.2f}% ({what})")


def _row(c: Candidate) -> Row:
    """The table row of a candidate, with its basis' accuracy and latency."""
    import dataclasses

    return dataclasses.replace(Row.from_trial(c.trial), accuracy=c.accuracy, latency_ms=c.latency_ms)


def drop_warning(on: Basis, chosen: Candidate, points: float = 5.0) -> str | None:
    """A warning when ``chosen`` is more than ``points`` below the baseline, naming the nearest better one.

    The nearest better one is the fastest candidate within ``points`` of the baseline.
    """
    if on.baseline is None or on.baseline.accuracy - chosen.accuracy <= points / 100:
        return None
    close = [c for c in on.candidates if on.baseline.accuracy - c.accuracy <= points / 100 and not is_family(c)]
    better = min(close, key=lambda c: (c.latency_ms, -c.accuracy, c.trial.number))
    return (f"warning: trial {chosen.trial.number} is {100 * (on.baseline.accuracy - chosen.accuracy):.2f} points "
            f"below the unpruned baseline ({100 * chosen.accuracy:.2f}% vs {100 * on.baseline.accuracy:.2f}%); the "
            f"fastest trial within {points:g} points is trial {better.trial.number}: {100 * better.accuracy:.2f}% at "
            f"{better.latency_ms:.3f} ms ({better.ratio:.3f} x the baseline)")


def export_trial(study: Any, trial: Any, artifact_dir: str | Path, out: str | Path,
                 test_top1: Callable[[Path], float] | None = None,
                 refined_dir: str | Path | None = None) -> Selection:
    """Write the trial's checkpoint, ONNX file, record JSON and a short report into ``out``.

    A trial refined by ``refine`` exports its refined checkpoint and ONNX file, and the report
    shows its test top-1 and its latency ratio to the baseline.

    Args:
        study: The study.
        trial: A completed ``FrozenTrial`` with artifacts.
        artifact_dir: The study's artifact store directory.
        out: Destination directory (created; only an empty folder or an earlier export is replaced).
        test_top1: Scores the exported ``model.pt`` on the held-out test split (a fraction), for the
            report of a trial that was not refined.
        refined_dir: The artifact store directory of refined models (default: ``artifact_dir``).

    Returns:
        A :class:`Selection`.

    Raises:
        HybridPruneError: when an artifact is missing from the store.
    """
    from optuna.artifacts import download_artifact

    from hybridprune.search.storage import get_artifact_store

    out = Path(out)
    refined = T.refined(study, trial)
    if refined.get(T.R_ARTIFACTS) and refined_dir is not None:
        artifact_dir = refined_dir
    store = get_artifact_store(artifact_dir)
    ids = refined.get(T.R_ARTIFACTS) or trial.user_attrs[T.ARTIFACTS]
    row = Row.from_trial(trial)
    names = {T.ARTIFACT_CHECKPOINT: "model.pt", T.ARTIFACT_ONNX: "model.onnx", "record": "record.json",
             "report": "REPORT.md"}
    # the folder is replaced as a whole: a kill never leaves one trial's model beside another's report
    with atomic_dir(out, marker="record.json") as tmp:
        for key in (T.ARTIFACT_CHECKPOINT, T.ARTIFACT_ONNX):
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
        test = None if refined or test_top1 is None else test_top1(tmp / names[T.ARTIFACT_CHECKPOINT])
        (tmp / names["report"]).write_text(_report(study, trial, row, refined, test))
    files = {k: out / v for k, v in names.items()}
    if refined.get(T.R_TEST) is not None:
        test = float(refined[T.R_TEST])
    return Selection(row=row, directory=out, files={k: str(v) for k, v in files.items()}, test_top1=test)


def _refined_lines(r: dict) -> list[str]:
    if not r:
        return []
    lo, hi = r.get(T.R_RATIO_CI) or (float("nan"), float("nan"))
    return [
        f"- refined ({r[T.R_EPOCHS]:g} more epochs): test top-1 {100 * r[T.R_TEST]:.2f}%, "
        f"validation top-1 {100 * r[T.R_VAL]:.2f}%",
        f"- refined latency: {r.get(T.R_LATENCY, float('nan')):.3f} ms, {r.get(T.R_RATIO, float('nan')):.3f} x the "
        f"unpruned baseline (CI {lo:.3f}-{hi:.3f}, {r.get(T.R_ROUNDS, '?')} interleaved rounds); model.pt and "
        f"model.onnx are the refined model",
    ]


def _reference_lines(study: Any) -> list[str]:
    """The reference models beside the exported one (``[references] models``)."""
    from hybridprune.search.references import NAME, reference_trials

    out = []
    for r in reference_trials(study):
        ref = T.refined(study, r)
        test = f", test top-1 {100 * ref[T.R_TEST]:.2f}% refined" if ref.get(T.R_TEST) is not None else ""
        out.append(f"- reference model {r.user_attrs[NAME]}: validation top-1 {100 * T.accuracy(r):.2f}%{test}, "
                   f"latency {T.latency_ms(r):.3f} ms ({r.user_attrs.get(T.LATENCY_RATIO, float('nan')):.3f} x the "
                   f"baseline), {r.user_attrs.get(T.MACS, 0) / 1e6:.1f} MMACs")
    return out


def _report(study: Any, trial: Any, row: Row, refined: dict | None = None, test: float | None = None) -> str:
    lat = trial.user_attrs.get(T.LATENCY_RESULT, {})
    before = trial.user_attrs.get(T.ACCURACY_BEFORE)
    split = study.user_attrs.get(T.STUDY_SPLIT) or {}
    return "\n".join(
        [
            f"# {study.study_name}: trial {trial.number}",
            "",
            *(f"- {split[k]}" for k in ("val", "test") if split.get(k)),
            f"- validation accuracy: {100 * row.accuracy:.2f}% after {trial.user_attrs.get(T.FIDELITY_STEPS, '?')} "
            f"fine-tune steps" + (f" ({100 * float(before):.2f}% before fine-tuning)" if before is not None else ""),
            *([f"- test top-1 (held out, not refined): {100 * test:.2f}%"] if test is not None else []),
            f"- latency: {row.latency_ms:.3f} ms ({lat.get('backend', '?')} on {lat.get('device', '?')}, "
            f"batch {lat.get('batch_size', '?')}, {lat.get('precision', '?')})",
            f"- params: {row.params:,}  MACs: {row.macs:,}"
            if row.params is not None and row.macs is not None
            else "- params: -",
            *_refined_lines(refined or {}),
            *_reference_lines(study),
            f"- pruning: channel ratio {row.channel_ratio}, {row.pruned_blocks} blocks removed "
            f"({', '.join(trial.user_attrs.get(T.REMOVED_BLOCKS) or []) or 'none'}), "
            f"criterion {row.criterion}, order {row.order}",
            "",
            "Files: model.pt (load with hybridprune.checkpoints.load_checkpoint), model.onnx, record.json.",
            "",
        ]
    )
