"""The Pareto set of a study: rows for tables, a PNG (matplotlib) and an HTML (plotly) plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridprune.io import atomic_path
from hybridprune.search import trials as T


@dataclass(frozen=True)
class Row:
    """One completed trial, as shown in tables and plots."""

    number: int
    accuracy: float
    latency_ms: float
    params: int | None
    macs: int | None
    channel_ratio: float | None
    pruned_blocks: int | None
    criterion: str | None
    order: str | None
    feasible: bool
    reference: str | None

    @classmethod
    def from_trial(cls, t: Any) -> "Row":
        """The row of a completed ``FrozenTrial``."""
        c = t.user_attrs.get(T.CONFIG) or {}
        return cls(
            number=t.number, accuracy=T.accuracy(t), latency_ms=T.latency_ms(t),
            params=t.user_attrs.get(T.PARAMS), macs=t.user_attrs.get(T.MACS),
            channel_ratio=c.get("channel_ratio"), pruned_blocks=c.get("pruned_blocks"),
            criterion=c.get("criterion"), order=c.get("order"),
            feasible=T.feasible(t), reference=t.user_attrs.get(T.REFERENCE),
        )


def completed(study: Any) -> list[Any]:
    """Completed trials of ``study``."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def usable(study: Any) -> list[Any]:
    """Completed trials with a stored model that are not reused duplicates: what refine and select
    can pick from."""
    return [t for t in completed(study) if t.user_attrs.get(T.ARTIFACTS) and T.counts_towards_target(t)]


def reference_rows(study: Any) -> list[Row]:
    """The reference models (``[references] models``) as rows, labelled ``family: <name>``."""
    import dataclasses

    from hybridprune.search.references import NAME, reference_trials

    return [dataclasses.replace(Row.from_trial(r), reference=f"{T.REF_FAMILY}: {r.user_attrs[NAME]}")
            for r in reference_trials(study)]


def pareto_rows(study: Any) -> list[Row]:
    """Feasible Pareto-optimal trials by increasing latency (a reused duplicate shows as its twin)."""
    best = [t for t in study.best_trials if T.counts_towards_target(t)]
    return sorted((Row.from_trial(t) for t in best), key=lambda r: (r.latency_ms, -r.accuracy))


def rich_table(rows: list[Row], title: str):
    """A ``rich.table.Table`` of ``rows``."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("trial", "val acc", "latency ms", "params", "MMACs", "channels cut", "blocks cut", "criterion", "order",
                "reference"):
        table.add_column(col, justify="right" if col not in ("criterion", "order", "reference") else "left")
    for r in rows:
        table.add_row(
            str(r.number), f"{100 * r.accuracy:.2f}%", f"{r.latency_ms:.3f}",
            f"{r.params:,}" if r.params is not None else "-", f"{r.macs / 1e6:.2f}" if r.macs is not None else "-",
            f"{r.channel_ratio:.2f}" if r.channel_ratio is not None else "-",
            str(r.pruned_blocks) if r.pruned_blocks is not None else "-", r.criterion or "-", r.order or "-",
            ", ".join(x for x in (r.reference, None if r.feasible else "infeasible") if x),
        )
    return table


def plot_png(study: Any, path: str | Path, title: str = "") -> Path:
    """Accuracy vs latency of all completed trials, Pareto front and reference points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [Row.from_trial(t) for t in completed(study)]
    front = pareto_rows(study)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = [r for r in rows if r.feasible]
    bad = [r for r in rows if not r.feasible]
    ax.scatter([r.latency_ms for r in ok], [100 * r.accuracy for r in ok], c="tab:blue", s=20, label="trials")
    if bad:
        ax.scatter(
            [r.latency_ms for r in bad], [100 * r.accuracy for r in bad], c="lightgray", s=20, label="infeasible"
        )
    ax.plot(
        [r.latency_ms for r in front], [100 * r.accuracy for r in front], "-o", c="tab:red", ms=5, label="Pareto front"
    )
    for kind, marker in ((T.REF_BASELINE, "*"), (T.REF_PAPER, "s")):
        ref = [r for r in rows if r.reference == kind]
        if ref:
            ax.scatter(
                [r.latency_ms for r in ref],
                [100 * r.accuracy for r in ref],
                marker=marker,
                s=110,
                facecolors="none",
                edgecolors="black",
                label=f"{kind} setting" if kind == T.REF_PAPER else "unpruned baseline",
            )
    family = reference_rows(study)
    if family:
        ax.scatter([r.latency_ms for r in family], [100 * r.accuracy for r in family], marker="D", s=60,
                   c="tab:green", label="reference models")
        for r in family:
            ax.annotate(r.reference.partition(": ")[2], (r.latency_ms, 100 * r.accuracy), fontsize=7,
                        xytext=(4, -8), textcoords="offset points")
    return save_figure(fig, ax, path, "latency (ms)", "validation accuracy (%)", title or study.study_name)


def save_figure(fig: Any, ax: Any, path: str | Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid and legend ``ax``, write ``fig`` to the PNG ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_html(study: Any, path: str | Path, title: str = "") -> Path:
    """Interactive plotly version of :func:`plot_png` (hover shows the configuration)."""
    import plotly.graph_objects as go

    rows = [Row.from_trial(t) for t in completed(study)]
    front = pareto_rows(study)

    def text(r: Row) -> str:
        if r.number < 0:
            return f"{r.reference}<br>params {r.params}"
        return (f"trial {r.number}<br>channels cut {r.channel_ratio}, blocks cut {r.pruned_blocks}<br>{r.criterion} "
                f"{r.order}<br>params {r.params}")

    fig = go.Figure()
    for name, sel, style in (
        ("trials", [r for r in rows if r.feasible], dict(color="royalblue", size=7)),
        ("infeasible", [r for r in rows if not r.feasible], dict(color="lightgray", size=7)),
        (
            "unpruned baseline",
            [r for r in rows if r.reference == T.REF_BASELINE],
            dict(symbol="star", size=14, color="black"),
        ),
        (
            "paper setting",
            [r for r in rows if r.reference == T.REF_PAPER],
            dict(symbol="square-open", size=12, color="black"),
        ),
        ("reference models", reference_rows(study), dict(symbol="diamond", size=11, color="seagreen")),
    ):
        if sel:
            fig.add_trace(go.Scatter(x=[r.latency_ms for r in sel], y=[100 * r.accuracy for r in sel], mode="markers",
                                     name=name, marker=style, text=[text(r) for r in sel], hoverinfo="text+x+y"))
    fig.add_trace(go.Scatter(x=[r.latency_ms for r in front], y=[100 * r.accuracy for r in front], mode="lines+markers",
                             name="Pareto front", line=dict(color="crimson")))
    fig.update_layout(
        title=title or study.study_name, xaxis_title="latency (ms)", yaxis_title="validation accuracy (%)"
    )
    with atomic_path(path, suffix=".html") as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True)
    return Path(path)


def plot_refined(rows: list[tuple[Any, dict]], path: Path, title: str) -> Path:
    """Test top-1 vs re-measured latency of the refined trials, the unpruned baseline starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pruned = [(t, r) for t, r in rows if not T.is_reference(t, T.REF_BASELINE)]
    base = [(t, r) for t, r in rows if T.is_reference(t, T.REF_BASELINE)]
    ax.scatter([r[T.R_LATENCY] for _, r in pruned], [100 * r[T.R_TEST] for _, r in pruned], c="tab:red", s=25,
               label="refined trials")
    for t, r in pruned:
        ax.annotate(str(t.number), (r[T.R_LATENCY], 100 * r[T.R_TEST]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.scatter([r[T.R_LATENCY] for _, r in base], [100 * r[T.R_TEST] for _, r in base], marker="*", s=140,
               facecolors="none", edgecolors="black", label="unpruned baseline")
    return save_figure(fig, ax, path, "latency (ms: ratio to the baseline x its reference latency)",
                       "test top-1 (%)", title)
