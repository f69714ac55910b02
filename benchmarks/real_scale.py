"""Compare a refined study's search with the paper's grid and single-mode searches, and publish it.

Publishing is the product's: ``hybridprune publish`` (:func:`hybridprune.search.publish.publish`)
writes the ONNX files, ``front.json``, ``front.png`` and a README into ``--out``. This benchmark
then adds the comparison:

* ``comparison.json``: at the search's own fine-tune budget (validation top-1 against latency
  divided by the same study's baseline trial), the hypervolume of the hybrid search, of each
  single-mode search (``--single``) and of the paper's grid (the hybrid study's ``paper``
  reference trials); which paper settings a searched trial dominates; the refined paper
  settings against the refined front; the targets; wall times;
* ``comparison.png`` (search budget and refined views) and ``README.md`` (the tables and the commands).

``--also``: studies whose refined searched models join the published front (``publish --also``):
another hybrid search (e.g. the ``hybrid_stages`` space), compared like the single-mode ones, or
a ``--single`` study too, so that the front holds the best model any search found.

``--plain-control FILE``: the rows of ``benchmarks/distill_vs_plain.py --out FILE``; the plain
fine-tune of the unpruned model at refine's budget is the control the refined baseline is judged
against (the issue's first target).

    python benchmarks/real_scale.py studies/resnet56-cifar10-jpeg.toml \\
        --single studies/resnet56-cifar10-jpeg-channel.toml studies/resnet56-cifar10-jpeg-block.toml \\
        --out results/resnet56-cifar10-jpeg

Re-check the published files with ``benchmarks/verify_results.py`` (no hybridprune code).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hybridprune.errors import HybridPruneError
from hybridprune.search import trials as T
from hybridprune.search.pareto import completed
from hybridprune.search.publish import Entry as E
from hybridprune.search.publish import dominates, nondominated, publish, trial_label
from hybridprune.search.service import load
from hybridprune.search.study import open_study, quiet_optuna

TARGET_DROP, TARGET_MACS_CUT, TARGET_LATENCY_CUT = 1.0, 0.50, 0.45


def plain_control(path: Path, epochs: float) -> dict:
    """The rows of ``distill_vs_plain.py --out`` for the unpruned model at ``epochs``: ``{"plain": row,
    "distilled": [rows]}``; a one-line :class:`HybridPruneError` when the file or that row is missing."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise HybridPruneError(f"--plain-control {path}: cannot read it ({exc.strerror})") from None
    rows = []
    for no, line in enumerate(lines, 1):
        try:
            rows += [json.loads(line)] if line.strip() else []
        except json.JSONDecodeError:
            raise HybridPruneError(f"--plain-control {path}: line {no} is not JSON; give the rows of "
                                   "benchmarks/distill_vs_plain.py --out") from None
    mine = [r for r in rows if isinstance(r, dict) and r.get("model") == "unpruned" and r.get("epochs") == epochs
            and isinstance(r.get("test_top1"), (int, float))]
    plain = [r for r in mine if r.get("way") == "plain"]
    if not plain:
        have = sorted({r.get("epochs") for r in rows if isinstance(r, dict) and r.get("way") == "plain"}, key=str)
        raise HybridPruneError(f"--plain-control {path}: no plain fine-tune of the unpruned model for {epochs:g} "
                               f"epochs (refine's budget); its plain rows have epochs {have or 'none'}")
    return {"plain": plain[-1], "distilled": [r for r in mine if r.get("way") == "distilled"]}


def hypervolume(points: list[tuple[float, float]], min_accuracy: float) -> float:
    """Area dominated by (accuracy, latency ratio) points up to (``min_accuracy``, ratio 1.0)."""
    from hybridprune.search._optuna import hypervolume as exact

    return exact([[1 - a, r] for a, r in points if a > min_accuracy and r < 1.0], [1 - min_accuracy, 1.0])


def search_points(study) -> tuple[list, dict[int, tuple[float, float]]]:
    """Completed feasible trials that count (no reused duplicates), and each one's (validation
    accuracy, latency / the study's baseline trial) by trial number."""
    done = [t for t in completed(study) if T.counts_towards_target(t) and T.feasible(t)]
    base = next(t for t in done if T.is_reference(t, T.REF_BASELINE))
    return done, {t.number: (T.accuracy(t), T.latency_ms(t) / T.latency_ms(base)) for t in done}


def wall(study) -> dict:
    """First start to last completion, and the sum of trial durations, in seconds."""
    ts = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    if not ts:
        return {"trials": 0, "wall_s": 0.0, "trial_s": 0.0}
    span = max(t.datetime_complete for t in ts) - min(t.datetime_start for t in ts)
    return {"trials": len(ts), "wall_s": span.total_seconds(),
            "trial_s": sum((t.datetime_complete - t.datetime_start).total_seconds() for t in ts)}


def compare(cfg, study, points: dict) -> dict:
    """Hypervolumes and dominance at the search budget (see module doc); ``points`` maps each
    study to its :func:`search_points`, the hybrid study first."""
    min_acc = cfg.constraints.min_accuracy or 0.0
    done, pt = points[study]
    paper = [t for t in done if T.is_reference(t, T.REF_PAPER)]
    searched = [t for t in done if not t.user_attrs.get(T.REFERENCE)]
    rows = {"hybrid": hypervolume(list(pt.values()), min_acc),
            "hybrid (searched trials only)": hypervolume([pt[t.number] for t in searched], min_acc),
            "paper grid": hypervolume([pt[t.number] for t in paper], min_acc)}
    walls = {cfg.name: wall(study)}
    for sstudy, (_, spt) in list(points.items())[1:]:
        rows[sstudy.study_name] = hypervolume(list(spt.values()), min_acc)
        walls[sstudy.study_name] = wall(sstudy)
    dominance = []
    for p in paper:
        a, r = pt[p.number]
        by = [t.number for t in searched if dominates(pt[t.number], (a, r))]
        dominance.append({"trial": p.number, "config": p.user_attrs.get(T.CONFIG), "val_top1": 100 * a,
                          "latency_ratio": r, "dominated_by_searched": by})
    return {"min_accuracy": min_acc, "reference_point": [min_acc, 1.0], "hypervolume": rows,
            "paper_settings": dominance, "wall": walls,
            "search_points": {"hybrid": {str(n): v for n, v in pt.items()}}}


def targets(entries: list[dict]) -> list[dict]:
    """Each refined pruned model against the issue's targets (test drop, MACs cut, latency cut)."""
    base = next(e for e in entries if e[T.REFERENCE] == T.REF_BASELINE)
    rows = []
    for e in entries:
        if e is base:
            continue
        drop = base[E.TEST_TOP1] - e[E.TEST_TOP1]
        macs_cut, lat_cut = 1 - e[E.MACS] / base[E.MACS], 1 - e[E.LATENCY_RATIO]
        rows.append({E.TRIAL: e[E.TRIAL], E.STUDY: e.get(E.STUDY), E.REFERENCE: e[E.REFERENCE],
                     "test_drop_points": round(drop, 2),
                     "macs_cut": round(macs_cut, 4), "latency_cut": round(lat_cut, 4),
                     "meets": drop <= TARGET_DROP and macs_cut >= TARGET_MACS_CUT and lat_cut >= TARGET_LATENCY_CUT})
    return rows


def refined_dominance(entries: list[dict]) -> list[dict]:
    """Each refined paper setting, and the refined searched models that dominate it (test top-1, ratio)."""
    searched = [e for e in entries if not e[T.REFERENCE]]
    out = []
    for p in (e for e in entries if e[T.REFERENCE] == T.REF_PAPER):
        by = [trial_label(e, p.get(E.STUDY)) for e in searched
              if dominates((e[E.TEST_TOP1], e[E.LATENCY_RATIO]), (p[E.TEST_TOP1], p[E.LATENCY_RATIO]))]
        out.append({E.TRIAL: p[E.TRIAL], E.TEST_TOP1: p[E.TEST_TOP1], E.LATENCY_RATIO: p[E.LATENCY_RATIO],
                    "dominated_by_refined_searched": by})
    return out


def pruned_meeting(cmp: dict) -> list[dict]:
    """The :func:`targets` rows of pruned models that meet all three (a reference model such as
    ResNet-20 can meet the cuts too, but it is no result of the search)."""
    return [r for r in cmp["targets"] if r["meets"] and not r[T.REFERENCE]]


GOAL_FAMILY_MARGIN, GOAL_FAMILY_RATIO = 1.0, 0.5  # >= 1.0 point above the family reference at <= 0.5x


def goals(entries: list[dict], cmp: dict, name: str, single: frozenset = frozenset(),
          control: dict | None = None) -> list[dict]:
    """The real-scale issue's targets, each ``{"goal", "met", "detail"}``, from the published
    entries (test top-1 in %, latency / refined baseline), the search-budget comparison and, when
    given, the plain fine-tune ``control`` (:func:`plain_control`)."""
    def label(e: dict) -> str:
        return e.get(T.REFERENCE_NAME) or f"trial {trial_label(e, name)}"

    base = next(e for e in entries if e[T.REFERENCE] == T.REF_BASELINE)
    pruned = [e for e in entries if not e[T.REFERENCE]]
    family = [e for e in entries if e[T.REFERENCE] == T.REF_FAMILY]
    point = lambda e: (e[E.TEST_TOP1], e[E.LATENCY_RATIO])  # noqa: E731
    out = []
    if control is not None:
        plain = control["plain"]
        same_run = "".join(f"; the same run's distilled fine-tune (weight {r.get('distill_weight')}): "
                           f"{r['test_top1']:.2f}%" for r in control["distilled"])
        out.append({"goal": f"the refined baseline is at least as accurate as a plain fine-tune of the same budget "
                            f"({plain['epochs']:g} epochs)", "met": base[E.TEST_TOP1] >= plain["test_top1"],
                    "detail": f"refined baseline {base[E.TEST_TOP1]:.2f}%, plain {plain['test_top1']:.2f}% "
                              f"({base[E.TEST_TOP1] - plain['test_top1']:+.2f} points){same_run}; one seed each"})
    if family:
        by = {id(e): [f for f in family if dominates(point(f), point(e))] for e in pruned}
        beaten = [f"{label(e)} ({e[E.TEST_TOP1]:.2f}% at {e[E.LATENCY_RATIO]:.3f}x) by "
                  + ", ".join(f"{label(f)} ({f[E.TEST_TOP1]:.2f}% at {f[E.LATENCY_RATIO]:.3f}x)" for f in by[id(e)])
                  for e in pruned if by[id(e)]]
        out.append({"goal": "no published pruned model is dominated by a family reference", "met": not beaten,
                    "detail": "; ".join(beaten) if beaten else f"none of {len(pruned)} is"})
        best_f = max(family, key=lambda f: f[E.TEST_TOP1])
        fast = [e for e in pruned if e[E.LATENCY_RATIO] <= GOAL_FAMILY_RATIO]
        goal = (f"a pruned model at <= {GOAL_FAMILY_RATIO}x is >= {GOAL_FAMILY_MARGIN} point above "
                f"{label(best_f)}")
        if fast:
            top = max(fast, key=lambda e: e[E.TEST_TOP1])
            margin = top[E.TEST_TOP1] - best_f[E.TEST_TOP1]
            out.append({"goal": goal, "met": margin >= GOAL_FAMILY_MARGIN,
                        "detail": f"best at <= {GOAL_FAMILY_RATIO}x: {label(top)}, {top[E.TEST_TOP1]:.2f}% at "
                                  f"{top[E.LATENCY_RATIO]:.3f}x, {margin:+.2f} points against "
                                  f"{best_f[E.TEST_TOP1]:.2f}%"})
        else:
            out.append({"goal": goal, "met": False, "detail": f"no published pruned model at <= {GOAL_FAMILY_RATIO}x"})
    ok = pruned_meeting(cmp)
    near = [e for e in pruned if base[E.TEST_TOP1] - e[E.TEST_TOP1] <= TARGET_DROP]
    fastest = min(near, key=lambda e: e[E.LATENCY_RATIO]) if near else None
    detail = (f"{len(ok)} model(s) meet it" if ok else "none") + (
        f"; the fastest within {TARGET_DROP} point: {label(fastest)}, "
        f"{base[E.TEST_TOP1] - fastest[E.TEST_TOP1]:.2f} points below at {fastest[E.LATENCY_RATIO]:.3f}x latency "
        f"and {fastest[E.MACS] / base[E.MACS]:.3f}x MACs" if fastest else "")
    out.append({"goal": f"a pruned model within {TARGET_DROP} point of the refined baseline at <= "
                        f"{1 - TARGET_LATENCY_CUT:.2f}x latency and <= {1 - TARGET_MACS_CUT:.2f}x MACs",
                "met": bool(ok), "detail": detail})
    if cmp["refined_paper"]:
        free = [p for p in cmp["refined_paper"] if not p["dominated_by_refined_searched"]]
        out.append({"goal": "the refined front dominates every published refined paper setting", "met": not free,
                    "detail": "; ".join(f"trial {p['trial']} ({p['test_top1']:.2f}% at {p['latency_ratio']:.3f}x) "
                                        "is not dominated" for p in free)
                    or f"all {len(cmp['refined_paper'])} dominated"})
    hv = {k: v for k, v in cmp["hypervolume"].items() if k not in ("hybrid (searched trials only)", "paper grid")}
    singles = {k: v for k, v in hv.items() if k in single}
    hybrids = {k: v for k, v in hv.items() if k not in single}
    if singles and hybrids:
        best_s, best_h = max(singles, key=singles.get), max(hybrids, key=hybrids.get)
        out.append({"goal": "a hybrid search's hypervolume is at least each single-mode search's (this seed)",
                    "met": hybrids[best_h] >= singles[best_s],
                    "detail": ", ".join(f"{k} {v:.4f}" for k, v in sorted(hv.items(), key=lambda kv: -kv[1]))})
    return out


def _front_line(ax, points, **kw) -> None:
    idx = nondominated(points)
    pts = sorted((points[i] for i in idx), key=lambda p: p[1])
    ax.plot([r for _, r in pts], [100 * a for a, _ in pts], drawstyle="steps-post", marker="o", ms=4, **kw)


def plot(cfg, study, points: dict, entries: list[dict], path: Path, single: frozenset = frozenset()) -> None:
    """Left: every search at its fine-tune budget (validation). Right: the refined models (test)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    done, pts = points[study]
    left.scatter([r for _, r in pts.values()], [100 * a for a, _ in pts.values()], s=10, c="0.75",
                 label="hybrid: every trial")
    _front_line(left, list(pts.values()), c="tab:red", label="hybrid search front")
    paper = [pts[t.number] for t in done if T.is_reference(t, T.REF_PAPER)]
    left.scatter([r for _, r in paper], [100 * a for a, _ in paper], marker="x", c="tab:blue", s=30,
                 label=f"paper's settings ({len(paper)})")
    for (sstudy, (_, spt)), color in zip(list(points.items())[1:], ("tab:green", "tab:orange", "tab:purple")):
        kind = sstudy.study_name.replace(cfg.name + "-", "")
        _front_line(left, list(spt.values()), c=color,
                    label=f"{kind}-only search front" if sstudy.study_name in single else f"{kind} search front")
    base = next(t for t in done if T.is_reference(t, T.REF_BASELINE))
    left.scatter([1.0], [100 * T.accuracy(base)], marker="*", s=160, facecolors="none", edgecolors="black",
                 label="unpruned baseline")
    left.set(xlabel="latency / the study's baseline trial (ONNX Runtime, batch 1, 1 thread)",
             ylabel="validation top-1 (%)", title=f"search budget ({_budget(cfg)} at most)")
    lo = min(100 * a for a, _ in pts.values() if a > (cfg.constraints.min_accuracy or 0))
    left.set_ylim(lo - 0.5, None)
    for kind, marker, color, label in ((None, "o", "tab:red", "refined searched trials"),
                                       (T.REF_PAPER, "x", "tab:blue", "refined paper settings"),
                                       (T.REF_FAMILY, "D", "tab:green", "refined reference models"),
                                       (T.REF_BASELINE, "*", "black", "refined baseline")):
        es = [e for e in entries if e[T.REFERENCE] == kind]
        right.scatter([e[E.LATENCY_RATIO] for e in es], [e[E.TEST_TOP1] for e in es], marker=marker, c=color,
                      s=140 if kind == T.REF_BASELINE else 30, label=label)
        for e in es:
            right.annotate(trial_label(e, cfg.name), (e[E.LATENCY_RATIO], e[E.TEST_TOP1]), fontsize=7, xytext=(3, 3),
                           textcoords="offset points")
    right.set(xlabel="latency / refined baseline (interleaved rounds, ONNX Runtime, batch 1, 1 thread)",
              ylabel="test top-1 (%, ONNX Runtime, whole test split)", title="refined models")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _budget(cfg) -> str:
    if cfg.fidelity.enabled:
        return f"{cfg.fidelity.max_steps} fine-tune steps"
    f = cfg.finetune
    return f"{f.steps} fine-tune steps" if f.steps is not None else f"{f.epochs:g} fine-tune epochs"


def readme(cfg, front: list[dict], cmp: dict, command: str) -> str:
    """The results folder's README: headline, tables, comparison, cost, commands."""
    base = front[0]
    meets = pruned_meeting(cmp)
    lines = [f"# {cfg.name}: refined front", ""]
    if meets:
        best = max(meets, key=lambda r: r["latency_cut"])
        lines.append(f"**Headline:** trial {best['trial']} keeps test top-1 within {best['test_drop_points']:.2f} "
                     f"points of the equally fine-tuned unpruned baseline ({base['test_top1']:.2f}%) with "
                     f"{100 * best['macs_cut']:.0f}% fewer MACs and {100 * best['latency_cut']:.0f}% lower "
                     f"ONNX Runtime latency (batch 1, 1 thread).")
    else:
        lines.append("**Headline:** no refined model meets all three targets (test top-1 within "
                     f"{TARGET_DROP} point of the baseline, >= {100 * TARGET_MACS_CUT:.0f}% fewer MACs, >= "
                     f"{100 * TARGET_LATENCY_CUT:.0f}% lower latency); see the targets table.")
    lines += ["", "![front](front.png)", "", "![comparison](comparison.png)", "",
              "## Published models (front.json)", "",
              "| onnx | trial | test top-1 | MMACs | params | latency ms | ratio (CI) | config |",
              "|---|---:|---:|---:|---:|---:|---|---|"]
    for e in front:
        c = e[E.CONFIG] or {}
        desc = (f"{c.get('channel_ratio', 0):.2f} ch, {c.get('pruned_blocks', 0)} blocks, {c.get('criterion')}, "
                f"{c.get('order')}, round {c.get('round_to', 1)}") if e[T.REFERENCE] != T.REF_BASELINE else "unpruned"
        lo, hi = e[E.LATENCY_RATIO_CI]
        lines.append(f"| {e['onnx']} | {trial_label(e, cfg.name)} | {e['test_top1']:.2f}% | {e['macs'] / 1e6:.1f} | "
                     f"{e['params']:,} | {e['latency_ms']:.3f} | {e['latency_ratio']:.3f} ({lo:.3f}-{hi:.3f}) | "
                     f"{desc} |")
    lines += ["", "## The issue's targets", ""]
    lines += [f"- **{'met' if g['met'] else 'MISSED'}**: {g['goal']}. {g['detail']}." for g in cmp.get("goals", [])]
    lines += ["", "## Targets (every refined model)", "",
              "| trial | note | test drop (points) | MACs cut | latency cut | all met |",
              "|---:|---|---:|---:|---:|---|"]
    for r in cmp["targets"]:
        lines.append(f"| {trial_label(r, cfg.name)} | {r[T.REFERENCE] or ''} | {r['test_drop_points']:.2f} | "
                     f"{100 * r['macs_cut']:.1f}% | {100 * r['latency_cut']:.1f}% | {'yes' if r['meets'] else 'no'} |")
    lines += ["", "## Searches at the same fine-tune budget (validation top-1, latency / own baseline trial)", "",
              f"Hypervolume up to (top-1 {cmp['min_accuracy']:.2f}, ratio 1.0):", "",
              "| search | hypervolume | trials | wall time |", "|---|---:|---:|---:|"]
    for name, hv in cmp["hypervolume"].items():
        w = cmp["wall"].get(cfg.name if name == "hybrid" else name)
        cost = f"{w['trials']} | {w['wall_s'] / 60:.0f} min" if w else " | "
        lines.append(f"| {name} | {hv:.4f} | {cost} |")
    undominated = [p for p in cmp["paper_settings"] if not p["dominated_by_searched"]]
    n_paper = len(cmp["paper_settings"])
    lines += ["", f"Paper settings dominated by a searched trial: {n_paper - len(undominated)} of {n_paper}."]
    for p in undominated:
        c = p[E.CONFIG] or {}
        lines.append(f"- not dominated: trial {p['trial']} ({c.get('pruned_blocks')} blocks, {c.get('criterion')}, "
                     f"{c.get('order')}): {p['val_top1']:.2f}%, ratio {p['latency_ratio']:.3f}")
    if cmp["refined_paper"]:
        lines += ["", "Refined paper settings against the refined searched models:"]
        for p in cmp["refined_paper"]:
            by = ", ".join(map(str, p["dominated_by_refined_searched"])) or "none"
            lines.append(f"- trial {p['trial']}: {p['test_top1']:.2f}%, ratio {p['latency_ratio']:.3f}; "
                         f"dominated by refined trial(s): {by}")
    lines += ["", "## Cost", "", f"Refine: {cmp['refine_s'] / 60:.0f} min (fine-tune and scoring) + "
              f"{cmp['refine_latency_s'] / 60:.0f} min (interleaved latency).", "",
              f"Machine: {cmp['machine']}.", "", "## Commands", "", "```", command, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, compare, publish."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", help="study file of the refined hybrid study")
    ap.add_argument("--single", nargs="*", default=[], help="study files of single-mode searches to compare")
    ap.add_argument("--also", nargs="*", default=[],
                    help="study files of other hybrid searches to compare, whose refined models join the front")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    ap.add_argument("--plain-control", type=Path, default=None,
                    help="rows of benchmarks/distill_vs_plain.py --out: the plain fine-tune the refined baseline "
                         "is judged against")
    args = ap.parse_args(argv)
    quiet_optuna()
    try:
        cfg = load(args.study)
        study = open_study(cfg, create=False)
        also = [(c, open_study(c, create=False)) for c in map(load, args.also)]
        singles = [open_study(c, create=False) for c in map(load, args.single)]
        named = {s.study_name for s in singles}
        studies = [study] + singles + [s for _, s in also if s.study_name not in named]
        if not T.refined(study):  # before any measuring
            raise HybridPruneError(f"study {cfg.name!r} has not been refined; run: hybridprune refine STUDY")
        control = None
        if args.plain_control is not None:  # refine's budget: one for every model (publish refuses a mix)
            epochs = sorted({r.get(T.R_EPOCHS) for r in T.refined(study).values()}, key=str)
            if len(epochs) != 1:
                raise HybridPruneError(f"study {cfg.name!r} was refined with several budgets ({epochs}); "
                                       "refine every model with one --epochs")
            control = plain_control(args.plain_control, epochs[0])
        points = {s: search_points(s) for s in studies}
        front = publish(cfg, study, args.out, rounds=args.rounds, also=also)  # the folder, whole, or an error
        readme_text = _write(cfg, study, points, front, args.out, args, control)
    except HybridPruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(readme_text)
    return 0


def _write(cfg, study, points: dict, front: list[dict], out: Path, args: argparse.Namespace,
           control: dict | None = None) -> str:
    from hybridprune.evaluators.timing import machine_description

    cmp = compare(cfg, study, points)
    refined = T.refined(study)
    summary = study.user_attrs.get(T.STUDY_REFINED, {})
    cmp.update(targets=targets(front), refined_paper=refined_dominance(front),
               refined=[{k: e[k] for k in ("trial", T.REFERENCE, "test_top1", "latency_ratio", "macs")}
                        for e in front],
               refine_s=sum(r.get(T.R_SECONDS, 0.0) for r in refined.values()),
               refine_latency_s=summary.get(T.RS_LATENCY_SECONDS, 0.0), machine=machine_description())
    single = frozenset(c.name for c in map(load, args.single))
    cmp["goals"] = goals(front, cmp, cfg.name, single, control)
    if control is not None:
        cmp["plain_control"] = control
    plot(cfg, study, points, front, out / "comparison.png", single)
    (out / "comparison.json").write_text(json.dumps(cmp, indent=1) + "\n")
    parts = ["python benchmarks/real_scale.py " + Path(args.study).as_posix()]
    if args.single:
        parts.append("--single " + " ".join(Path(s).as_posix() for s in args.single))
    if args.also:
        parts.append("--also " + " ".join(Path(s).as_posix() for s in args.also))
    if args.plain_control is not None:
        parts.append(f"--plain-control {args.plain_control.as_posix()}")
    command = " \\\n    ".join(parts + [f"--out {args.out.as_posix()}"])
    text = readme(cfg, front, cmp, command)
    (out / "README.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
