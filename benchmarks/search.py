"""Search benchmark: hypervolume against wall-clock time, plain vs multi-fidelity, and samplers.

Every run searches the same study file (its data and cached baseline loaded once) with one
worker for the same wall-time budget, without the enqueued reference points so that only the
search differs. ``plain`` fine-tunes every trial for the full budget (``--full-steps``);
``mf`` runs MO-ASHA rungs ``--min-steps`` .. ``--full-steps`` with reduction factor ``--eta``.
Hypervolume is computed on the objectives every trial reported (what the user sees), normalised
over all runs of the benchmark together (accuracy -> 1 - (acc - min) / (max - min), latency ->
(lat - min) / (max - min), both minimised) with reference point (1.1, 1.1), after each trial's
completion time. Per-trial overhead is everything but fine-tuning (pruning, complexity, export,
latency, evaluation, saving) as a share of the trial's wall time.

    python benchmarks/search.py --budget-s 120 --seeds 0 1 2
    python benchmarks/search.py --study studies/resnet56-cifar10-jpeg.toml --train-subset 5000 \\
        --val-subset 1000 --full-steps 120 --min-steps 15 --budget-s 900 --seeds 0 --samplers nsga2
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

from hybridprune.search import trials as T
from hybridprune.search.config import FidelitySection, load_study_config
from hybridprune.search.context import build_context
from hybridprune.search.local import worker
from hybridprune.search.study import open_study, quiet_optuna, savings

REPO = Path(__file__).resolve().parents[1]


def hypervolume(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Hypervolume of (accuracy, latency) points after normalisation (see module doc)."""
    from hybridprune.search._optuna import hypervolume as exact

    if len(points) == 0:
        return 0.0
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = (points - lo) / span
    loss = np.stack([1.0 - norm[:, 0], norm[:, 1]], axis=1)
    loss = loss[np.all(loss < 1.1, axis=1)]
    return exact(loss, [1.1, 1.1])


def curve(trials: list, start: float, lo: np.ndarray, hi: np.ndarray) -> list[tuple[float, float]]:
    """(seconds since the run started, hypervolume of the trials completed by then)."""
    done = sorted(trials, key=lambda t: t.datetime_complete)
    out = []
    for i, t in enumerate(done):
        pts = np.array([[T.accuracy(u), T.latency_ms(u)] for u in done[: i + 1]])
        out.append((t.datetime_complete.timestamp() - start, hypervolume(pts, lo, hi)))
    return out


def hv_at(c: list[tuple[float, float]], t: float) -> float:
    """Hypervolume reached by time ``t`` (0 before the first trial)."""
    return max([hv for s, hv in c if s <= t], default=0.0)


def time_to(c: list[tuple[float, float]], target: float) -> float:
    """First time the curve reaches ``target`` (inf if never)."""
    return next((s for s, hv in c if hv >= target - 1e-12), float("inf"))


def run(base, ctx, name: str, sampler: str, seed: int, mode: str, args, tmp: Path):
    """One search for ``args.budget_s`` seconds; returns (trials, start timestamp, study)."""
    fid = (
        FidelitySection(min_steps=args.min_steps, max_steps=args.full_steps, eta=args.eta)
        if mode == "mf"
        else FidelitySection()
    )
    cfg = dataclasses.replace(
        base,
        study=dataclasses.replace(base.study, name=name, trials=1, seed=seed, references=False,
                                  storage=f"sqlite:///{tmp / 'bench.db'}", artifact_dir=str(tmp / "artifacts")),
        sampler=dataclasses.replace(base.sampler, name=sampler),
        finetune=dataclasses.replace(base.finetune, epochs=None, steps=args.full_steps),
        fidelity=fid,
    )
    ctx.cfg = cfg
    start = time.time()
    k = 0
    while time.time() - start < args.budget_s:
        k += 1
        cfg = cfg.replace(trials=k)
        ctx.cfg = cfg
        worker(cfg, ctx=ctx)
    study = open_study(cfg, create=False)
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,))], start, study, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "quickstart.toml"))
    ap.add_argument("--budget-s", type=float, default=120.0, help="wall time of every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samplers", nargs="+", default=["nsga2", "tpe", "random"])
    ap.add_argument("--modes", nargs="+", default=["plain", "mf"])
    ap.add_argument("--full-steps", type=int, default=60, help="fine-tune steps of a full trial / the last rung")
    ap.add_argument("--min-steps", type=int, default=7, help="first rung (mf)")
    ap.add_argument("--eta", type=float, default=3.0)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--val-subset", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 keeps OpenMP barriers from stalling when the machine is shared)")
    args = ap.parse_args()
    quiet_optuna()
    torch.set_num_threads(args.threads)
    base = load_study_config(args.study)
    if args.train_subset or args.val_subset:
        base = dataclasses.replace(base, data=dataclasses.replace(
            base.data, train_subset=args.train_subset or base.data.train_subset,
            val_subset=args.val_subset or base.data.val_subset))
    ctx = build_context(base)  # data + baseline (trained once and cached) shared by all runs
    tmp = Path(tempfile.mkdtemp(prefix="hp-bench-"))
    runs = {}
    for mode in args.modes:
        for sampler in args.samplers:
            for seed in args.seeds:
                trials, start, study, cfg = run(
                    base, ctx, f"bench-{mode}-{sampler}-{seed}", sampler, seed, mode, args, tmp
                )
                runs[(mode, sampler, seed)] = (trials, start, study, cfg)
                print(f"{mode} {sampler} seed {seed}: {len(trials)} trials in {args.budget_s:.0f} s; "
                      f"{savings(study, args.full_steps).line()}", flush=True)
    allpts = np.array([[T.accuracy(t), T.latency_ms(t)] for ts, *_ in runs.values() for t in ts])
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    curves = {k: curve(ts, start, lo, hi) for k, (ts, start, *_) in runs.items()}
    B = args.budget_s
    print()
    print(f"study {base.path.name} (train {len(ctx.data.train)}, val {len(ctx.data.val)} images), one worker, "
          f"{B:.0f} s per run, seeds {args.seeds}, full fine-tune {args.full_steps} steps, mf rungs "
          f"{FidelitySection(min_steps=args.min_steps, max_steps=args.full_steps, eta=args.eta).rungs()}, "
          f"torch threads {args.threads}")
    print(f"| mode | sampler | trials | HV at {B / 3:.0f} s | HV at {B / 2:.0f} s | HV at {B:.0f} s | best acc | "
          f"min latency ms | trial s | overhead (not fine-tune) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        for sampler in args.samplers:
            keys = [(mode, sampler, s) for s in args.seeds]
            n = [len(runs[k][0]) for k in keys]
            hv = {f: [hv_at(curves[k], f * B) for k in keys] for f in (1 / 3, 1 / 2, 1.0)}
            acc = [max(T.accuracy(t) for t in runs[k][0]) for k in keys]
            lat = [min(T.latency_ms(t) for t in runs[k][0]) for k in keys]
            own = [t for k in keys for t in runs[k][0] if T.TIME_S in t.user_attrs]
            secs = [t.user_attrs[T.TIME_S]["total"] for t in own]
            over = [1 - t.user_attrs[T.TIME_S].get("finetune", 0.0) / t.user_attrs[T.TIME_S]["total"] for t in own]
            print(
                f"| {mode} | {sampler} | {statistics.mean(n):.1f} | {statistics.mean(hv[1 / 3]):.3f} | "
                f"{statistics.mean(hv[1 / 2]):.3f} | {statistics.mean(hv[1.0]):.3f} | "
                f"{100 * statistics.mean(acc):.1f}% | "
                f"{statistics.mean(lat):.3f} | {statistics.mean(secs):.1f} | {100 * statistics.mean(over):.0f}% |"
            )
    if "plain" in args.modes and "mf" in args.modes:
        print()
        print("| sampler | seed | plain final HV | mf reaches it after | share of plain's wall time |")
        print("|---|---|---|---|---|")
        for sampler in args.samplers:
            for seed in args.seeds:
                target = hv_at(curves[("plain", sampler, seed)], B)
                t_mf = time_to(curves[("mf", sampler, seed)], target)
                print(f"| {sampler} | {seed} | {target:.3f} | {t_mf:.0f} s | {t_mf / B:.2f} |")
    print(f"(normalisation over all runs: accuracy {lo[0]:.3f}..{hi[0]:.3f}, latency {lo[1]:.3f}..{hi[1]:.3f} ms;"
          f" ideal HV {1.1 * 1.1:.2f})")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


if __name__ == "__main__":
    main()
