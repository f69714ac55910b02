"""Training images/s of hybridprune's loop against the fastest step the hardware offers.

    python benchmarks/train_throughput.py --data-dir ../shared/data/cifar10-jpeg   # or --dataset digits

* limit: the fastest bare training step on this CPU: forward + backward + SGD on one pre-made
  random batch already on the device, no data pipeline, best of {fp32, bf16 autocast} x
  {contiguous, channels_last} (bf16 only where :func:`hybridprune.devices.bf16_supported`).
* plain fp32: the same bare step in fp32, contiguous tensors: what a straightforward loop gets.
* ours: :func:`hybridprune.training.train` with its defaults (``precision="auto"``), on the real
  split (uint8 on the device, batched crop/flip/normalise, label smoothing, per-step lr).
* cli (``--cli``): ``hybridprune train --model M --steps N`` in this process; its images/s is the
  one the command saves in the checkpoint's metrics (first step excluded).
* DataLoader (``--dataloader``): ``torch.utils.data.DataLoader`` with per-sample crop/flip/normalise.

Everything runs in one process with the same threads and batch, interleaved per repeat; the first
steps of each run are warm-up and not timed. Targets: ours >= 0.9 x limit, ours >= 1.8 x plain fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from hybridprune.checkpoints import load_checkpoint
from hybridprune.data import load_dataset
from hybridprune.devices import bf16_supported
from hybridprune.evaluators.timing import machine_description
from hybridprune.models import create_model, get_model_spec
from hybridprune.records import Metrics
from hybridprune.training import Budget, train

SHARED_JPEG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"


class PerSampleDataset(torch.utils.data.Dataset):
    """The tutorial pipeline: one image at a time, transforms per sample."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, mean, std, pad: int = 4) -> None:
        self.images, self.labels, self.pad = images_hwc, labels, pad
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div_(255)  # ToTensor
        x = nn.functional.pad(x, (self.pad,) * 4)  # RandomCrop(32, padding=4)
        dy, dx = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        x = x[:, dy:dy + 32, dx:dx + 32]
        if torch.rand(()) < 0.5:  # RandomHorizontalFlip
            x = x.flip(-1)
        return (x - self.mean) / self.std, int(self.labels[i])  # Normalize


def _timed_loop(model: nn.Module, batches, steps: int, warmup: int, bf16: bool = False) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss()
    model.train()
    it = iter(batches)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x, y = next(it)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = crit(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    return steps * len(y) / (time.perf_counter() - t0)


def run_bare(name, nc, batch, size, steps, warmup, bf16: bool, channels_last: bool) -> float:
    """A bare SGD step on one random batch: the hardware's speed for this model and precision."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(name, num_classes=nc).to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, nc, (batch,))
    return _timed_loop(model, iter(lambda: (x, y), None), steps, warmup, bf16)


def run_dataloader(name, nc, data, norm, batch, steps, warmup, workers) -> float:
    torch.manual_seed(0)
    model = create_model(name, num_classes=nc)
    ds = PerSampleDataset(
        data.train.images.permute(0, 2, 3, 1).contiguous().numpy(), data.train.labels.numpy(), norm.mean, norm.std
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)

    def forever():
        while True:
            yield from loader

    return _timed_loop(model, forever(), steps, warmup)


def run_ours(name, nc, data, norm, batch, steps, warmup) -> tuple[float, str]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=nc)
    times = []
    res = train(model, data.train, Budget(steps=warmup + steps), norm, lr=0.01, batch_size=batch, device="cpu",
                evaluate_val=False,
                progress=lambda s: times.append(time.perf_counter()))
    chosen = res.layout["chosen"] if res.layout else res.precision  # what precision = auto measured and chose
    return steps * batch / (times[-1] - times[warmup - 1]), chosen


def run_cli(name, args) -> float:
    from hybridprune.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "m.pt")
        argv = ["train", "--model", name, "--dataset", args.dataset, "--steps", str(args.warmup + args.steps),
                "--batch-size", str(args.batch_size), "--val-size", "0", "--device", "cpu", "--out", out]
        argv += ["--data-dir", args.data_dir] if args.data_dir else []
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if main(argv) != 0:
                raise SystemExit(f"hybridprune {' '.join(argv)} failed")
        return load_checkpoint(out).metrics[Metrics.TRAIN]["images_per_second"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="image_folder")
    p.add_argument("--data-dir", default=str(SHARED_JPEG) if SHARED_JPEG.is_dir() else None,
                   help="image folder (default: the shared JPEG CIFAR-10 copy beside the checkout)")
    p.add_argument("--models", default="resnet56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs per entry (contention)")
    p.add_argument("--cli", action="store_true", help="also time `hybridprune train` (evaluates the test split too)")
    p.add_argument("--dataloader", action="store_true", help="also time a conventional DataLoader loop")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = p.parse_args()

    data = load_dataset(args.dataset, args.data_dir, val_size=0)
    size = data.train.images.shape[-1]
    configs = [("fp32", False), ("fp32", True)] + ([("bf16", False), ("bf16", True)] if bf16_supported("cpu") else [])
    load = os.getloadavg()[0]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine_description()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, dataset {args.dataset} "
          f"({len(data.train)} train images), batch {args.batch_size}, {args.steps} timed steps after {args.warmup} "
          f"warm-up, best of {args.repeats}, load avg {load:.1f} at start")
    cols = [f"{prec}{' CL' if cl else ''}" for prec, cl in configs]
    extra = (["cli"] if args.cli else []) + (["DataLoader"] if args.dataloader else [])
    print(f"| model | {' | '.join(cols)} | limit (best) | ours | {' | '.join(extra + [''])}ours / limit | "
          f"ours / plain fp32 |{''.join(f' {e} / plain fp32 |' for e in extra)}")
    print("|---" * (len(cols) + 5 + 2 * len(extra)) + "|")
    for name in args.models.split(","):
        norm = get_model_spec(name).normalization
        nc = data.num_classes
        best: dict[str, float] = {}
        precision = "?"
        for _ in range(args.repeats):
            for (prec, cl), col in zip(configs, cols):
                best[col] = max(best.get(col, 0.0), run_bare(name, nc, args.batch_size, size, args.steps, args.warmup,
                                                             prec == "bf16", cl))
            ours, precision = run_ours(name, nc, data, norm, args.batch_size, args.steps, args.warmup)
            best["ours"] = max(best.get("ours", 0.0), ours)
            if args.cli:
                best["cli"] = max(best.get("cli", 0.0), run_cli(name, args))
            if args.dataloader:
                best["DataLoader"] = max(best.get("DataLoader", 0.0), run_dataloader(
                    name, nc, data, norm, args.batch_size, args.steps, args.warmup, args.workers))
        limit_col = max(cols, key=lambda c: best[c])
        limit, plain = best[limit_col], best["fp32"]
        print(f"| {name} | {' | '.join(f'{best[c]:.0f}' for c in cols)} | {limit:.0f} ({limit_col}) | "
              f"{best['ours']:.0f} ({precision}) | {''.join(f'{best[e]:.0f} | ' for e in extra)}"
              f"{best['ours'] / limit:.2f} | {best['ours'] / plain:.2f} |"
              f"{''.join(f' {best[e] / plain:.2f} |' for e in extra)}", flush=True)


if __name__ == "__main__":
    main()
