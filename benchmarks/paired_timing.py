"""How a latency ratio is read next to the baseline: alternating single runs vs alternating blocks.

The study's latency step times each model next to the unpruned baseline. It used to alternate
single runs; a run right after the other model's runs with cold caches, and the published ratios
then disagreed with ``verify_results.py`` (which times each model for a second at a time) by up to
0.07. For every model of a published folder (its ``front.json``) or the ONNX files given, in
``--rounds`` interleaved rounds, this prints its ratio to the baseline read three ways:

* **single runs**: runs of the two alternating one by one, order flipping every pair, median
  per-pair ratio (the old pairing, re-implemented here);
* **blocks (ours)**: the product's pairing, ``OnnxRuntimeBackend.measure_pair``
  (:func:`hybridprune.evaluators.timing.alternate_blocks`), with the study's protocol;
* **steady state (reference)**: each model timed alone for half of ``--seconds`` (after 20 untimed
  runs, ``verify_results.median_ms``),
  alternating with the baseline, median per-round ratio: what a deployed model running back to
  back sees, and what ``verify_results.py`` measures.

Each way's median over rounds, and its bias against the steady state. Prints the CPU model and
flags and the load average.

``--costs S [S ...]`` measures instead what one model's latency costs a study and how steady it
is: for each round length ``S`` (``[latency] options.max_time_s``), ``--repeats`` repeats of the
study's latency step (``--study-rounds`` rounds of the paired blocks, the ratio by the study's own
``ratio_summary``), and of the same with single runs; the ways and lengths interleaved. Per model
and way: seconds per repeat, the median ratio of the repeats, and their spread ((max - min) /
median).

    python benchmarks/paired_timing.py results/resnet56-cifar10-jpeg --rounds 5
    python benchmarks/paired_timing.py results/resnet56-cifar10-jpeg --costs 2 0.8 0.4 --study-rounds 5 --repeats 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from verify_results import median_ms, session  # noqa: E402  the steady state is what verify measures


def _session(path: Path):
    """A one-thread ONNX Runtime session of ``path`` (verify's), its input, and a function timing
    one run of it (ms)."""
    import numpy as np

    sess = session(path, 1)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)

    def run_once() -> float:
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        return (time.perf_counter() - t0) * 1e3
    return sess, x, run_once


def single_runs(model, base, seconds: float) -> float:
    """Median per-pair ratio of single runs alternating for ``seconds``, the order flipping."""
    ratios, flip, end = [], False, time.perf_counter() + seconds
    while time.perf_counter() < end or len(ratios) < 20:
        flip = not flip
        if flip:
            m, b = model(), base()
        else:
            b, m = base(), model()
        ratios.append(m / b)
    return statistics.median(ratios)


def study_step(read_round, rounds: int) -> tuple[float, float]:
    """A study's latency step: ``rounds`` calls of ``read_round() -> (model ms, baseline ms, ratio)``,
    the ratio by the study's ``ratio_summary``; returns (ratio, seconds it took)."""
    from hybridprune.search import trials as T
    from hybridprune.search.latency import ratio_summary

    t0, ms, bs, rs = time.perf_counter(), [], [], []
    for _ in range(rounds):
        m, b, r = read_round()
        ms.append(m)
        bs.append(b)
        rs.append(r)
    return ratio_summary(ms, bs, ratios=rs)[T.R_RATIO], time.perf_counter() - t0


def costs(timer, base_path: Path, base, paths: list[Path], runs: dict, lengths: list[float], rounds: int,
          repeats: int) -> dict:
    """``{(model, way, length): [(ratio, seconds), ...]}`` over ``repeats`` interleaved repeats."""
    from hybridprune.evaluators.timing import Protocol

    got: dict = {}
    for rep in range(repeats):
        for p in paths:
            for s in lengths:
                protocol = Protocol(warmup_runs=10, min_runs=20, max_time_s=s)

                def blocks(p=p, protocol=protocol):
                    r = timer.measure_pair(p, base_path, protocol)
                    return r["median_ms"], r["baseline_median_ms"], r["pair_ratio"]

                def single(p=p, s=s):
                    r = single_runs(runs[p][2], base[2], s)
                    return r, 1.0, r  # a median of per-pair ratios: no baseline reading of its own

                got.setdefault((p, "blocks", s), []).append(study_step(blocks, rounds))
                got.setdefault((p, "single runs", s), []).append(study_step(single, rounds))
        print(f"repeat {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    return got


def print_costs(got: dict, paths: list[Path], lengths: list[float], rounds: int) -> None:
    """The cost table of ``--costs``."""
    print("| model | way | seconds per model | ratio (median of repeats) | spread between repeats |")
    print("|---|---|---|---|---|")
    for p in paths:
        for way in ("single runs", "blocks"):
            for s in lengths:
                rows = got[(p, way, s)]
                ratios = [r for r, _ in rows]
                med = statistics.median(ratios)
                print(f"| {p.name} | {way}, {rounds} x {s:g} s | {statistics.mean(t for _, t in rows):.2f} | "
                      f"{med:.3f} | {100 * (max(ratios) - min(ratios)) / med:.1f}% |")


def models_of(paths: list[Path]) -> tuple[Path, list[Path]]:
    """(baseline, models): from a published folder's front.json, or baseline first of the files given."""
    if len(paths) == 1 and paths[0].is_dir():
        front = json.loads((paths[0] / "front.json").read_text())
        base = next(paths[0] / e["onnx"] for e in front if e.get("reference") == "baseline")
        return base, [paths[0] / e["onnx"] for e in front if paths[0] / e["onnx"] != base]
    return paths[0], paths[1:]


def main(argv: list[str] | None = None) -> int:
    """Print each model's ratio read the three ways, and the bias of the first two."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, help="a folder with front.json, or baseline.onnx model.onnx ...")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="per way and model in each round")
    ap.add_argument("--costs", type=float, nargs="+", default=None, metavar="S",
                    help="instead: a study's latency step at these round lengths (max_time_s), its cost and spread")
    ap.add_argument("--study-rounds", type=int, default=3, help="--costs: rounds of one step ([latency] rounds)")
    ap.add_argument("--repeats", type=int, default=4, help="--costs: repeats of each step")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing or args.rounds < 1 or not args.seconds > 0:
        print(f"error: paths must exist (missing: {', '.join(missing) or 'none'}), --rounds >= 1 and --seconds > 0",
              file=sys.stderr)
        return 2
    if args.costs is not None and (min(args.costs) <= 0 or args.study_rounds < 1 or args.repeats < 2):
        print(f"error: --costs takes round lengths > 0 s, --study-rounds >= 1 and --repeats >= 2 (a spread needs "
              f"two), got {' '.join(map(str, args.costs))}, {args.study_rounds} and {args.repeats}", file=sys.stderr)
        return 2
    if len(args.paths) == 1 and args.paths[0].is_dir() and not (args.paths[0] / "front.json").is_file():
        print(f"error: {args.paths[0]} has no front.json (give a published folder, or ONNX files)", file=sys.stderr)
        return 2
    if len(args.paths) == 1 and not args.paths[0].is_dir():
        print("error: give a published folder, or the baseline ONNX file and at least one model", file=sys.stderr)
        return 2
    from hybridprune.evaluators.timing import OnnxRuntimeBackend, Protocol, machine_description, pair_blocks

    base_path, paths = models_of(args.paths)
    base = _session(base_path)
    runs = {p: _session(p) for p in paths}  # (session, input, run_once)
    timer = OnnxRuntimeBackend(threads=1)
    if args.costs is not None:
        load = os.getloadavg()[0]
        got = costs(timer, base_path, base, paths, runs, args.costs, args.study_rounds, args.repeats)
        print(f"{machine_description()}; onnxruntime 1 thread, batch 1; a study's latency step of {args.study_rounds}"
              f" rounds, {args.repeats} repeats, interleaved; blocks {json.dumps(pair_blocks())}; load average "
              f"{load:.2f} before, {os.getloadavg()[0]:.2f} after")
        print(f"baseline: {base_path.name}")
        print_costs(got, paths, args.costs, args.study_rounds)
        return 0
    protocol = Protocol(warmup_runs=10, min_runs=20, max_time_s=args.seconds)
    got = {p: {"single": [], "blocks": [], "steady": []} for p in paths}
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        for p in paths:
            got[p]["single"].append(single_runs(runs[p][2], base[2], args.seconds))
            got[p]["blocks"].append(timer.measure_pair(p, base_path, protocol)["pair_ratio"])
            b = median_ms(*base[:2], args.seconds / 2, warmup=20)
            got[p]["steady"].append(median_ms(*runs[p][:2], args.seconds / 2, warmup=20) / b)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"{machine_description()}; onnxruntime 1 thread, batch 1; {args.rounds} rounds of {args.seconds:g} s "
          f"per way; blocks {json.dumps(pair_blocks())}; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"baseline: {base_path.name}")
    print("| model | single runs | blocks (ours) | steady state (reference) | single-run bias | blocks bias |")
    print("|---|---|---|---|---|---|")
    worst = {"single": 0.0, "blocks": 0.0}
    for p in paths:
        med = {k: statistics.median(v) for k, v in got[p].items()}
        bias = {k: med[k] / med["steady"] - 1 for k in worst}
        for k in worst:
            worst[k] = max(worst[k], abs(bias[k]))
        print(f"| {p.name} | {med['single']:.3f} | {med['blocks']:.3f} | {med['steady']:.3f} | "
              f"{100 * bias['single']:+.1f}% | {100 * bias['blocks']:+.1f}% |")
    print(f"largest |bias|: single runs {100 * worst['single']:.1f}%, blocks {100 * worst['blocks']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
