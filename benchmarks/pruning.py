"""Pruning benchmark on the pretrained option-A ResNet-56 (CIFAR-10), run by hand.

Part 1 (ours vs the reference, same run): channel pruning of all groups (scope ``all``, uniform
L1 weight magnitude) by hybridprune vs Torch-Pruning's own ``BasePruner`` with
``MagnitudeImportance(p=1)`` (given our option-A shortcut pruner, which it needs). Both remove the
same number of channels per group; they differ in how a group's importance is aggregated.

Part 2: the paper's hybrid setting (internal channels + 4 blocks) for every criterion.

Accuracy is top-1 on the first N CIFAR-10 test images per class *without* fine-tuning (it shows
how much each criterion damages the network, not final accuracy).

Usage: python benchmarks/pruning.py [--per-class 100] [--ratio 0.3] [--blocks 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hybridprune.accuracy import evaluate
from hybridprune.checkpoints import load_checkpoint
from hybridprune.data import Split, calibration_batches
from hybridprune.models.complexity import complexity
from hybridprune.models.resnet_cifar import ZeroPadShortcut
from hybridprune.pruning import HybridConfig, list_criteria, prune_model
from hybridprune.pruning.graph import ZeroPadPruner

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _images(split_dir: Path, per_class: int) -> Split:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, c in enumerate(classes):
        for f in sorted((split_dir / c).iterdir())[:per_class]:
            xs.append(np.asarray(Image.open(f).convert("RGB")))
            ys.append(label)
    return Split(torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ys))


def _row(name, model, base, norm, test, seconds):
    c = complexity(model)
    acc = evaluate(model, test, norm).top1
    return (name, f"{c.params:,}", f"{c.params / base.params:.1%}", f"{c.macs / 1e6:.2f}M",
            f"{c.macs / base.macs:.1%}", f"{acc:.2%}", f"{seconds:.2f}")


def main() -> None:
    import torch_pruning as tp

    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--blocks", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ck = load_checkpoint(SHARED / "models" / "resnet56-4bfd9763.th")
    model, norm = ck.model, ck.normalization
    data = SHARED / "data" / "cifar10-jpeg"
    test = _images(data / "test", args.per_class)
    calib = calibration_batches(_images(data / "train", 20), norm, 2, batch_size=64, seed=0)
    example = torch.zeros(1, 3, 32, 32)
    base = complexity(model)
    rows = [_row("unpruned", model, base, norm, test, 0.0)]

    t = time.perf_counter()
    ours = prune_model(model, HybridConfig(args.ratio, 0, "weight_magnitude", scope="all"), example).model
    rows.append(_row(f"ours: L1, scope all, ratio {args.ratio}", ours, base, norm, test, time.perf_counter() - t))

    t = time.perf_counter()
    ref = __import__("copy").deepcopy(model)
    pruner = tp.pruner.BasePruner(
        ref, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=args.ratio,
        ignored_layers=[ref.linear], customized_pruners={ZeroPadShortcut: ZeroPadPruner()},
    )
    pruner.step()
    rows.append(
        _row(f"Torch-Pruning BasePruner: L1, ratio {args.ratio}", ref, base, norm, test, time.perf_counter() - t)
    )

    for crit in list_criteria():
        for order in ("channel_first", "layer_first"):
            t = time.perf_counter()
            cfg = HybridConfig(args.ratio, args.blocks, crit, order=order, calib_batches=2)
            res = prune_model(model, cfg, example, calib)
            rows.append(_row(f"{crit}, {order}, internal, {args.blocks} blocks", res.model, base, norm, test,
                             time.perf_counter() - t))

    head = (
        "configuration",
        "params",
        "params kept",
        "MACs",
        "MACs kept",
        f"top-1 ({len(test)} imgs, no FT)",
        "prune s",
    )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |")


if __name__ == "__main__":
    main()
