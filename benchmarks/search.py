"""Search benchmark: hypervolume against wall-clock time, plain vs multi-fidelity, and samplers.

Every run searches the same study file (its data and cached baseline loaded once) with one
worker for the same wall-time budget, without the enqueued reference points so that only the
search differs. ``plain`` fine-tunes every trial for the full budget (``--full-steps``);
``mf`` runs MO-ASHA rungs ``--min-steps`` .. ``--full-steps`` with reduction factor ``--eta``.
Hypervolume is computed on the objectives every trial reported (what the user sees), normalised
over all runs of the benchmark together (accuracy -> 1 - (acc - min) / (max - min), latency ->
(lat - min) / (max - min), both minimised) with reference point (1.1, 1.1), after each trial's
completion time. Latency is the ratio to the baseline timed next to it where the study has one
(each run measures its own reference, so ratios compare across runs; ms otherwise). Per-trial
overhead is everything but fine-tuning (pruning, complexity, export, latency, evaluation, saving)
as a share of the trial's wall time.

``--modes`` takes ``plain``, ``mf``, ``mf-defer``: MO-ASHA whose 0-step screen decides as ASHA's
promotion variant does (``[fidelity] defer_screen``; hybridprune/search/fidelity.py), and
``mf-defer-floor``: that, with rung results ranked by the study's accuracy floor too
(``[fidelity] floor_aware``; the floor is the study's ``[constraints] min_accuracy``), and
``mf-defer-hv``: the deferred screen with each non-dominated front ordered by the hypervolume each
result alone adds instead of the epsilon-net order (``[fidelity] rank = "hypervolume"``), and
``mf-defer-hv-floor``: that, floor-aware as well (both options), and
``mf-defer-hv-cal``: the hypervolume rank with the sampler seeing each stopped trial's accuracy on the last rung's
scale (``[fidelity] calibrate``; hybridprune/search/fidelity_view.py), and ``mf-defer-hvc``: the
deferred screen with each result's hypervolume divided by its estimated seconds per fine-tune image
(``[fidelity] rank = "hypervolume-per-cost"``; hybridprune/search/fidelity_cost.py).
``--bn-batches N`` gives ``mf`` a first rung of 0 steps (adaptive batch-norm on N batches, EagleEye);
``--bn-val-images M`` scores that rung on M validation images (``[fidelity] bn_val_images``);
``--screen-latency-s S`` times candidates at that rung in one round of S seconds (``[fidelity]
screen_latency_s``), and a row's trials flag such readings ``lat_screen``: they count in the
hypervolume as measured, the noisier reading of a network that was never fine-tuned.
``--spaces FILE ...`` runs each search once per study file, taking only its ``[space]``: the
hybrid against the channel-only and block-only twins on the same data, baseline and budget.
``--warm-start N`` sets ``[space] warm_start = N`` in every space (its first N points spread along
the space's single-mode lines, inside the budget: hybridprune/spaces/warm.py); its runs are keyed
``SPACE+wsN``, beside the unseeded runs of the same file. ``--spaces FILE+wsN`` seeds that one space
only, so one report (and figure) holds seeded and unseeded spaces side by side.
With ``--out FILE.jsonl`` every finished run is appended there and a rerun skips it, so a long
comparison resumes where a stopped one ended (the report covers every run in the file).
``--plot FILE.png`` draws hypervolume against wall time: one panel for the normalised measure and,
with ``--floor``, one for the real-scale measure; a thin line per run (seed) and a thick one for the
mean over seeds of each space and mode. ``--no-run`` reprints and draws from ``--out`` alone, and
refuses (naming them) when some of the asked-for runs are not in it.

    python benchmarks/search.py --budget-s 120 --seeds 0 1 2
    python benchmarks/search.py --study studies/resnet56-cifar10-jpeg.toml --train-subset 5000 \\
        --full-steps 180 --min-steps 20 --bn-batches 8 --budget-s 1800 --seeds 0 1 2 --samplers nsga2 \\
        --spaces studies/resnet56-cifar10-jpeg.toml studies/resnet56-cifar10-jpeg-channel.toml \\
        studies/resnet56-cifar10-jpeg-block.toml --modes mf --out runs/search-bench/spaces.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from hybridprune.evaluators.timing import machine_description
from hybridprune.search import trials as T
from hybridprune.search.config import FidelitySection, load_study_config
from hybridprune.search.context import build_context, build_space
from hybridprune.search.fidelity import EPSILON_NET, HYPERVOLUME, HYPERVOLUME_PER_COST
from hybridprune.search.local import worker
from hybridprune.search.study import enqueue_warm_start, open_study, quiet_optuna, savings

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


# MO-ASHA; deferred screen; floor-aware; hv rank; hv rank with the sampler seeing calibrated accuracy;
# hv per second of fine-tune
MF_MODES = ("mf", "mf-defer", "mf-defer-floor", "mf-defer-hv", "mf-defer-hv-floor", "mf-defer-hv-cal", "mf-defer-hvc")
RANK_OF_MODE = {"mf-defer-hv": HYPERVOLUME, "mf-defer-hv-floor": HYPERVOLUME, "mf-defer-hv-cal": HYPERVOLUME,
                "mf-defer-hvc": HYPERVOLUME_PER_COST}
FLOOR_MODES = ("mf-defer-floor", "mf-defer-hv-floor")  # floor-aware: need the study's [constraints] min_accuracy
MODES = ("plain", *MF_MODES)


def record(trials: list, start: float) -> list[dict]:
    """What the report needs of each completed trial, in order of completion (JSON-able), with its
    rungs as ``[steps, accuracy, decision]``, the trial it was promoted from, if any, and
    ``lat_screen`` where its latency is the screen's short reading (``[fidelity] screen_latency_s``)."""
    out = []
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        ratio = t.user_attrs.get(T.LATENCY_RATIO)
        times = t.user_attrs.get(T.TIME_S) or {}
        out.append({"t": t.datetime_complete.timestamp() - start, "acc": T.accuracy(t), "lat_ms": T.latency_ms(t),
                    "ratio": ratio, "total_s": times.get("total"), "finetune_s": times.get("finetune", 0.0),
                    "number": t.number, "promoted_from": t.user_attrs.get(T.PROMOTED_FROM),
                    "rungs": [[r["steps"], r["accuracy"], r["decision"]] for r in t.user_attrs.get(T.RUNGS) or []],
                    **({"lat_screen": True} if t.user_attrs.get(T.LATENCY_SCREEN) else {})})
    return out


def points(trials: list[dict], by_ratio: bool) -> np.ndarray:
    """(accuracy, latency) of recorded trials."""
    return np.array([[r["acc"], r["ratio"] if by_ratio else r["lat_ms"]] for r in trials]).reshape(-1, 2)


def curve(trials: list[dict], lo: np.ndarray, hi: np.ndarray, by_ratio: bool) -> list[tuple[float, float]]:
    """(seconds since the run started, hypervolume of the trials completed by then)."""
    pts = points(trials, by_ratio)
    return [(r["t"], hypervolume(pts[: i + 1], lo, hi)) for i, r in enumerate(trials)]


def hv_at(c: list[tuple[float, float]], t: float) -> float:
    """Hypervolume reached by time ``t`` (0 before the first trial)."""
    return max([hv for s, hv in c if s <= t], default=0.0)


def time_to(c: list[tuple[float, float]], target: float) -> float:
    """First time the curve reaches ``target`` (inf if never)."""
    return next((s for s, hv in c if hv >= target - 1e-12), float("inf"))


def run(base, ctx, name: str, sampler: str, seed: int, mode: str, space, args, tmp: Path):
    """One search for ``args.budget_s`` seconds; returns (completed trials, start timestamp, study, cfg)."""
    fid = (
        FidelitySection(min_steps=args.min_steps, max_steps=args.full_steps, eta=args.eta,
                        bn_batches=args.bn_batches, bn_val_images=args.bn_val_images,
                        screen_latency_s=args.screen_latency_s,
                        defer_screen=mode.startswith("mf-defer"), floor_aware=mode in FLOOR_MODES,
                        rank=RANK_OF_MODE.get(mode, EPSILON_NET),
                        calibrate=mode.endswith("-cal"))
        if mode in MF_MODES
        else FidelitySection()
    )
    cfg = dataclasses.replace(
        base,
        study=dataclasses.replace(base.study, name=name, trials=1, seed=seed, references=False, time_budget=None,
                                  storage=f"sqlite:///{tmp / (name + '.db')}", artifact_dir=str(tmp / "artifacts")),
        sampler=dataclasses.replace(base.sampler, name=sampler),
        finetune=dataclasses.replace(base.finetune, epochs=None, steps=args.full_steps),
        fidelity=fid,
        space=space,
    )
    ctx.cfg = cfg
    ctx.space = build_space(cfg, ctx.model)
    if ctx.space.warm_start:  # searched points, so inside the budget below
        enqueue_warm_start(open_study(cfg), ctx.space)
    start = time.time()
    k = 0
    while time.time() - start < args.budget_s:
        k += 1
        cfg = cfg.replace(trials=k)
        ctx.cfg = cfg
        worker(cfg, ctx=ctx)
    study = open_study(cfg, create=False)
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,))], start, study, cfg


def _when(t: float, budget_s: float) -> str:
    return f"{t:.0f} s" if t <= budget_s else f"never within {budget_s:.0f} s"


def _space_entry(entry: str, warm_start: int | None) -> tuple[str, int | None]:
    """``FILE`` or ``FILE+wsN`` of ``--spaces``: the study file and its warm start (``--warm-start``
    where the entry names none); one ``error:`` line for a count outside 0-1000."""
    m = re.fullmatch(r"(.+)\+ws(\d+)", entry)
    path, ws = (m[1], int(m[2])) if m else (entry, warm_start)
    if ws is not None and not 0 <= ws <= 1000:
        print(f"error: {f'--spaces {entry}: a warm start' if m else '--warm-start'} takes 0-1000 points, got {ws}",
              file=sys.stderr)
        raise SystemExit(2)
    return path, ws


def _key(space: str, mode: str, sampler: str, seed: int) -> str:
    return f"{space}/{mode}/{sampler}/{seed}"


def main(argv: list[str] | None = None) -> None:
    """Run the asked-for searches not yet in ``--out``, then report (and ``--plot``) all of them."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "quickstart.toml"))
    ap.add_argument("--budget-s", type=float, default=120.0, help="wall time of every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samplers", nargs="+", default=["nsga2", "tpe", "random"])
    ap.add_argument("--modes", nargs="+", default=["plain", "mf"], help=f"of {list(MODES)}")
    ap.add_argument("--full-steps", type=int, default=60, help="fine-tune steps of a full trial / the last rung")
    ap.add_argument("--min-steps", type=int, default=7, help="first fine-tuning rung (mf)")
    ap.add_argument("--eta", type=float, default=3.0)
    ap.add_argument("--bn-batches", type=int, default=0, help="mf: a first rung of 0 steps, adaptive BN on N batches")
    ap.add_argument("--bn-val-images", type=int, default=None,
                    help="mf: the 0-step rung scores this many validation images ([fidelity] bn_val_images)")
    ap.add_argument("--screen-latency-s", type=float, default=None,
                    help="mf: time candidates at the 0-step rung in one round of S seconds ([fidelity] "
                         "screen_latency_s)")
    ap.add_argument("--floor", type=float, default=None,
                    help="also report the real-scale measure: hypervolume of trials above this accuracy floor")
    ap.add_argument("--spaces", nargs="+", default=None, metavar="STUDY_FILE",
                    help="study files whose [space] each search runs in (default: --study's own); "
                         "FILE+wsN seeds that space's first N points ([space] warm_start), and its mf runs are "
                         "measured against FILE's plain runs in --out where it ran none of its own")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--val-subset", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's; 1 keeps OpenMP barriers from stalling on a shared machine)")
    ap.add_argument("--warm-start", type=int, default=None, metavar="N",
                    help="enqueue N points along each space's single-mode lines first ([space] warm_start)")
    ap.add_argument("--out", default=None, help="JSONL of finished runs: appended to, and skipped on a rerun")
    ap.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                    help="draw hypervolume against wall time (every run, and the mean over seeds) here")
    ap.add_argument("--no-run", action="store_true", help="report from --out only; refuse if a run is missing there")
    args = ap.parse_args(argv)
    if args.no_run and not args.out:
        print("error: --no-run reports from --out FILE.jsonl; give it", file=sys.stderr)
        raise SystemExit(2)
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        print(f"error: --plot writes a PNG file; give a name ending in .png, got {args.plot}", file=sys.stderr)
        raise SystemExit(2)
    if not set(args.modes) <= set(MODES):
        print(f"error: --modes takes {', '.join(MODES)}, got {' '.join(args.modes)}", file=sys.stderr)
        raise SystemExit(2)
    if any(m.startswith("mf-defer") for m in args.modes) and not args.bn_batches:
        print("error: --modes mf-defer defers the decisions of the 0-step screen; give --bn-batches (that rung)",
              file=sys.stderr)
        raise SystemExit(2)
    if args.floor is not None and not 0 <= args.floor < 1:
        print(f"error: --floor is an accuracy fraction in [0, 1), got {args.floor}", file=sys.stderr)
        raise SystemExit(2)
    if args.screen_latency_s is not None and (not 0.01 <= args.screen_latency_s <= 600 or not args.bn_batches):
        print(f"error: --screen-latency-s must be in [0.01, 600] seconds and needs --bn-batches (the rung it "
              f"times), got {args.screen_latency_s}", file=sys.stderr)
        raise SystemExit(2)
    if args.bn_val_images is not None and (args.bn_val_images < 1 or not args.bn_batches):
        print(f"error: --bn-val-images must be >= 1 and needs --bn-batches (the rung it scores), got "
              f"{args.bn_val_images}", file=sys.stderr)
        raise SystemExit(2)
    quiet_optuna()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_study_config(args.study)
    if (floored := [m for m in args.modes if m in FLOOR_MODES]) and base.constraints.min_accuracy is None:
        print(f"error: --modes {floored[0]} ranks by the study's accuracy floor; {args.study} sets no "
              f"[constraints] min_accuracy", file=sys.stderr)
        raise SystemExit(2)
    if args.train_subset or args.val_subset:
        base = dataclasses.replace(base, data=dataclasses.replace(
            base.data, train_subset=args.train_subset or base.data.train_subset,
            val_subset=args.val_subset or base.data.val_subset))
    spaces = {}
    for entry in args.spaces or [args.study]:
        path, ws = _space_entry(entry, args.warm_start)
        sp = base.space if path == args.study else load_study_config(path).space
        name = Path(path).stem + (f"+ws{ws}" if ws is not None else "")
        spaces[name] = sp if ws is None else {**sp, "warm_start": ws}
    out = Path(args.out) if args.out else None
    done: dict[str, dict] = {}
    if out is not None and out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r
    machine = machine_description()
    wanted = [(sp, mode, sampler, seed) for sp in spaces for mode in args.modes for sampler in args.samplers
              for seed in args.seeds]
    missing = [_key(*w) for w in wanted if _key(*w) not in done]
    if args.no_run and missing:
        print(f"error: --no-run: {len(missing)} of the asked-for runs are not in {out}: {', '.join(missing)}; "
              f"it holds {', '.join(sorted(done)) or 'none'}", file=sys.stderr)
        raise SystemExit(2)
    ctx = None
    tmp = Path(tempfile.mkdtemp(prefix="hp-bench-"))
    for sp, mode, sampler, seed in wanted:
        key = _key(sp, mode, sampler, seed)
        if key in done:
            continue
        if ctx is None:
            ctx = build_context(base)  # data + baseline (trained once and cached) shared by all runs
        trials, start, study, cfg = run(base, ctx, f"bench-{sp}-{mode}-{sampler}-{seed}", sampler, seed, mode,
                                        spaces[sp], args, tmp)
        rec = {"key": key, "budget_s": args.budget_s, "full_steps": args.full_steps, "rungs": cfg.fidelity.rungs()
               if mode in MF_MODES else [args.full_steps], "bn_batches": args.bn_batches if mode in MF_MODES else 0,
               "bn_val_images": args.bn_val_images if mode in MF_MODES else None,
               **({"screen_latency_s": args.screen_latency_s} if mode in MF_MODES and args.screen_latency_s else {}),
               "train": len(ctx.data.train), "val": len(ctx.data.val), "machine": machine,
               "savings": savings(study, args.full_steps).line(), "trials": record(trials, start)}
        done[key] = rec
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        print(f"{key}: {len(trials)} trials in {args.budget_s:.0f} s; {rec['savings']}", flush=True)
    runs = {k: done[_key(*k)] for k in wanted if _key(*k) in done}
    for sp, mode, sampler, seed in list(runs):  # a seeded space's mf runs are measured against the unseeded plain
        twin = (_unseeded(sp), "plain", sampler, seed)
        if mode in MF_MODES and _key(*twin) in done and _plain_twin(runs, (sp, mode, sampler, seed)) is None:
            runs[twin] = done[_key(*twin)]
    report(runs, args)
    if args.plot is not None:
        plot(runs, args)
        print(f"wrote {args.plot}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _normalisation(runs: dict[tuple, dict]) -> tuple[bool, np.ndarray, np.ndarray]:
    by_ratio = all(r["ratio"] is not None for rec in runs.values() for r in rec["trials"])
    allpts = np.concatenate([points(rec["trials"], by_ratio) for rec in runs.values()])
    return by_ratio, allpts.min(axis=0), allpts.max(axis=0)


def normalised_curves(runs: dict[tuple, dict], by_ratio: bool, lo: np.ndarray,
                      hi: np.ndarray) -> dict[tuple, list[tuple[float, float]]]:
    """The benchmark's own measure after each trial of each run (normalised by
    :func:`_normalisation` over all ``runs``)."""
    return {k: curve(rec["trials"], lo, hi, by_ratio) for k, rec in runs.items()}


def floor_curves(runs: dict[tuple, dict], floor: float) -> dict[tuple, list[tuple[float, float]]]:
    """The real-scale measure (``real_scale.hypervolume``) after each trial of each run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_scale import hypervolume as floor_hv

    def one(rec: dict) -> list[tuple[float, float]]:
        done = sorted((r for r in rec["trials"] if r["ratio"] is not None), key=lambda r: r["t"])
        return [(r["t"], floor_hv([(x["acc"], x["ratio"]) for x in done[: i + 1]], floor)) for i, r in enumerate(done)]

    return {k: one(rec) for k, rec in runs.items()}


def plot(runs: dict[tuple, dict], args) -> None:
    """``--plot``: hypervolume against wall time, a panel per measure, a colour per (space, mode,
    sampler): thin steps per seed, a thick line for their mean on a 1-second grid."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("normalised over all runs (no floor)", normalised_curves(runs, *_normalisation(runs)))]
    if args.floor is not None:
        panels.append((f"trials above {args.floor:.0%} validation top-1, ratio < 1", floor_curves(runs, args.floor)))
    groups: dict[tuple, list] = {}
    for k in runs:
        groups.setdefault(k[:3], []).append(k)
    grid = np.arange(0, args.budget_s + 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        for i, ((sp, mode, sampler), keys) in enumerate(groups.items()):
            colour = f"C{i % 10}"
            per_seed = np.array([[hv_at(curves[k], t) for t in grid] for k in keys])
            for row in per_seed:
                ax.step(grid, row, where="post", color=colour, alpha=0.3, lw=0.8)
            label = f"{sp} {mode}" + (f" {sampler}" if len({g[2] for g in groups}) > 1 else "")
            ax.plot(grid, per_seed.mean(axis=0), color=colour, lw=2.2, label=f"{label} (mean of {len(keys)})")
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("hypervolume")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, args.budget_s)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    first = next(iter(runs.values()))
    fig.suptitle(f"{Path(args.study).stem}: {first['train']} train / {first['val']} val images, "
                 f"{args.budget_s:.0f} s per run, one worker; {first['machine']}", fontsize=9)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)


def report(runs: dict[tuple, dict], args) -> None:
    """Hypervolume at 1/3, 1/2 and all of the budget per (space, mode, sampler), mean over seeds."""
    by_ratio, lo, hi = _normalisation(runs)
    curves = normalised_curves(runs, by_ratio, lo, hi)
    B = args.budget_s
    first = next(iter(runs.values()))
    print()
    # what the runs were, from their rows (a --no-run report need not repeat the flags they ran with)
    mf = next((rec for k, rec in runs.items() if k[1] in MF_MODES), None)
    rungs = mf["rungs"] if mf else FidelitySection(min_steps=args.min_steps, max_steps=args.full_steps,
                                                   eta=args.eta).rungs()
    print(f"study {Path(args.study).name} (train {first['train']}, val {first['val']} images), one worker, {B:.0f} s "
          f"per run, seeds {args.seeds}, full fine-tune {first['full_steps']} steps, mf rungs {rungs}"
          f"{' (0: adaptive BN on %d batches)' % mf['bn_batches'] if mf and mf['bn_batches'] else ''}; latency as "
          f"{'ratio to the baseline' if by_ratio else 'ms'}; machine: {first['machine']}")
    print(f"| space | mode | sampler | trials | HV at {B / 3:.0f} s | HV at {B / 2:.0f} s | HV at {B:.0f} s (sd) | "
          f"best acc | min latency | trial s | overhead (not fine-tune) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list] = {}
    for k in runs:
        groups.setdefault(k[:3], []).append(k)
    for (sp, mode, sampler), keys in groups.items():
        ts = [runs[k]["trials"] for k in keys]
        hv = {f: [hv_at(curves[k], f * B) for k in keys] for f in (1 / 3, 1 / 2, 1.0)}
        sd = statistics.stdev(hv[1.0]) if len(keys) > 1 else 0.0
        own = [r for t in ts for r in t if r["total_s"]]
        secs = statistics.mean(r["total_s"] for r in own) if own else float("nan")
        over = statistics.mean(1 - r["finetune_s"] / r["total_s"] for r in own) if own else float("nan")
        lat = statistics.mean(points(t, by_ratio)[:, 1].min() for t in ts if t)
        print(f"| {sp} | {mode} | {sampler} | {statistics.mean(len(t) for t in ts):.1f} | "
              f"{statistics.mean(hv[1 / 3]):.3f} | {statistics.mean(hv[1 / 2]):.3f} | {statistics.mean(hv[1.0]):.3f} "
              f"({sd:.3f}) | {100 * statistics.mean(max(r['acc'] for r in t) for t in ts if t):.1f}% | {lat:.3f} | "
              f"{secs:.1f} | {100 * over:.0f}% |")
    plain_mf = _plain_mf_pairs(runs)
    if plain_mf:
        print()
        print("| space | mode | sampler | seed | plain final HV | reached after | share of plain's wall time |")
        print("|---|---|---|---|---|---|---|")
        for p, m in plain_mf:
            target = hv_at(curves[p], B)
            t_mf = time_to(curves[m], target)
            print(f"| {m[0]} | {m[1]} | {p[2]} | {p[3]} | {target:.3f} | {_when(t_mf, B)} | "
                  f"{'-' if t_mf > B else f'{t_mf / B:.2f}'} |")
    print(f"(normalisation over all runs: accuracy {lo[0]:.3f}..{hi[0]:.3f}, latency {lo[1]:.3f}..{hi[1]:.3f};"
          f" ideal HV {1.1 * 1.1:.2f})")
    if args.floor is not None:
        floor_report(runs, args.floor, B)


def _unseeded(space: str) -> str:
    """The space a ``SPACE+wsN`` entry seeds (``SPACE`` itself for an unseeded one)."""
    return re.sub(r"\+ws\d+$", "", space)


def _plain_twin(runs: dict[tuple, dict], key: tuple) -> tuple | None:
    """The plain run a multi-fidelity run ``key`` is measured against: the same space, sampler and
    seed, or, where a seeded space ran no plain search, the unseeded space's (the search a warm
    start is meant to beat)."""
    for space in dict.fromkeys((key[0], _unseeded(key[0]))):
        twin = (space, "plain", *key[2:])
        if twin in runs:
            return twin
    return None


def _plain_mf_pairs(runs: dict[tuple, dict]) -> list[tuple[tuple, tuple]]:
    """(plain run, multi-fidelity run) keys (:func:`_plain_twin`), grouped by mf mode."""
    return [(twin, k) for m in MF_MODES for k in runs if k[1] == m and (twin := _plain_twin(runs, k)) is not None]


def floor_report(runs: dict[tuple, dict], floor: float, budget_s: float) -> None:
    """``--floor``: the real-scale study's measure (``real_scale.hypervolume``: trials above the
    accuracy floor, latency ratio below 1, no normalisation) per run, and how soon each ``mf`` run
    reaches its ``plain`` twin's final value by it."""
    curves = floor_curves(runs, floor)
    print(f"\nfloor {floor:g} (trials above it, latency ratio below 1):")
    print("| space | mode | sampler | HV per seed | mean | trials above the floor per seed |")
    print("|---|---|---|---|---|---|")
    groups: dict[tuple, list] = {}
    for k in runs:
        groups.setdefault(k[:3], []).append(k)
    for (sp, mode, sampler), keys in groups.items():
        hvs = [hv_at(curves[k], budget_s) for k in keys]
        above = [sum(1 for r in runs[k]["trials"] if r["t"] <= budget_s and r["ratio"] is not None
                     and r["acc"] > floor and r["ratio"] < 1.0) for k in keys]
        print(f"| {sp} | {mode} | {sampler} | {', '.join(f'{h:.4f}' for h in hvs)} | {statistics.mean(hvs):.4f} | "
              f"{', '.join(map(str, above))} |")
    for p, m in _plain_mf_pairs(runs):
        target = hv_at(curves[p], budget_s)
        t_mf = time_to(curves[m], target)
        print(f"{m[0]} {p[2]} seed {p[3]}: plain's final{'' if p[0] == m[0] else f' ({p[0]})'} {target:.4f} "
              f"reached by {m[1]} "
              + (f"after {t_mf:.0f} s ({t_mf / budget_s:.2f} of the budget)" if t_mf <= budget_s
                 else _when(t_mf, budget_s)))


if __name__ == "__main__":
    main()
