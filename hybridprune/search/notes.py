"""optuna-dashboard notes of a refined study: one per refined trial and a table on the study.

The dashboard shows a trial's note beside its parameters, so a refined trial's note names its
refined artifacts by file (``refined checkpoint``/``refined ONNX``) next to their ids.
"""

from __future__ import annotations

from typing import Any

from hybridprune.search import trials as T
from hybridprune.search._optuna import save_finished_trial_note


def trial_note(trial: Any, rec: dict) -> str:
    """Markdown note of one refined trial."""
    lo, hi = rec.get(T.R_RATIO_CI, [float("nan")] * 2)
    art = rec[T.R_ARTIFACTS]
    return "\n".join([
        f"## Refined trial {trial.number}", "",
        f"- fine-tuned {rec[T.R_EPOCHS]:g} more epoch(s) (lr {rec.get(T.R_LR)}, distillation {rec.get(T.R_DISTILL)}, "
        f"weight {rec.get(T.R_DISTILL_WEIGHT)})",
        f"- test top-1 {100 * rec[T.R_TEST]:.2f}%, validation top-1 {100 * rec[T.R_VAL]:.2f}% "
        f"(search: {100 * T.accuracy(trial):.2f}%)",
        f"- latency {rec.get(T.R_LATENCY, float('nan')):.3f} ms = {rec.get(T.R_RATIO, float('nan')):.3f} x the "
        f"study's reference baseline latency (ratio CI {lo:.3f}-{hi:.3f}, {rec.get(T.R_ROUNDS, '?')} rounds "
        f"interleaved with the baseline)",
        f"- refined files, in the study's refined artifact store: `trial{trial.number}-refined.pt` (checkpoint, id "
        f"`{art['checkpoint']}`) and `trial{trial.number}-refined.onnx` (id `{art['onnx']}`); "
        f"`hybridprune select` exports both", ""])


def study_note(study: Any, rows: list[tuple[Any, dict]]) -> str:
    """Markdown table of all refined trials for the study's note."""
    lines = [f"## Refined front of {study.study_name}", "",
             "| trial | test top-1 | val top-1 | latency ms | latency ratio to baseline (CI) | reference |",
             "|---:|---:|---:|---:|---|---|"]
    for t, r in rows:
        lo, hi = r[T.R_RATIO_CI]
        label = t.user_attrs.get(T.REFERENCE) or ""
        if t.number < 0:
            label = f"{label}: {t.user_attrs.get(T.REFERENCE_NAME)}"
        lines.append(f"| {t.number} | {100 * r[T.R_TEST]:.2f}% | {100 * r[T.R_VAL]:.2f}% | {r[T.R_LATENCY]:.3f} | "
                     f"{r[T.R_RATIO]:.3f} ({lo:.3f}-{hi:.3f}) | {label} |")
    return "\n".join(lines) + "\n"


OBJECTIVE_WORDS = {
    T.ACCURACY: "validation top-1 after the trial's fine-tune, a fraction (0.93 = 93%), maximised",
    T.LATENCY_MS: "latency in ms on the study basis (ratio to the unpruned baseline timed next to it x the "
                  "reference baseline latency), minimised",
    T.PARAMS: "parameter count, minimised",
    T.MACS: "multiply-accumulates per image, minimised",
}


def about_note(study: Any) -> str:
    """What the dashboard shows: the objectives and their units, the constraints, the reference points."""
    names = study.metric_names or list(T.BASE_OBJECTIVES)
    lines = [f"## About {study.study_name}", "", "**Objectives** (the dashboard's metric names):"]
    lines += [f"- `{n}`: {OBJECTIVE_WORDS.get(n, n)}" for n in names]
    lines += ["", "**Constraints**: each trial records `constraints` as values that are <= 0 when met: "
              "`min_accuracy` is min_accuracy - accuracy, `max_latency_ms` is latency - budget. A trial with any "
              "value > 0 is infeasible: greyed out in the plots and never on the Pareto front.", "",
              "**Reference trials** carry a note and the user attribute `reference`: `baseline` is the unpruned "
              "model, `paper` the settings of Sadaqa & Liu (30% of channels, 1-9 blocks); reference models "
              "(`family`) are listed below when the study has any.", ""]
    split = study.user_attrs.get(T.STUDY_SPLIT) or {}
    if split.get("val"):
        lines += [f"**Data**: {split['val']}; {split.get('test', '')}.", ""]
    return "\n".join(lines)


def reference_trial_note(label: str) -> str:
    """The note of an enqueued reference trial (baseline, paper setting)."""
    what = {T.REF_BASELINE: "the unpruned baseline: the accuracy and latency every trial is compared with",
            T.REF_PAPER: "a setting of the reference paper (Sadaqa & Liu, ECML PKDD 2025): 30% of channels and "
                         "the number of blocks in its parameters"}.get(label, label)
    return f"## Reference point: {label}\n\nThis trial is {what}. It always runs to the last rung.\n"


def references_note(study: Any) -> str:
    """Markdown table of the study's reference models (``[references] models``), or ``""``."""
    from hybridprune.search.references import NAME, reference_trials

    refs = reference_trials(study)
    if not refs:
        return ""
    lines = ["## Reference models", "", "Models a user could pick instead of a pruned one, adapted and timed the "
             "same way (validation top-1; latency on the study basis, next to the baseline).", "",
             "| reference | validation top-1 | latency ms | latency ratio | MMACs |", "|---|---:|---:|---:|---:|"]
    for r in refs:
        ratio, macs = r.user_attrs.get(T.LATENCY_RATIO, float("nan")), r.user_attrs.get(T.MACS, 0) / 1e6
        lines.append(f"| {r.user_attrs[NAME]} | {100 * T.accuracy(r):.2f}% | {T.latency_ms(r):.3f} | "
                     f"{ratio:.3f} | {macs:.1f} |")
    return "\n".join(lines) + "\n"


def save_study_note(study: Any, rows: list[tuple[Any, dict]] | None = None) -> None:
    """The study's dashboard note: what it shows, its reference models, then (once refined) the refined front."""
    from optuna_dashboard import get_note, save_note

    parts = [about_note(study), references_note(study), study_note(study, rows) if rows else ""]
    body = "\n".join(p for p in parts if p)
    if get_note(study) != body:  # a resumed run adds no new version of the same note to the storage
        save_note(study, body)


def save_refined_notes(study: Any, rows: list[tuple[Any, dict]]) -> None:
    """Write every refined trial's note and the study's refined-front table."""
    for t, rec in rows:
        if t.number >= 0:  # a reference model is no Optuna trial: it has a row in the study's note
            save_finished_trial_note(study, t, trial_note(t, rec))
    save_study_note(study, rows)
