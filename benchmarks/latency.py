"""Benchmark: MACs vs measured latency of ResNet-56 and three pruned variants (run by hand).

For each model: MACs and parameters (fvcore via hybridprune.models.complexity), then the
median latency in PyTorch eager and ONNX Runtime (CPU EP) at batch 1 and 32, each measured
``--repeats`` times with the shared protocol; the coefficient of variation (CV) of those medians
shows how repeatable one measurement is. The reference column is the speedup FLOPs predict
(MACs ratio) next to the speedups the two runtimes deliver.

    python benchmarks/latency.py [--repeats 5] [--max-time 2] [--threads 1] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from hybridprune.evaluators import get_latency_backend
from hybridprune.evaluators.export import export_onnx
from hybridprune.models import create_model
from hybridprune.models.complexity import complexity
from hybridprune.pruning import HybridConfig, prune_model

VARIANTS = {
    "resnet56": None,
    "channels only (60%)": HybridConfig(channel_ratio=0.6, pruned_blocks=0, criterion="weight_magnitude"),
    "blocks only (16 of 25)": HybridConfig(channel_ratio=0.0, pruned_blocks=16, criterion="weight_magnitude"),
    "hybrid (40% + 8 blocks)": HybridConfig(channel_ratio=0.4, pruned_blocks=8, criterion="weight_magnitude"),
}
BATCHES = (1, 32)


def build_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    base = create_model("resnet56").eval()
    example = torch.randn(1, 3, 32, 32)
    return {name: base if cfg is None else prune_model(base, cfg, example).model.eval()
            for name, cfg in VARIANTS.items()}


def measure(models: dict, args: argparse.Namespace) -> dict:
    protocol = {"warmup_runs": 5, "min_runs": 10, "max_time_s": args.max_time, "rel_ci": 0.01}
    backends = {"torch": get_latency_backend("torch", threads=args.threads, **protocol),
                "onnxruntime": get_latency_backend("onnxruntime", threads=args.threads, **protocol)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            for batch in BATCHES:
                onnx_path = export_onnx(model, Path(tmp) / f"m{batch}.onnx", (batch, 3, 32, 32))
                for backend_name, backend in backends.items():
                    target = model if backend_name == "torch" else onnx_path
                    medians = [backend.measure(target, batch_size=batch).median_ms for _ in range(args.repeats)]
                    results[name, backend_name, batch] = medians
                    print(f"  {name:26s} {backend_name:11s} batch {batch:2d}: "
                          f"{statistics.median(medians):8.3f} ms, CV {cv(medians):.1f}%", file=sys.stderr)
    return results


def cv(values: list[float]) -> float:
    return 100.0 * statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-time", type=float, default=2.0, help="time cap of one measurement (s)")
    parser.add_argument("--threads", type=int, default=1, help="fixed CPU threads for both runtimes")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start, load_start = time.monotonic(), os.getloadavg()[0]
    models = build_models()
    cost = {name: complexity(m) for name, m in models.items()}
    results = measure(models, args)
    base = "resnet56"

    def med(name, backend, batch):
        return statistics.median(results[name, backend, batch])

    table = Table(title=f"ResNet-56 variants: MACs vs latency ({args.threads} thread(s), median of "
                        f"{args.repeats} measurements, CV across them)")
    headers = ["model", "MMACs", "params K"] + [f"{b} b{n} ms (CV)" for b in ("torch", "ort") for n in BATCHES] + [
        "MAC speedup", "torch speedup b1/b32", "ort speedup b1/b32"]
    for h in headers:
        table.add_column(h, justify="left" if h == "model" else "right")
    rows = []
    for name in models:
        row = [name, f"{cost[name].macs / 1e6:.1f}", f"{cost[name].params / 1e3:.0f}"]
        for backend in ("torch", "onnxruntime"):
            for batch in BATCHES:
                row.append(f"{med(name, backend, batch):.3f} ({cv(results[name, backend, batch]):.1f}%)")
        row.append(f"{cost[base].macs / cost[name].macs:.2f}x")
        for backend in ("torch", "onnxruntime"):
            row.append("/".join(f"{med(base, backend, b) / med(name, backend, b):.2f}x" for b in BATCHES))
        rows.append(row)
        table.add_row(*row)
    Console(width=220).print(table)
    worst = max(cv(v) for v in results.values())
    print(f"worst CV over all {len(results)} cells: {worst:.1f}% (target < 5%); wall time "
          f"{time.monotonic() - start:.0f} s; 1-min load average {load_start:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end on {os.cpu_count()} CPUs")
    if args.markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
