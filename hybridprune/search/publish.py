"""``hybridprune publish``: a refined study's front as a results folder anyone can re-measure.

Writes into ``--out`` (all of it or nothing, and only over an empty folder or an earlier publish):

* the ONNX file (static batch, as ``refine`` exported it) of the refined baseline, of every
  refined pruned model on the front (test top-1 against latency ratio), of the best refined paper
  settings and of every refined reference model;
* ``front.json``: one entry per published model with its test top-1 *measured from that ONNX
  file* with ONNX Runtime on the whole test split, MACs, parameters, latency on the study basis
  and its ratio to the baseline re-timed by the study's one latency step (interleaved rounds),
  configuration, input normalisation, the split and the refine budget;
* ``front.png`` and ``README.md`` (headline, table, machine, command).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from hybridprune.errors import HybridPruneError
from hybridprune.io import atomic_dir
from hybridprune.search import trials as T
from hybridprune.search.fidelity import nondominated_fronts

MARKER = "front.json"
PAPER_KEPT = 2  # the best refined paper settings published beside the front


class Entry:
    """The keys of a ``front.json`` entry (``benchmarks/verify_results.py`` reads them on its own)."""

    ONNX = "onnx"                          # the file name in the folder
    TRIAL = "trial"                        # the study's trial number
    REFERENCE = T.REFERENCE                # baseline, paper, family, or None for a searched model
    REFERENCE_NAME = T.REFERENCE_NAME
    TEST_TOP1 = "test_top1"                # % measured from the ONNX file with ONNX Runtime
    TEST_TOP1_PYTORCH = "test_top1_pytorch"  # % refine measured in PyTorch
    VAL_TOP1_SEARCH = "val_top1_search"    # % the search saw
    MACS = "macs"
    PARAMS = "params"
    CONFIG = "config"
    FINETUNE_STEPS_SEARCH = "finetune_steps_search"
    REFINE_EPOCHS = "refine_epochs"
    MEAN = "mean"                          # input normalisation
    STD = "std"
    SPLIT = "split"                        # name and images of the test split, plus its SplitRecord
    LATENCY_MS = "latency_ms"              # ratio x the study's reference baseline latency
    LATENCY_RATIO = "latency_ratio"        # median per-round ratio to the baseline timed next to it
    LATENCY_RATIO_CI = "latency_ratio_ci"
    LATENCY_ROUNDS = "latency_rounds"
    LATENCY_MEASURED_MS = "latency_measured_ms"
    LATENCY_BACKEND = "latency_backend"


E = Entry


def published_name(trial: Any) -> str:
    """The ONNX file name of a published trial."""
    if T.is_reference(trial, T.REF_BASELINE):
        return "baseline.onnx"
    if T.is_reference(trial, T.REF_FAMILY):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in trial.user_attrs.get(T.REFERENCE_NAME, ""))
        return f"reference-{safe or -trial.number}.onnx"
    return f"trial{trial.number}.onnx"


def nondominated(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (accuracy max, cost min) points no other point dominates."""
    import numpy as np

    return [int(i) for i in nondominated_fronts(np.array([[-a, c] for a, c in points]))[0]] if points else []


def choose_front(entries: list[dict]) -> list[dict]:
    """The baseline, the non-dominated searched models, the best paper settings and every family reference."""
    base = [e for e in entries if e[E.REFERENCE] == T.REF_BASELINE]
    searched = [e for e in entries if not e[E.REFERENCE]]
    keep = nondominated([(e[E.TEST_TOP1], e[E.LATENCY_RATIO]) for e in searched])
    paper = sorted((e for e in entries if e[E.REFERENCE] == T.REF_PAPER), key=lambda e: -e[E.TEST_TOP1])
    family = [e for e in entries if e[E.REFERENCE] == T.REF_FAMILY]
    front = sorted((searched[i] for i in keep), key=lambda e: e[E.LATENCY_RATIO])
    return base + front + paper[:PAPER_KEPT] + family


def publish(cfg: Any, study: Any, out: str | Path, *, rounds: int = 7,
            say: Callable[[str], None] = print) -> list[dict]:
    """Score, re-time and write the refined front of ``study`` into ``out``.

    Raises:
        HybridPruneError: the study is not refined, or its baseline is not; ``out`` is a folder
        this command did not write.
    """
    refined = T.refined(study)
    base = T.baseline_trial(study, with_artifacts=True)
    if not refined:
        raise HybridPruneError(f"study {cfg.name!r} has not been refined; run: hybridprune refine STUDY")
    if base is None or base.number not in refined:
        raise HybridPruneError(f"the unpruned baseline of study {cfg.name!r} has not been refined; run: "
                               f"hybridprune refine STUDY")
    with atomic_dir(out, marker=MARKER) as tmp:
        front = _write(cfg, study, refined, base, tmp, rounds, say)
    return front


def _write(cfg: Any, study: Any, refined: dict, base: Any, out: Path, rounds: int, say: Callable) -> list[dict]:
    from optuna.artifacts import download_artifact

    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.evaluators.onnx_eval import onnx_top1
    from hybridprune.evaluators.timing import machine_description
    from hybridprune.search.context import build_backend, load_data
    from hybridprune.search.latency import BASELINE, StudyLatency, Timed
    from hybridprune.search.references import by_number, model_name_of
    from hybridprune.search.split import split_record
    from hybridprune.search.storage import get_artifact_store

    store = get_artifact_store(cfg.refined_artifact_dir)
    by_no = by_number(study)
    test = load_data(cfg).test
    images, labels = test.images.numpy(), test.labels.numpy()
    entries, models = [], {}
    with tempfile.TemporaryDirectory(prefix="publish-", dir=out.parent) as scratch:
        for n, rec in sorted(refined.items()):
            t = by_no[n]
            path = out / published_name(t)
            ckpt = Path(scratch) / f"{n}.pt"
            ids = rec[T.R_ARTIFACTS]
            download_artifact(artifact_store=store, artifact_id=ids[T.ARTIFACT_ONNX], file_path=str(path))
            download_artifact(artifact_store=store, artifact_id=ids[T.ARTIFACT_CHECKPOINT], file_path=str(ckpt))
            loaded = load_checkpoint(ckpt, model_name_of(cfg, t))
            norm = loaded.normalization
            acc = 100 * onnx_top1(path, images, labels, norm.mean, norm.std)
            say(f"trial {n}: test top-1 {acc:.2f}% from {path.name} (refine measured {100 * rec[T.R_TEST]:.2f}% "
                f"in PyTorch)")
            models[n] = Timed(loaded.model.eval(), path)
            entries.append({E.ONNX: path.name, E.TRIAL: n, E.REFERENCE: t.user_attrs.get(T.REFERENCE),
                            E.REFERENCE_NAME: t.user_attrs.get(T.REFERENCE_NAME),
                            E.TEST_TOP1: round(acc, 2), E.TEST_TOP1_PYTORCH: round(100 * rec[T.R_TEST], 2),
                            E.VAL_TOP1_SEARCH: round(100 * T.accuracy(t), 2), E.MACS: t.user_attrs.get(T.MACS),
                            E.PARAMS: t.user_attrs.get(T.PARAMS), E.CONFIG: t.user_attrs.get(T.CONFIG),
                            E.FINETUNE_STEPS_SEARCH: t.user_attrs.get(T.FIDELITY_STEPS),
                            E.REFINE_EPOCHS: rec[T.R_EPOCHS], E.MEAN: list(norm.mean), E.STD: list(norm.std),
                            E.SPLIT: {"name": "test", "images": len(labels), **split_record(cfg)}})
        latency = StudyLatency(cfg.latency, build_backend(cfg), tuple(loaded.input_size),
                               lock_path=cfg.run_dir / "latency.lock", baseline=models[base.number].module,
                               work_dir=Path(scratch))
        try:
            timed = latency.interleaved(study, models[base.number],
                                        {n: m for n, m in models.items() if n != base.number}, rounds,
                                        on_round=lambda d, r: say(f"re-timing against the baseline: round {d}/{r}"))
        finally:
            latency.close()
    timed[base.number] = timed.pop(BASELINE)
    how = f"{cfg.latency.backend} {json.dumps(cfg.latency.options, sort_keys=True)}, batch {cfg.latency.batch_size}"
    for e in entries:
        r = timed[e[E.TRIAL]]
        e.update({E.LATENCY_MS: round(r[T.R_LATENCY], 4), E.LATENCY_RATIO: round(r[T.R_RATIO], 4),
                  E.LATENCY_RATIO_CI: [round(v, 4) for v in r[T.R_RATIO_CI]], E.LATENCY_ROUNDS: rounds,
                  E.LATENCY_MEASURED_MS: round(r[T.R_MEASURED], 4), E.LATENCY_BACKEND: how})
    front = choose_front(entries)
    for e in entries:
        if e not in front:
            (out / e[E.ONNX]).unlink()
    (out / MARKER).write_text(json.dumps(front, indent=1) + "\n")
    _plot(front, out / "front.png", cfg.name)
    (out / "README.md").write_text(readme(cfg, front, machine_description(), how))
    return front


def _plot(front: list[dict], path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, marker, color, label in ((None, "o", "tab:red", "refined pruned models (front)"),
                                       (T.REF_PAPER, "x", "tab:blue", "refined paper settings"),
                                       (T.REF_FAMILY, "D", "tab:green", "reference models"),
                                       (T.REF_BASELINE, "*", "black", "refined unpruned baseline")):
        es = [e for e in front if e[E.REFERENCE] == kind]
        if not es:
            continue
        ax.scatter([e[E.LATENCY_RATIO] for e in es], [e[E.TEST_TOP1] for e in es], marker=marker, c=color,
                   s=140 if kind == T.REF_BASELINE else 30, label=label)
        for e in es:
            ax.annotate(str(e[E.TRIAL]), (e[E.LATENCY_RATIO], e[E.TEST_TOP1]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set(xlabel="latency ratio to the baseline (interleaved rounds)", ylabel="test top-1 (%, from the ONNX file)",
           title=f"{name}: published models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme(cfg: Any, front: list[dict], machine: str, how: str) -> str:
    """The results folder's README: the table, the split, the machine and how latency was timed."""
    split = front[0][E.SPLIT]
    lines = [f"# {cfg.name}: published models", "", "![front](front.png)", "",
             f"Test top-1 is each ONNX file's own score with ONNX Runtime on the {split['images']} images of the "
             f"`{split['name']}` split; latency is the study's latency step ({how}), each model timed "
             f"in {front[0][E.LATENCY_ROUNDS]} rounds interleaved with the refined baseline; `latency ms` is the "
             f"ratio times the study's reference baseline latency. Machine: {machine}.", "",
             "| onnx | trial | reference | test top-1 | MMACs | params | latency ms | ratio (CI) | config |",
             "|---|---:|---|---:|---:|---:|---:|---|---|"]
    for e in front:
        c = e[E.CONFIG] or {}
        desc = ", ".join(f"{k} {v}" for k, v in c.items()) if e[E.REFERENCE] != T.REF_BASELINE else "unpruned"
        lo, hi = e[E.LATENCY_RATIO_CI]
        macs = f"{e[E.MACS] / 1e6:.1f}" if e[E.MACS] is not None else "-"
        params = f"{e[E.PARAMS]:,}" if e[E.PARAMS] is not None else "-"
        lines.append(f"| {e[E.ONNX]} | {e[E.TRIAL]} | {e[E.REFERENCE] or ''} | {e[E.TEST_TOP1]:.2f}% | {macs} | "
                     f"{params} | {e[E.LATENCY_MS]:.3f} | {e[E.LATENCY_RATIO]:.3f} ({lo:.3f}-{hi:.3f}) | {desc} |")
    lines += ["", "Re-measure with code that is not hybridprune's:", "", "```",
              "python benchmarks/verify_results.py DIR --data DATA", "```", ""]
    return "\n".join(lines)
