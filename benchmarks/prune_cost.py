"""What one prune of a study's baseline costs, and how much of it is criterion scoring, with and without
the score memo (``hybridprune.pruning.ScoreMemo``, what a study's worker keeps across its trials).

For each criterion and each of three configurations (hybrid, channel-only, block-only per stage),
``--repeats`` prunings of the study's baseline without the memo, then as many with one memo (the
first fills it), each timed in total and in ``BaseCriterion.score``. Prints the CPU model and flags.

    python benchmarks/prune_cost.py --study studies/resnet56-cifar10-jpeg-stages.toml --train-subset 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from hybridprune.evaluators.timing import machine_description
from hybridprune.pruning import HybridConfig, ScoreMemo, list_criteria, prune_model
from hybridprune.pruning.criteria import base as criteria_base
from hybridprune.search.config import load_study_config
from hybridprune.search.context import build_context

CONFIGS = ((0.3, (1, 1, 1)), (0.3, (0, 0, 0)), (0.0, (2, 1, 1)))  # hybrid, channel-only, block-only


def main(argv: list[str] | None = None) -> None:
    """Time the prunings and print one table row per criterion, configuration and way."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--criteria", nargs="+", default=None, help="default: every registered criterion")
    args = ap.parse_args(argv)
    cfg = load_study_config(args.study)
    if args.train_subset:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_subset=args.train_subset))
    ctx = build_context(cfg)
    spent = [0.0]
    real = criteria_base.BaseCriterion.score

    def timed(self, *a, **k):
        tick = time.perf_counter()
        try:
            return real(self, *a, **k)
        finally:
            spent[0] += time.perf_counter() - tick

    criteria_base.BaseCriterion.score = timed
    print(f"{machine_description()}; calibration batches {cfg.pruning.calib_batches or 4} x 64")
    print("| criterion | channel ratio, blocks per stage | way | prune s (median) | of which scoring s |")
    print("|---|---|---|---|---|")
    for name in args.criteria or list_criteria():
        for ratio, stages in CONFIGS:
            c = HybridConfig(channel_ratio=ratio, pruned_blocks=sum(stages), criterion=name,
                             stage_blocks=stages if sum(stages) else None, calib_batches=cfg.pruning.calib_batches or 4)
            calib = ctx.calibration(c.calib_batches) if c.make_criterion().data_driven else None
            for way, memo in (("no memo", None), ("memo (first fills it)", ScoreMemo())):
                totals, scoring = [], []
                for _ in range(args.repeats):
                    spent[0] = 0.0
                    tick = time.perf_counter()
                    prune_model(ctx.model, c, ctx.example_inputs(), calib, memo=memo)
                    totals.append(time.perf_counter() - tick)
                    scoring.append(spent[0])
                print(f"| {name} | {ratio}, {stages} | {way} | {statistics.median(totals):.2f} "
                      f"({', '.join(f'{t:.2f}' for t in totals)}) | {statistics.median(scoring):.2f} |")
    ctx.close()


if __name__ == "__main__":
    main()
