"""Where the time of a study's budget went, and what it found: one row per study, from its storage.

    python benchmarks/search_summary.py studies/resnet56-cifar10-jpeg.toml \
        studies/resnet56-cifar10-jpeg-channel.toml studies/resnet56-cifar10-jpeg-block.toml

Per study: trials finished, split into the enqueued reference points (baseline, paper settings)
and the sampler's own (searched) trials with the seconds each group took; the fine-tune steps
the searched trials reached (0 = stopped at the adaptive-BN rung); the hypervolume of the
feasible trials on (validation top-1 at each trial's last rung, latency / the same study's
baseline trial) up to (``[constraints] min_accuracy``, ratio 1.0), with and without the
reference points (``benchmarks/real_scale.py``'s measure); the cost of one BN screen by part
(the trials' ``time_s`` records); and the reference models (``[references] models``), the
models a user would take instead. Reads only; prints a Markdown table and lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_scale import hypervolume, search_points  # noqa: E402


def _seconds(trials: list) -> float:
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)


def summarise(path: str) -> dict:
    """The numbers of one study (see the module doc)."""
    from hybridprune.search import trials as T
    from hybridprune.search.pareto import completed, reference_rows
    from hybridprune.search.service import load
    from hybridprune.search.study import open_study

    cfg = load(path)
    study = open_study(cfg, create=False)  # reads only: no create record appended to the journal
    done = [t for t in completed(study) if t.datetime_start and t.datetime_complete]
    refs = [t for t in done if t.user_attrs.get(T.REFERENCE)]
    searched = [t for t in done if not t.user_attrs.get(T.REFERENCE)]
    feasible, pt = search_points(study)
    floor = cfg.constraints.min_accuracy or 0.0
    own = [pt[t.number] for t in feasible if not t.user_attrs.get(T.REFERENCE)]
    screens = [t.user_attrs.get(T.TIME_S, {}) for t in done if t.user_attrs.get(T.FIDELITY_STEPS) == 0]
    parts = {k: statistics.median(s[k] for s in screens if k in s) for k in ("prune", "adapt_bn", "eval", "latency",
                                                                                  "total") if screens}
    base_ms = next(T.latency_ms(t) for t in feasible if T.is_reference(t, T.REF_BASELINE))
    front, best = [], -1.0
    for n, (acc, ratio) in sorted(pt.items(), key=lambda kv: (kv[1][1], -kv[1][0])):
        if acc > best:
            front.append((n, acc, ratio))
            best = acc
    return {"name": cfg.name, "budget_s": cfg.study.time_budget, "refs": len(refs), "refs_s": _seconds(refs),
            "searched": len(searched), "searched_s": _seconds(searched),
            "steps": sorted(t.user_attrs.get(T.FIDELITY_STEPS, 0) for t in searched),
            "hv": hypervolume(list(pt.values()), floor), "hv_searched": hypervolume(own, floor),
            "screen_s": parts, "front": front,
            "models": [(r.reference, r.accuracy, r.latency_ms / base_ms) for r in reference_rows(study)]}


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", help="study files")
    args = ap.parse_args(argv)
    rows = [summarise(s) for s in args.studies]
    print("| study | budget | reference points (s) | searched trials (s) | steps reached by searched trials "
          "| HV | HV searched only |\n|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['budget_s']:.0f} s | {r['refs']} ({r['refs_s']:.0f}) | {r['searched']} "
              f"({r['searched_s']:.0f}) | {r['steps']} | {r['hv']:.4f} | {r['hv_searched']:.4f} |")
    for r in rows:
        print(f"\n{r['name']}: front (trial, val top-1 %, latency ratio): "
              + ", ".join(f"({n}, {100 * a:.2f}, {q:.3f})" for n, a, q in r["front"]))
        print("  one BN screen, median s: " + ", ".join(f"{k} {v:.1f}" for k, v in r["screen_s"].items()))
        for name, acc, ratio in r["models"]:
            print(f"  {name}: val top-1 {100 * acc:.2f}% at {ratio:.3f}x this study's baseline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
