"""What the memoised teacher saves a distilled fine-tune: images/s of refine's step with the
teacher's forward pass against the same step with the teacher's outputs remembered.

    python benchmarks/distill_memo.py --steps 12 --repeats 2

The student is the public ResNet-56 with half its internal channels removed (weight magnitude,
uniform) or unpruned (``--channel-ratio 0``), the teacher the unpruned ResNet-56, the data the
JPEG CIFAR-10 train folder, recipe and precision those of refine (``precision="auto"``). One pass
fills the memo (it is timed too: the first model a refine distils pays for the teacher); the
timed runs then alternate "teacher" (a plain teacher) and "memo" (every batch a hit), each from
a fresh copy of the same student, and the script checks that both end with equal weights.
Prints the CPU and flags, images/s of each and the speed-up.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch

from hybridprune.checkpoints import load_checkpoint
from hybridprune.data import load_dataset
from hybridprune.distill import MemoTeacher
from hybridprune.evaluators.timing import machine_description
from hybridprune.pruning import HybridConfig, prune_model
from hybridprune.training import Budget, finetune

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    """Time the two steps interleaved and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=SHARED / "data" / "cifar10-jpeg")
    ap.add_argument("--checkpoint", type=Path, default=SHARED / "models" / "resnet56-4bfd9763.th")
    ap.add_argument("--channel-ratio", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()

    data = load_dataset("image_folder", args.data_dir, val_size=0.1, seed=0, say=print)
    train = data.train.subset(args.batch_size * args.steps)  # exactly the batches the runs see
    loaded = load_checkpoint(args.checkpoint, "resnet56")
    teacher, norm = loaded.model.eval(), loaded.normalization
    student = (prune_model(teacher, HybridConfig(args.channel_ratio, 0, "weight_magnitude"),
                           torch.zeros(1, 3, 32, 32)).model if args.channel_ratio else copy.deepcopy(teacher))
    memo = MemoTeacher(teacher)

    def run(t: torch.nn.Module):
        model = copy.deepcopy(student)
        res = finetune(model, train, Budget(steps=args.steps), norm, teacher=t, lr=0.01, batch_size=args.batch_size,
                       seed=0, evaluate_val=False, precision="auto")
        return res, model

    first, _ = run(memo)
    rates: dict[str, list[float]] = {"teacher": [], "memo": []}
    weights = {}
    for _ in range(args.repeats):
        for name, t in (("teacher", teacher), ("memo", memo)):
            res, model = run(t)
            rates[name].append(res.images_per_second)
            weights[name] = model.state_dict()
    same = all(torch.equal(a, b) for a, b in zip(weights["teacher"].values(), weights["memo"].values(), strict=True))
    best = {k: max(v) for k, v in rates.items()}
    print(f"# {machine_description()}; student: ResNet-56, channel ratio {args.channel_ratio}; "
          f"batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats, precision {first.precision}, "
          f"channels_last {first.channels_last}")
    print(f"first pass (fills the memo): {first.images_per_second:.1f} img/s")
    for k, v in rates.items():
        print(f"{k:>8}: best {best[k]:.1f} img/s (median {statistics.median(v):.1f})")
    print(f"speed-up memo / teacher: {best['memo'] / best['teacher']:.2f}x; memo hits {memo.hits}, misses "
          f"{memo.misses}; equal weights after training: {same}")


if __name__ == "__main__":
    main()
