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

``also``: other studies of the same model, data and split (single-mode searches, another space),
refined with the same budget. Their refined searched models join the candidates for the front,
re-scored and re-timed next to *this* study's baseline like its own; their entries name their
``study`` and their files are ``<study>-trial<N>.onnx``. Their baselines and references are the
same models as this study's and are not published twice.
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
    STUDY = "study"                        # the study the trial belongs to
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


def published_name(trial: Any, study_name: str | None = None) -> str:
    """The ONNX file name of a published trial (``study_name``: a trial of an ``also`` study)."""
    if study_name is not None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_name)
        return f"{safe}-trial{trial.number}.onnx"
    if T.is_reference(trial, T.REF_BASELINE):
        return "baseline.onnx"
    if T.is_reference(trial, T.REF_FAMILY):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in trial.user_attrs.get(T.REFERENCE_NAME, ""))
        return f"reference-{safe or -trial.number}.onnx"
    return f"trial{trial.number}.onnx"


def dominates(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """Whether (accuracy, cost) point ``p`` is at least as good as ``q`` in both and better in one."""
    return p[0] >= q[0] and p[1] <= q[1] and (p[0] > q[0] or p[1] < q[1])


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


def publish(cfg: Any, study: Any, out: str | Path, *, rounds: int = 7, also: list[tuple[Any, Any]] = (),
            say: Callable[[str], None] = print) -> list[dict]:
    """Score, re-time and write the refined front of ``study`` into ``out``.

    Args:
        also: ``(config, study)`` pairs of other studies whose refined searched models join the
            candidates (see the module docstring).

    Raises:
        HybridPruneError: the study is not refined, or its baseline is not; an ``also`` study has
        another name clash, data split, model checkpoint or refine budget, or nothing refined;
        ``out`` is a folder this command did not write.
    """
    refined = T.refined(study)
    base = T.baseline_trial(study, with_artifacts=True)
    if not refined:
        raise HybridPruneError(f"study {cfg.name!r} has not been refined; run: hybridprune refine STUDY")
    if base is None or base.number not in refined:
        raise HybridPruneError(f"the unpruned baseline of study {cfg.name!r} has not been refined; run: "
                               f"hybridprune refine STUDY")
    sources = [(cfg, study, None, refined)] + _also(cfg, refined[base.number], also)
    with atomic_dir(out, marker=MARKER) as tmp:
        front = _write(cfg, study, sources, base, tmp, rounds, say)
    return front


def _also(cfg: Any, base_rec: dict, also: list[tuple[Any, Any]]) -> list[tuple[Any, Any, str, dict]]:
    """The ``also`` studies as sources of refined searched models, each checked against ``cfg``."""
    from hybridprune.search.split import split_record

    names, out = {cfg.name}, []
    for c, st in also:
        if c.name in names:
            raise HybridPruneError(f"--also: study {c.name!r} is given twice (or is the published study itself)")
        names.add(c.name)
        same = {"data.root": (c.data.root, cfg.data.root), "split": (split_record(c), split_record(cfg)),
                "model.checkpoint": (c.model.checkpoint, cfg.model.checkpoint)}
        for what, (theirs, ours) in same.items():
            if theirs != ours:
                raise HybridPruneError(f"--also: study {c.name!r} has another {what} ({theirs}) than {cfg.name!r} "
                                       f"({ours}); only studies of the same model and split can share a front")
        every = T.refined(st)
        epochs = {r[T.R_EPOCHS] for r in every.values()}
        if epochs and epochs != {base_rec[T.R_EPOCHS]}:
            raise HybridPruneError(f"--also: study {c.name!r} was refined for {sorted(epochs)} epoch(s), "
                                   f"{cfg.name!r} for {base_rec[T.R_EPOCHS]}: refine both with one budget")
        # reference models are numbered below 0 (st.trials[-1] would be the last searched trial)
        recs = {n: r for n, r in every.items() if n >= 0 and not st.trials[n].user_attrs.get(T.REFERENCE)}
        if not recs:
            raise HybridPruneError(f"--also: study {c.name!r} has no refined searched model; run: hybridprune refine")
        out.append((c, st, c.name, recs))
    return out


def _write(cfg: Any, study: Any, sources: list, base: Any, out: Path, rounds: int, say: Callable) -> list[dict]:
    from optuna.artifacts import download_artifact

    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.evaluators.onnx_eval import onnx_top1
    from hybridprune.evaluators.timing import machine_description
    from hybridprune.search.context import build_backend, load_data
    from hybridprune.search.latency import BASELINE, StudyLatency, Timed
    from hybridprune.search.references import by_number, model_name_of
    from hybridprune.search.storage import get_artifact_store

    test = load_data(cfg).test
    images, labels = test.images.numpy(), test.labels.numpy()
    entries, models = [], {}
    with tempfile.TemporaryDirectory(prefix="publish-", dir=out.parent) as scratch:
        for scfg, sstudy, other, refined in sources:
            store = get_artifact_store(scfg.refined_artifact_dir)
            by_no = by_number(sstudy)
            for n, rec in sorted(refined.items()):
                t = by_no[n]
                key = n if other is None else (other, n)  # this study's trials by number, the others' by both
                path = out / published_name(t, other)
                ckpt = Path(scratch) / f"{path.stem}.pt"
                ids = rec[T.R_ARTIFACTS]
                download_artifact(artifact_store=store, artifact_id=ids[T.ARTIFACT_ONNX], file_path=str(path))
                download_artifact(artifact_store=store, artifact_id=ids[T.ARTIFACT_CHECKPOINT], file_path=str(ckpt))
                loaded = load_checkpoint(ckpt, model_name_of(scfg, t))
                norm = loaded.normalization
                acc = 100 * onnx_top1(path, images, labels, norm.mean, norm.std)
                say(f"{'' if other is None else other + ' '}trial {n}: test top-1 {acc:.2f}% from {path.name} "
                    f"(refine measured {100 * rec[T.R_TEST]:.2f}% in PyTorch)")
                models[key] = Timed(loaded.model.eval(), path)
                if key == base.number:
                    input_size = tuple(loaded.input_size)
                entries.append(_entry(scfg, sstudy, t, rec, path, norm, acc, len(labels), key))
        baseline = models[base.number]
        latency = StudyLatency(cfg.latency, build_backend(cfg), input_size,
                               lock_path=cfg.run_dir / "latency.lock", baseline=baseline.module,
                               work_dir=Path(scratch))
        try:
            timed = latency.interleaved(study, baseline, {k: m for k, m in models.items() if k != base.number},
                                        rounds, on_round=lambda d, r: say(f"re-timing against the baseline: round "
                                                                          f"{d}/{r}"))
        finally:
            latency.close()
    timed[base.number] = timed.pop(BASELINE)
    how = f"{cfg.latency.backend} {json.dumps(cfg.latency.options, sort_keys=True)}, batch {cfg.latency.batch_size}"
    for e in entries:
        r = timed[e.pop("_key")]
        e.update({E.LATENCY_MS: round(r[T.R_LATENCY], 4), E.LATENCY_RATIO: round(r[T.R_RATIO], 4),
                  E.LATENCY_RATIO_CI: [round(v, 4) for v in r[T.R_RATIO_CI]], E.LATENCY_ROUNDS: rounds,
                  E.LATENCY_MEASURED_MS: round(r[T.R_MEASURED], 4), E.LATENCY_BACKEND: how})
    front = choose_front(entries)
    for e in entries:
        if e not in front:
            say(f"left off the front: trial {trial_label(e, cfg.name)}, {e[E.TEST_TOP1]:.2f}% at "
                f"{e[E.LATENCY_RATIO]:.3f}x ({_why_left_off(e, front, cfg.name)})")
            (out / e[E.ONNX]).unlink()
    (out / MARKER).write_text(json.dumps(front, indent=1) + "\n")
    _plot(front, out / "front.png", cfg.name)
    (out / "README.md").write_text(readme(cfg, front, machine_description(), how))
    return front


def _entry(cfg: Any, study: Any, t: Any, rec: dict, path: Path, norm: Any, acc: float, images: int, key: Any) -> dict:
    from hybridprune.search.split import split_record

    return {E.ONNX: path.name, E.STUDY: cfg.name, E.TRIAL: t.number, E.REFERENCE: t.user_attrs.get(T.REFERENCE),
            E.REFERENCE_NAME: t.user_attrs.get(T.REFERENCE_NAME),
            E.TEST_TOP1: round(acc, 2), E.TEST_TOP1_PYTORCH: round(100 * rec[T.R_TEST], 2),
            E.VAL_TOP1_SEARCH: round(100 * T.accuracy(t), 2), E.MACS: t.user_attrs.get(T.MACS),
            E.PARAMS: t.user_attrs.get(T.PARAMS), E.CONFIG: t.user_attrs.get(T.CONFIG),
            E.FINETUNE_STEPS_SEARCH: t.user_attrs.get(T.FIDELITY_STEPS),
            E.REFINE_EPOCHS: rec[T.R_EPOCHS], E.MEAN: list(norm.mean), E.STD: list(norm.std),
            E.SPLIT: {"name": "test", "images": images, **split_record(cfg)}, "_key": key}


def _why_left_off(e: dict, front: list[dict], name: str) -> str:
    """Why :func:`choose_front` did not keep entry ``e``: the published models that dominate it."""
    if e[E.REFERENCE] == T.REF_PAPER:
        return f"not among the {PAPER_KEPT} most accurate paper settings"
    point = lambda x: (x[E.TEST_TOP1], x[E.LATENCY_RATIO])  # noqa: E731
    by = [f for f in front if not f[E.REFERENCE] and dominates(point(f), point(e))]
    return "dominated by " + ", ".join(f"trial {trial_label(f, name)} ({f[E.TEST_TOP1]:.2f}% at "
                                       f"{f[E.LATENCY_RATIO]:.3f}x)" for f in by)


def trial_label(e: dict, name: str) -> str:
    """An entry's trial number, with its study's name when it is not study ``name`` (``also``)."""
    return str(e[E.TRIAL]) if e.get(E.STUDY, name) == name else f"{e[E.STUDY]} {e[E.TRIAL]}"


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
            ax.annotate(trial_label(e, name), (e[E.LATENCY_RATIO], e[E.TEST_TOP1]), fontsize=7, xytext=(3, 3),
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
        lines.append(f"| {e[E.ONNX]} | {trial_label(e, cfg.name)} | {e[E.REFERENCE] or ''} | {e[E.TEST_TOP1]:.2f}% | "
                     f"{macs} | {params} | {e[E.LATENCY_MS]:.3f} | {e[E.LATENCY_RATIO]:.3f} ({lo:.3f}-{hi:.3f}) | "
                     f"{desc} |")
    lines += ["", "Re-measure with code that is not hybridprune's:", "", "```",
              "python benchmarks/verify_results.py DIR --data DATA", "```", ""]
    return "\n".join(lines)
