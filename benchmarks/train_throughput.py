"""Training images/s of hybridprune's loop vs a conventional DataLoader loop vs the compute limit.

    python benchmarks/train_throughput.py --data-dir ../shared/data/cifar10-jpeg   # or --dataset digits

* ours: :func:`hybridprune.training.train` (uint8 split on the device, batched crop/flip/normalise).
* dataloader: ``torch.utils.data.DataLoader`` over a ``Dataset`` of uint8 HWC images with per-sample
  random crop (pad 4), flip and normalise in plain torch ops (what torchvision transforms would do).
* limit: the same model and optimiser trained on one pre-made random batch, no data pipeline at all.

All three use SGD (Nesterov), cross-entropy, batch 128, the same threads, in the same process; the
first steps of each run are warm-up and not timed. Prints a table and the ratios to the limit.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import torch.nn as nn

from hybridprune.data import load_dataset
from hybridprune.models import create_model, get_model_spec
from hybridprune.training import Budget, train


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


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)


def _timed_loop(model: nn.Module, batches, steps: int, warmup: int) -> float:
    opt, crit = _sgd(model), nn.CrossEntropyLoss()
    model.train()
    it = iter(batches)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x, y = next(it)
        loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    return steps * len(y) / (time.perf_counter() - t0)


def run_limit(name, nc, batch, steps, warmup) -> float:
    torch.manual_seed(0)
    model = create_model(name, num_classes=nc)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, nc, (batch,))
    return _timed_loop(model, iter(lambda: (x, y), None), steps, warmup)


def run_dataloader(name, nc, data, norm, batch, steps, warmup, workers) -> float:
    torch.manual_seed(0)
    model = create_model(name, num_classes=nc)
    ds = PerSampleDataset(data.train.images.permute(0, 2, 3, 1).contiguous().numpy(), data.train.labels.numpy(), norm.mean, norm.std)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)

    def forever():
        while True:
            yield from loader

    return _timed_loop(model, forever(), steps, warmup)


def run_ours(name, nc, data, norm, batch, steps, warmup) -> float:
    torch.manual_seed(0)
    model = create_model(name, num_classes=nc)
    # train() excludes its first step from images/s; also leave out the rest of the warm-up steps.
    times = []
    train(model, data.train, Budget(steps=warmup + steps), norm, lr=0.01, batch_size=batch, evaluate_val=False,
          progress=lambda s: times.append(time.perf_counter()))
    return steps * batch / (times[-1] - times[warmup - 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="image_folder")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the conventional loop")
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs per entry (contention)")
    args = p.parse_args()

    data = load_dataset(args.dataset, args.data_dir, val_size=0)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, dataset {args.dataset} "
          f"({len(data.train)} train images), batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"best of {args.repeats}")
    print("| model | ours img/s | DataLoader img/s | compute limit img/s | ours / limit | ours / DataLoader |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        norm = get_model_spec(name).normalization
        nc = data.num_classes
        best = {"limit": 0.0, "ours": 0.0, "dl": 0.0}
        for _ in range(args.repeats):
            best["limit"] = max(best["limit"], run_limit(name, nc, args.batch_size, args.steps, args.warmup))
            best["ours"] = max(best["ours"], run_ours(name, nc, data, norm, args.batch_size, args.steps, args.warmup))
            best["dl"] = max(best["dl"], run_dataloader(name, nc, data, norm, args.batch_size, args.steps, args.warmup, args.workers))
        print(f"| {name} | {best['ours']:.0f} | {best['dl']:.0f} | {best['limit']:.0f} | "
              f"{best['ours'] / best['limit']:.2f} | {best['dl'] and best['ours'] / best['dl']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
