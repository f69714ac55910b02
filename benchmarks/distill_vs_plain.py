"""Does refine's distillation from the adapted teacher beat a plain fine-tune of the same budget?

The honest protocol of the real-scale study: the public ResNet-56 (``../shared/models/``), the JPEG
CIFAR-10 copy with validation = the first half of each test class by sorted file name and test =
the second half (``val_from = "test"``, ``val_size = 0.5``). Steps:

1. **Adapt**: the public checkpoint fine-tuned ``--adapt-epochs`` on the whole train folder (plain
   cross-entropy, ``[baseline] adapt_lr``, as ``[baseline] adapt_epochs`` does): the teacher. With
   ``--teacher FILE`` an already adapted checkpoint is used instead (e.g. the study's cached
   ``adapted.pt``, which records how it was adapted).
2. For each budget in ``--budgets`` (epochs): the adapted model fine-tuned that much more, once
   plainly and once per ``--distill WEIGHT:TEMPERATURE`` distilling from the adapted teacher
   (refine's recipe is ``finetune``'s default, 0.5:4, cosine schedule, lr ``--lr``).
3. With ``--pruned``, the same two ways for the adapted model pruned by 30% of channels and 4 blocks
   (weight magnitude, layer first).

Prints test top-1 (second half of the test folder, 5,000 images) of every model and the machine.

    python benchmarks/distill_vs_plain.py --data ../shared/data/cifar10-jpeg \\
        --checkpoint ../shared/models/resnet56-4bfd9763.th --adapt-epochs 1 --budgets 0.5 1 --pruned

Every fine-tune starts from seed 0, so the plain and distilled runs of one budget see the same
batches in the same order. ``--out FILE`` appends one JSON line per fine-tuned model (``model``,
``epochs``, ``way``, ``distill_weight``, ``temperature``, ``test_top1``, ``seconds``, ``machine``,
``date``): ``benchmarks/real_scale.py --plain-control FILE`` judges the refined baseline against the
plain row of refine's budget. Bad input (a budget, a recipe, an ``--out`` that cannot be written, a
missing checkpoint or data folder) is one ``error:`` line and exit code 2, before any fine-tune.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from hybridprune.errors import HybridPruneError


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise HybridPruneError(f"{name} must be a positive number, got {value:g}")


def recipes(raw: list[str]) -> list[tuple[float, float]]:
    """``--distill WEIGHT:TEMPERATURE`` values as (weight, temperature) pairs; a one-line
    :class:`HybridPruneError` unless each is two numbers with 0 <= weight <= 1 and temperature > 0."""
    out = []
    for r in raw:
        try:
            w, t = (float(x) for x in r.split(":"))
        except ValueError:
            raise HybridPruneError(f"--distill {r!r}: give WEIGHT:TEMPERATURE, e.g. 0.25:4") from None
        if not (0 <= w <= 1 and math.isfinite(t) and t > 0):
            raise HybridPruneError(f"--distill {r!r}: need 0 <= WEIGHT <= 1 and TEMPERATURE > 0")
        out.append((w, t))
    return out


def check(args: argparse.Namespace) -> list[tuple[float, float]]:
    """Check every option that needs no data before anything is loaded or fine-tuned (a run is an
    hour at 3 epochs: an unwritable ``--out`` must not surface after it); returns the recipes."""
    from hybridprune.io import check_writable

    for b in args.budgets:
        _positive("--budgets", b)
    _positive("--adapt-epochs", args.adapt_epochs)
    _positive("--adapt-lr", args.adapt_lr)
    _positive("--lr", args.lr)
    if args.batch_size < 1:
        raise HybridPruneError(f"--batch-size must be at least 1, got {args.batch_size}")
    for name, path in (("--checkpoint", args.checkpoint), ("--teacher", args.teacher)):
        if path is not None and not Path(path).is_file():
            raise HybridPruneError(f"{name} {path}: no such file; give a checkpoint file")
    if not Path(args.data).is_dir():
        raise HybridPruneError(f"--data {args.data}: no such folder; give an image folder (class subfolders)")
    if args.out is not None:
        check_writable(args.out, "--out", directory=False)
    return recipes(args.distill)


def main(argv: list[str] | None = None) -> int:
    """Adapt (or load) the teacher, fine-tune plainly and distilled, print and append the rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--adapt-epochs", type=float, default=1.0)
    ap.add_argument("--adapt-lr", type=float, default=0.01)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--pruned", action="store_true")
    ap.add_argument("--teacher", default=None, help="an adapted checkpoint to use instead of adapting here")
    ap.add_argument("--distill", nargs="+", default=["0.5:4"], metavar="WEIGHT:TEMPERATURE",
                    help="distillation recipes to compare with the plain fine-tune")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", type=Path, default=None, help="append one JSON line per fine-tuned model here")
    args = ap.parse_args(argv)
    try:
        _run(args, check(args))
    except HybridPruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace, distill: list[tuple[float, float]]) -> None:
    import torch

    from hybridprune.accuracy import evaluate
    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.data import load_dataset
    from hybridprune.devices import seed_everything
    from hybridprune.evaluators.timing import machine_description
    from hybridprune.pruning import HybridConfig, prune_model
    from hybridprune.recipe import Budget
    from hybridprune.records import Metrics
    from hybridprune.training import finetune

    start = time.monotonic()
    data = load_dataset("image_folder", args.data, val_size=0.5, val_from="test", cache_dir=args.cache_dir,
                        say=print)
    loaded = load_checkpoint(args.checkpoint, args.model)
    norm = loaded.normalization

    def test(model) -> float:
        return 100 * evaluate(model, data.test, norm, device="cpu").top1

    def fit(model, epochs, teacher=None, lr=args.lr, distill=(0.5, 4.0)):
        seed_everything(0)
        t0 = last = time.monotonic()

        def say(info) -> None:
            nonlocal last
            if time.monotonic() - last >= 60:
                last = time.monotonic()
                print(f"  step {info.step}/{info.total_steps}, {info.images_per_second:.0f} img/s", flush=True)

        r = finetune(model, data, Budget(epochs=epochs), norm, teacher=teacher, lr=lr, batch_size=args.batch_size,
                     seed=0, device="cpu", evaluate_val=False, progress=say,
                     distill_weight=distill[0], temperature=distill[1])
        return time.monotonic() - t0, r

    rows = [("public checkpoint, as it is", test(loaded.model), 0.0)]
    print(f"public: test top-1 {rows[0][1]:.2f}% ({len(data.test)} images)", flush=True)
    if args.teacher:
        adapted = load_checkpoint(args.teacher, args.model)
        teacher, how = adapted.model, adapted.metrics.get(Metrics.ADAPTED_FROM, {})
        rows.append((f"adapted {how.get('epochs', '?')} epoch(s), plain CE, lr {how.get('lr', '?')} (the teacher, "
                     f"{args.teacher.rsplit('/', 1)[-1]})", test(teacher), 0.0))
        print(f"adapted (from {args.teacher}): test top-1 {rows[-1][1]:.2f}%", flush=True)
    else:
        teacher = copy.deepcopy(loaded.model)
        secs, r = fit(teacher, args.adapt_epochs, lr=args.adapt_lr)
        rows.append((f"adapted {args.adapt_epochs:g} epoch(s), plain CE, lr {args.adapt_lr:g} (the teacher)",
                     test(teacher), secs))
        print(f"adapted: test top-1 {rows[-1][1]:.2f}% in {secs:.0f} s ({r.precision})", flush=True)
    teacher.eval()
    starts = [("unpruned", teacher)]
    if args.pruned:
        config = HybridConfig(channel_ratio=0.3, pruned_blocks=4, criterion="weight_magnitude", order="layer_first")
        starts.append(("pruned 30% channels, 4 blocks", prune_model(teacher, config, torch.zeros(1, 3, 32, 32)).model))
    for label, model in starts:
        for epochs in args.budgets if label == "unpruned" else args.budgets[:1]:
            ways = [("plain", None, (0.5, 4.0))] + [
                (f"distilled from the adapted teacher (weight {w:g}, T {t:g})", teacher, (w, t)) for w, t in distill]
            for how, t, recipe in ways:
                student = copy.deepcopy(model)
                secs, _ = fit(student, epochs, teacher=t, distill=recipe)
                rows.append((f"{label} + {epochs:g} epoch(s) {how}", test(student), secs))
                print(f"{rows[-1][0]}: test top-1 {rows[-1][1]:.2f}% in {secs:.0f} s", flush=True)
                if args.out is not None:
                    row = {"model": label, "epochs": epochs, "way": "plain" if t is None else "distilled",
                           "distill_weight": None if t is None else recipe[0],
                           "temperature": None if t is None else recipe[1], "test_top1": rows[-1][1],
                           "seconds": round(secs, 1), "machine": machine_description(),
                           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    print(f"\nmachine: {machine_description()}; total {time.monotonic() - start:.0f} s")
    print("| model | test top-1 (2nd half of each test class, 5,000 images) | fine-tune s |")
    print("|---|---:|---:|")
    for name, acc, secs in rows:
        print(f"| {name} | {acc:.2f}% | {secs:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
