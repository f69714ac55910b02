"""Search benchmark: hypervolume after N trials for NSGA-II, TPE and random on one study.

Every sampler runs the same study file (default: studies/quickstart.toml, its cached baseline
reused) for N real trials per seed, without the enqueued reference points so that only the
sampler differs. Hypervolume is computed on objectives normalised over all runs together
(accuracy -> 1 - (acc - min) / (max - min), latency -> (lat - min) / (max - min), both minimised),
with reference point (1.1, 1.1). Per-trial overhead is everything but fine-tuning (pruning,
export, latency measurement, evaluation, saving artifacts) as a share of the trial's wall time.

    python benchmarks/search.py --trials 8 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from hybridprune.search.config import load_study_config
from hybridprune.search.context import build_context
from hybridprune.search.local import worker
from hybridprune.search.study import open_study, quiet_optuna

REPO = Path(__file__).resolve().parents[1]


def hypervolume(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Hypervolume of (accuracy, latency) points after normalisation (see module doc)."""
    from optuna._hypervolume import compute_hypervolume

    if len(points) == 0:
        return 0.0
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = (points - lo) / span
    loss = np.stack([1.0 - norm[:, 0], norm[:, 1]], axis=1)
    return float(compute_hypervolume(loss, np.array([1.1, 1.1]), assume_pareto=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "quickstart.toml"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--samplers", nargs="+", default=["nsga2", "tpe", "random"])
    args = ap.parse_args()
    quiet_optuna()
    torch.set_num_threads(2)
    base = load_study_config(args.study)
    ctx = build_context(base)  # data + baseline (trained once and cached) shared by all runs
    tmp = Path(tempfile.mkdtemp(prefix="hp-bench-"))
    runs: dict[tuple[str, int], list] = {}
    wall: dict[tuple[str, int], float] = {}
    for sampler in args.samplers:
        for seed in args.seeds:
            cfg = dataclasses.replace(
                base,
                study=dataclasses.replace(base.study, name=f"bench-{sampler}-{seed}", trials=args.trials, seed=seed,
                                          references=False, storage=f"sqlite:///{tmp / 'bench.db'}",
                                          artifact_dir=str(tmp / "artifacts")),
                sampler=dataclasses.replace(base.sampler, name=sampler),
            )
            ctx.cfg = cfg
            t0 = time.perf_counter()
            worker(cfg, ctx=ctx)
            wall[(sampler, seed)] = time.perf_counter() - t0
            study = open_study(cfg, create=False)
            runs[(sampler, seed)] = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
            print(f"{sampler} seed {seed}: {len(runs[(sampler, seed)])} trials in {wall[(sampler, seed)]:.0f} s", flush=True)
    allpts = np.array([t.values[:2] for ts in runs.values() for t in ts])
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    half = max(1, args.trials // 2)
    print()
    print(f"study {base.path.name}, {args.trials} trials per run, seeds {args.seeds}, torch threads 2")
    print(f"| sampler | HV after {half} | HV after {args.trials} | best acc | min latency ms | trial s | overhead (not fine-tune) |")
    print("|---|---|---|---|---|---|---|")
    for sampler in args.samplers:
        hv_half, hv_full, acc, lat, secs, over = [], [], [], [], [], []
        for seed in args.seeds:
            ts = runs[(sampler, seed)]
            pts = np.array([t.values[:2] for t in ts])
            hv_half.append(hypervolume(pts[:half], lo, hi))
            hv_full.append(hypervolume(pts, lo, hi))
            acc.append(pts[:, 0].max())
            lat.append(pts[:, 1].min())
            for t in ts:
                tm = t.user_attrs["time_s"]
                secs.append(tm["total"])
                over.append(1.0 - tm["finetune"] / tm["total"])
        print(f"| {sampler} | {statistics.mean(hv_half):.3f} | {statistics.mean(hv_full):.3f} | "
              f"{100 * statistics.mean(acc):.1f}% | {statistics.mean(lat):.3f} | {statistics.mean(secs):.1f} | "
              f"{100 * statistics.mean(over):.0f}% |")
    print(f"(normalisation over all runs: accuracy {lo[0]:.3f}..{hi[0]:.3f}, latency {lo[1]:.3f}..{hi[1]:.3f} ms;"
          f" ideal HV {1.1 * 1.1:.2f})")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


if __name__ == "__main__":
    main()
