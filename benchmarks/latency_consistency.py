"""Does one architecture read the same latency from trial to trial inside a study?

Reproduces what a study worker does between two latency measurements: a few PyTorch SGD steps
(the fine-tune of the previous trial, 2 threads) followed at once by an ONNX Runtime measurement
(1 thread) of the same ResNet-56 file, ``--rounds`` times, once timed in the worker's own process
(``[latency] isolate = false``) and once in the isolated child process (the default), rounds
interleaved so that load drift hits both alike. Prints, per way, the median latency of every
round, their spread ((max - min) / min) and coefficient of variation. Target: spread <= 3% on a
quiet machine.

    python benchmarks/latency_consistency.py --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from hybridprune.evaluators import export_onnx, get_latency_backend
from hybridprune.models import create_model
from hybridprune.search.latency_cache import IsolatedTimer


def torch_work(model: torch.nn.Module, steps: int) -> None:
    """A few SGD steps at batch 128 (what the previous trial's fine-tune leaves behind)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=6, help="SGD steps before each measurement")
    ap.add_argument("--max-time", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    options = {"threads": 1, "max_time_s": args.max_time}
    model = create_model("resnet56", num_classes=10).eval()
    path = export_onnx(model, Path(tempfile.mkdtemp()) / "resnet56.onnx", (1, 3, 32, 32), check=False)
    inproc = get_latency_backend("onnxruntime", **options)
    child = IsolatedTimer("onnxruntime", options)
    shape = dict(input_shape=(3, 32, 32), batch_size=1, precision="fp32")
    trainee = create_model("resnet56", num_classes=10)
    got: dict[str, list[float]] = {"in-process": [], "isolated child": []}
    try:
        child.measure(path, **shape)  # start the child outside the timed rounds
        for _ in range(args.rounds):
            torch_work(trainee, args.steps)
            got["in-process"].append(inproc.measure(path, **shape).median_ms)
            torch_work(trainee, args.steps)
            got["isolated child"].append(child.measure(path, **shape).median_ms)
    finally:
        child.close()
    print(f"ResNet-56 (10 classes) ONNX, onnxruntime 1 thread, batch 1, max_time_s {args.max_time}; "
          f"{args.steps} SGD steps (2 threads) before each of {args.rounds} rounds")
    print("| timed | median per round (ms) | spread (max-min)/min | CV |")
    print("|---|---|---|---|")
    for way, xs in got.items():
        spread = (max(xs) - min(xs)) / min(xs)
        cv = statistics.stdev(xs) / statistics.mean(xs) if len(xs) > 1 else 0.0
        print(f"| {way} | {', '.join(f'{x:.3f}' for x in xs)} | {100 * spread:.1f}% | {100 * cv:.1f}% |")


if __name__ == "__main__":
    main()
