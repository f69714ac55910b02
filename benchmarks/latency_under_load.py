"""One model, one latency, under load: does the study's latency step give the same number twice?

A competing CPU-bound process runs the whole time, switching between 0 and ``--max-busy`` busy
workers (default 1: one CPU-bound process on and off) every ``--period`` seconds, so the load
drifts between measurements the way a second study worker, a test run or a browser makes it
drift; ``--max-busy 2`` oversubscribes a 2-core machine (the harsh case). On ResNet-56 (ONNX
Runtime, batch 1, 1 thread) and a pruned copy of it (30% of channels, 4 blocks):

* **two trials, same architecture**: the study's latency step (:class:`StudyLatency`, cache off,
  ``--rounds`` rounds, each alternating short blocks of the model and the baseline) measures the
  pruned model twice, ``--gap`` seconds apart; target: the two latencies agree within 3%. For
  contrast, one plain measurement each (what a study did before: no baseline next to it).
* **in-study ratio vs an interleaved re-measure**: the trial's ratio against a 7-round
  re-measure (what ``refine`` and ``publish`` do); target: within 3%.

Prints the CPU model and flags and the load average with the numbers.

    python benchmarks/latency_under_load.py --repeats 5
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path


def _spin(stop: mp.Event, active: mp.Value, index: int) -> None:
    x = 0
    while not stop.is_set():
        if index < active.value:
            for _ in range(20000):
                x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        else:
            time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="pairs of trials measured")
    ap.add_argument("--rounds", type=int, default=5, help="[latency] rounds of the study")
    ap.add_argument("--gap", type=float, default=2.0, help="seconds between the two trials of a pair")
    ap.add_argument("--period", type=float, default=1.5, help="seconds per load phase")
    ap.add_argument("--max-busy", type=int, default=1, help="busy workers of the competitor at most")
    args = ap.parse_args()

    import optuna
    import torch

    from hybridprune.evaluators import get_latency_backend
    from hybridprune.evaluators.timing import machine_description
    from hybridprune.models import create_model
    from hybridprune.pruning import HybridConfig, prune_model
    from hybridprune.search.config import LatencySection
    from hybridprune.search.latency import StudyLatency

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {"threads": 1, "warmup_runs": 10, "min_runs": 30, "max_time_s": 0.5}
    settings = LatencySection(backend="onnxruntime", options=options, cache=False, rounds=args.rounds)
    base = create_model("resnet56", num_classes=10).eval()
    config = HybridConfig(channel_ratio=0.3, pruned_blocks=4, criterion="weight_magnitude")
    pruned = prune_model(base, config, torch.zeros(1, 3, 32, 32)).model.eval()

    stop, active = mp.Event(), mp.Value("i", 0)
    spinners = [mp.Process(target=_spin, args=(stop, active, i), daemon=True) for i in range(args.max_busy)]
    for p in spinners:
        p.start()
    t0 = time.monotonic()

    def drift() -> None:
        active.value = int((time.monotonic() - t0) / args.period) % (args.max_busy + 1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        study = optuna.create_study(directions=["maximize", "minimize"])
        lat = StudyLatency(settings, get_latency_backend("onnxruntime", **options), (3, 32, 32),
                           lock_path=Path(tmp) / "lock", baseline=base, work_dir=Path(tmp))
        plain = get_latency_backend("onnxruntime", **options)
        model = lat.export(pruned, "pruned")
        drift()
        reference = lat.reference_ms(study)
        for _ in range(args.repeats):
            got = []
            for _ in range(2):
                drift()
                trial = lat.trial(study, model)
                raw = plain.measure(model.onnx).median_ms  # one plain measurement, for contrast
                got.append((trial.latency_ms, trial.ratio, raw))
                time.sleep(args.gap)
            drift()
            again = lat.interleaved(study, lat.baseline, {0: model}, 7)[0]
            rows.append((got, again))
        lat.close()
    stop.set()
    for p in spinners:
        p.join(timeout=5)

    print(f"machine: {machine_description()}; load average {os.getloadavg()[0]:.2f} at the end")
    print(f"reference baseline latency {reference:.3f} ms; competitor: 0-{args.max_busy} busy processes, "
          f"{args.period:g} s per phase; {args.rounds} rounds per trial")
    print("pair | study step A ms | B ms | A-B disagreement | plain A ms | plain B ms | plain disagreement | "
          "ratio A | re-measure ratio (7 rounds) | ratio vs re-measure")
    worst_step = worst_plain = worst_ratio = 0.0
    for i, (((a, ra, pa), (b, rb, pb)), again) in enumerate(rows):
        step = abs(a - b) / min(a, b)
        pl = abs(pa - pb) / min(pa, pb)
        rr = max(abs(ra - again["latency_ratio"]), abs(rb - again["latency_ratio"])) / again["latency_ratio"]
        worst_step, worst_plain, worst_ratio = max(worst_step, step), max(worst_plain, pl), max(worst_ratio, rr)
        print(f"{i} | {a:.3f} | {b:.3f} | {100 * step:.1f}% | {pa:.3f} | {pb:.3f} | {100 * pl:.1f}% | {ra:.3f} | "
              f"{again['latency_ratio']:.3f} | {100 * rr:.1f}%")
    print(f"worst: study step {100 * worst_step:.1f}% (target <= 3%: {'met' if worst_step <= 0.03 else 'MISSED'}), "
          f"plain {100 * worst_plain:.1f}%, ratio vs re-measure {100 * worst_ratio:.1f}% "
          f"(target <= 3%: {'met' if worst_ratio <= 0.03 else 'MISSED'})")


if __name__ == "__main__":
    main()
