"""How soon could any scheduler reach plain search's final hypervolume with plain's own candidates?

Target 5a of the screening issue asks MO-ASHA to reach the plain search's final hypervolume in at
most a third of the wall time. This bounds what any scheduler (any rungs, any ranking, any
promotion rule) can do there, from the rows of ``benchmarks/search.py --out FILE.jsonl``.

Each ``plain`` run is a pool of candidates whose every figure was measured: validation top-1
after the full fine-tune, latency ratio to the baseline, fine-tune seconds. An oracle knows the
final accuracy of each before it spends anything, and fine-tunes only the subset it needs. Two
oracles, both told the same candidates the sampler drew, in the same order:

* **fine-tunes only**: screening is free, so its time is the fine-tunes of the subset alone;
* **with screens**: it screens the candidates in the order drawn, each for the screen's measured
  cost (the median wall time of the trials stopped at the 0-step rung in the multi-fidelity runs
  of the same seed, or ``--screen-s``), up to the last one it keeps, then fine-tunes those.

For each, the least time at which its front reaches plain's final floor hypervolume (the
real-scale measure, ``real_scale.hypervolume``: trials above ``--floor``, latency ratio below 1),
and the best floor hypervolume it can hold after a third of the budget. Only candidates above the
floor add to that measure, so the subsets searched are those of a handful of trials. If even the
oracles need more than a third, no scheduler drawing from plain's candidates meets the target:
it would take better candidates (the sampler) or cheaper fine-tunes.

    python benchmarks/search_bound.py results/search-bench/resnet56-long.jsonl --floor 0.8
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_scale import hypervolume  # noqa: E402


def _stopped_at_screen(t: dict) -> bool:
    rungs = t.get("rungs") or []
    return len(rungs) == 1 and rungs[0][0] == 0 and rungs[0][2] == "stop" and bool(t["total_s"])


def _parts(key: str) -> tuple[str, str, str]:
    """(space, mode, seed) of a run key ``space/mode/sampler/seed`` (``benchmarks/search.py``)."""
    space, mode, _, seed = key.split("/")
    return space, mode, seed


def read_rows(path: Path) -> list[dict]:
    """The runs of a ``benchmarks/search.py --out`` file, checked for every field the bound reads
    (``ValueError`` naming the first one missing or wrong)."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            _parts(r["key"])
            float(r["budget_s"])
            for t in r["trials"]:
                t["t"], t["acc"], t["ratio"], t["finetune_s"], t["total_s"]  # noqa: B018 (each must be there)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"line {n} is not a benchmarks/search.py run ({type(e).__name__}: {e})") from None
        rows.append(r)
    return rows


def screen_cost(rows: list[dict], space: str, seed: str) -> float | None:
    """Median wall seconds of the trials stopped at the 0-step screen in the multi-fidelity runs of
    ``space`` and ``seed`` (``None`` if there are none)."""
    costs = []
    for r in rows:
        sp, mode, sd = _parts(r["key"])
        if mode != "plain" and (sp, sd) == (space, seed):
            costs += [t["total_s"] for t in r["trials"] if _stopped_at_screen(t)]
    return statistics.median(costs) if costs else None


def oracle(trials: list[dict], floor: float, screen_s: float, target: float, within: float) -> dict:
    """Least time to ``target`` and best floor hypervolume by ``within`` seconds, over every subset
    of the candidates above the floor, without and with screening (see the module doc).

    Args:
        trials: The plain run's trials in the order drawn (``acc``, ``ratio``, ``finetune_s``).
        floor: The accuracy floor of the measure.
        screen_s: Seconds to screen one candidate.
        target: The hypervolume to reach (plain's final).
        within: Seconds of the early point (a third of the budget).
    """
    useful = [(i, t) for i, t in enumerate(trials) if t["ratio"] is not None and t["acc"] > floor and t["ratio"] < 1]
    best = {"ft_only": (float("inf"), 0.0), "screened": (float("inf"), 0.0)}  # (least time to target, HV by within)
    for k in range(1, len(useful) + 1):
        for subset in itertools.combinations(useful, k):
            hv = hypervolume([(t["acc"], t["ratio"]) for _, t in subset], floor)
            ft = sum(t["finetune_s"] for _, t in subset)
            costs = {"ft_only": ft, "screened": ft + screen_s * (max(i for i, _ in subset) + 1)}
            for way, cost in costs.items():
                reach, early = best[way]
                best[way] = (min(reach, cost) if hv >= target - 1e-12 else reach,
                             max(early, hv) if cost <= within else early)
    return {way: {"time_to_target": reach, "hv_within": early} for way, (reach, early) in best.items()}


def _frac(s: float, budget: float) -> str:
    return f"{s:.0f} s ({s / budget:.2f})" if s != float("inf") else "never"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", type=Path, help="JSONL written by benchmarks/search.py --out")
    ap.add_argument("--floor", type=float, default=0.8, help="accuracy floor of the measure")
    ap.add_argument("--screen-s", type=float, default=None,
                    help="seconds per screen (default: measured in the same file's multi-fidelity runs)")
    args = ap.parse_args(argv)
    if not args.rows.is_file():
        print(f"error: {args.rows} is not a file; give the JSONL that benchmarks/search.py --out wrote",
              file=sys.stderr)
        raise SystemExit(2)
    if not 0 <= args.floor < 1:
        print(f"error: --floor is an accuracy fraction in [0, 1), got {args.floor}", file=sys.stderr)
        raise SystemExit(2)
    if args.screen_s is not None and args.screen_s < 0:
        print(f"error: --screen-s is seconds per screen, >= 0; got {args.screen_s}", file=sys.stderr)
        raise SystemExit(2)
    try:
        rows = read_rows(args.rows)
    except (ValueError, OSError) as e:
        print(f"error: {args.rows}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    plain = [r for r in rows if _parts(r["key"])[1] == "plain"]
    if not plain:
        print(f"error: {args.rows} holds no plain run; the bound is drawn from plain search's candidates",
              file=sys.stderr)
        raise SystemExit(2)
    print(f"floor {args.floor:g}; oracles choose among each plain run's own candidates, in the order drawn")
    print("| run | budget | plain's final HV | screen s | least time to it: fine-tunes only | with screens | "
          "best HV by a third: fine-tunes only | with screens |")
    print("|---|---|---|---|---|---|---|---|")
    for r in plain:
        (space, _, seed), budget = _parts(r["key"]), r["budget_s"]
        done = [t for t in sorted(r["trials"], key=lambda t: t["t"]) if t["t"] <= budget]
        target = hypervolume([(t["acc"], t["ratio"]) for t in done if t["ratio"] is not None], args.floor)
        s = args.screen_s if args.screen_s is not None else screen_cost(rows, space, seed)
        if s is None:
            print(f"error: no multi-fidelity run of {space} seed {seed} in {args.rows} to measure a screen's cost; "
                  f"give --screen-s", file=sys.stderr)
            raise SystemExit(2)
        o = oracle(done, args.floor, s, target, budget / 3)
        free, screened = o["ft_only"], o["screened"]
        print(f"| {r['key']} | {budget:.0f} s | {target:.4f} | {s:.1f} | {_frac(free['time_to_target'], budget)} | "
              f"{_frac(screened['time_to_target'], budget)} | {free['hv_within']:.4f} | {screened['hv_within']:.4f} |")


if __name__ == "__main__":
    main()
