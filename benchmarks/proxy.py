"""How far can each cheap score of a pruned model be trusted? Rank correlation of every proxy with
the test top-1 the model reaches after ``refine``.

Configurations: ``--configs`` points spread over the hybrid space by a Latin hypercube (channel
ratio 0-``--max-ratio``, 0-``--max-blocks`` removed blocks), cycling through every criterion and
both orders. Each is pruned from the study's adapted baseline and scored by:

* ``pruned``: validation top-1 right after pruning;
* ``bn``: after adaptive batch norm (``--bn-batches`` train batches, forward only: the 0-step rung);
* ``ft<N>``: after N fine-tune steps (``--steps``, continuing from the BN-adapted model as a
  study's rung ladder does, with the study's ``[finetune]`` recipe and teacher);
* the reference, ``refined``: test top-1 after ``--refine-epochs`` more epochs of distillation from
  the adapted teacher (refine's recipe), starting from the last rung's model, as ``refine`` does.

Validation and test are the study's splits (with ``val_from = "test"``: the two halves of each test
class, so neither was seen by the public weights). ``--train-images`` limits the refine epochs to a
class-balanced subset of the train split (to fit a session; say so when quoting the numbers).

Results go one JSON line per configuration to ``--out`` and a run resumes where it stopped (each
line names the machine and the adapted teacher's accuracies, since a run can span sessions; the
benchmark's own file is committed, ``results/proxy-resnet56/``, because a session's ``runs/`` does
not outlive it); the
summary (Spearman and Kendall per proxy, the share of the reference's top third that the proxy
also ranks in its top third, mean cost in seconds) is printed as a Markdown table, and a scatter
plot is written next to ``--out`` (``--report-only`` does only that, from the lines already there).

``--bn-val-images 500 1000 2000`` re-scores only the BN proxy of the configurations already in
``--out``, on seeded validation samples of that many images (what ``[fidelity] bn_val_images``
does to a study's 0-step rung), and reports each sample's rank agreement with the stored refined
reference and its evaluation time; nothing is fine-tuned (rows: ``<out>-bn-val.jsonl``).

    python benchmarks/proxy.py studies/resnet56-cifar10-jpeg.toml --configs 24 --train-images 10000 \\
        --out results/proxy-resnet56/resnet56.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path


def configurations(n: int, criteria: list[str], orders: list[str], max_ratio: float, max_blocks: int,
                   seed: int = 0) -> list[dict]:
    """``n`` points of the hybrid space: a Latin hypercube over (channel ratio, removed blocks),
    criteria and orders cycled so that every (criterion, order) pair appears."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ratio = (rng.permutation(n) + rng.random(n)) / n * max_ratio
    blocks = np.floor((rng.permutation(n) + rng.random(n)) / n * (max_blocks + 1)).astype(int)
    return [{"channel_ratio": round(round(float(ratio[i]) / 0.05) * 0.05, 2), "pruned_blocks": int(blocks[i]),
             "criterion": criteria[i % len(criteria)], "order": orders[(i // len(criteria)) % len(orders)]}
            for i in range(n)]


def evaluate_config(ctx, params: dict, args, train) -> dict:
    """Prune one configuration and score it by every proxy and the refined reference."""
    from hybridprune.accuracy import adapt_batchnorm, evaluate
    from hybridprune.models.complexity import complexity
    from hybridprune.recipe import Budget
    from hybridprune.search.objective import prune_config
    from hybridprune.training import finetune

    cfg, f = ctx.cfg, ctx.cfg.finetune
    kw = ctx.precision_kwargs()
    row: dict = {"params": params, "score": {}, "seconds": {}}
    t0 = time.perf_counter()
    model = prune_config(ctx, ctx.space.to_config(params))[0]  # what a study's trial prunes
    row["macs"] = int(complexity(model.cpu().eval(), input_size=ctx.input_size).macs)

    def val() -> float:
        return 100 * float(evaluate(model, ctx.data.val, ctx.normalization, device=ctx.device, **kw).top1)

    def mark(name: str, score: float) -> None:
        row["score"][name] = score
        row["seconds"][name] = time.perf_counter() - t0  # cumulative: what a rung costs from scratch

    mark("pruned", val())
    adapt_batchnorm(model, ctx.data.train, ctx.normalization, batches=args.bn_batches, batch_size=f.batch_size,
                    seed=cfg.study.seed, device=ctx.device)
    mark("bn", val())
    teacher = ctx.model if f.distill else None
    done = 0
    for k, steps in enumerate(args.steps):
        finetune(model, ctx.data, Budget(steps=steps - done), ctx.normalization, teacher=teacher, seed=1000 * (k + 1),
                 device=ctx.device, evaluate_val=False, **f.train_kwargs())
        done = steps
        mark(f"ft{steps}", val())
    t1 = time.perf_counter()
    # the reference's refine has one seed for every configuration: the teacher computes each batch once
    finetune(model, train, Budget(epochs=args.refine_epochs), ctx.normalization, teacher=ctx.teacher(), lr=f.lr,
             batch_size=f.batch_size, seed=7, device=ctx.device, evaluate_val=False, **kw)
    row["refined"] = 100 * float(evaluate(model, ctx.data.test, ctx.normalization, device=ctx.device, **kw).top1)
    row["refine_seconds"] = time.perf_counter() - t1
    return row


def rescore_bn(ctx, params: dict, args, sizes: list[int]) -> dict:
    """Prune one configuration, adapt its BN statistics as :func:`evaluate_config` does, and score
    it on the whole validation split and on seeded samples of ``sizes`` images (the study's
    ``[fidelity] bn_val_images``); seconds are each score's own evaluation time."""
    from hybridprune.accuracy import adapt_batchnorm, evaluate
    from hybridprune.search.objective import prune_config

    f, kw = ctx.cfg.finetune, ctx.precision_kwargs()
    model = prune_config(ctx, ctx.space.to_config(params))[0]
    adapt_batchnorm(model, ctx.data.train, ctx.normalization, batches=args.bn_batches, batch_size=f.batch_size,
                    seed=ctx.cfg.study.seed, device=ctx.device)
    row: dict = {"params": params, "score": {}, "seconds": {}}
    for n in [None, *sizes]:
        split = ctx.data.val if n is None else ctx.data.val.sample(n, ctx.cfg.study.seed)
        t0 = time.perf_counter()
        top1 = 100 * float(evaluate(model, split, ctx.normalization, device=ctx.device, **kw).top1)
        name = "bn" if n is None else f"bn{n}"
        row["score"][name], row["seconds"][name] = top1, time.perf_counter() - t0
    return row


def summary(rows: list[dict], proxies: list[str]) -> list[dict]:
    """Per proxy: Spearman and Kendall rank correlation with the refined test top-1, the share of
    the reference's top third the proxy also puts in its top third, and its mean cost."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    ref = np.array([r["refined"] for r in rows])
    k = max(1, len(rows) // 3)
    best = set(np.argsort(-ref)[:k])
    out = []
    for p in proxies:
        x = np.array([r["score"][p] for r in rows])
        out.append({"proxy": p, "spearman": float(spearmanr(x, ref).statistic),
                    "kendall": float(kendalltau(x, ref).statistic),
                    "top_third": len(best & set(np.argsort(-x)[:k])) / k,
                    "seconds": float(np.mean([r["seconds"][p] for r in rows]))})
    return out


def plot(rows: list[dict], proxies: list[str], path: Path, stats: list[dict]) -> None:
    """One scatter per proxy: proxy score against refined test top-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(proxies), figsize=(3.2 * len(proxies), 3.2), sharey=True)
    ref = [r["refined"] for r in rows]
    for ax, p, s in zip(axes, proxies, stats):
        ax.scatter([r["score"][p] for r in rows], ref, s=14)
        ax.set_title(f"{p}: rho {s['spearman']:.2f}, {s['seconds']:.0f} s", fontsize=9)
        ax.set_xlabel("val top-1 (%)")
    axes[0].set_ylabel("test top-1 after refine (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", help="study file: its model, adapted baseline, data, space and [finetune]")
    ap.add_argument("--configs", type=int, default=24)
    ap.add_argument("--max-ratio", type=float, default=0.7)
    ap.add_argument("--max-blocks", type=int, default=20)
    ap.add_argument("--bn-batches", type=int, default=8)
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 60, 180], help="cumulative fine-tune rungs")
    ap.add_argument("--refine-epochs", type=float, default=2.0)
    ap.add_argument("--train-images", type=int, default=None, help="refine on this many train images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                    help="override [baseline] and [finetune] precision (default: the study's); a run that spans "
                         "CPUs keeps the precision its first rows had")
    ap.add_argument("--out", required=True, help="JSON lines, one per configuration (resumed)")
    ap.add_argument("--bn-val-images", type=int, nargs="+", default=None, metavar="N",
                    help="re-score the BN proxy of every configuration already in --out on seeded validation "
                         "samples of N images (the study's [fidelity] bn_val_images) and report their rank "
                         "agreement with the refined reference; rows go to <out>-bn-val.jsonl (resumed)")
    ap.add_argument("--report-only", action="store_true",
                    help="print the table and write the plot of the configurations already in --out (none run)")
    args = ap.parse_args()
    if args.configs < 4 or sorted(set(args.steps)) != args.steps or args.steps[0] < 1 or args.refine_epochs <= 0:
        raise SystemExit("error: --configs >= 4, --steps strictly increasing and >= 1, --refine-epochs > 0")
    if args.bn_val_images and min(args.bn_val_images) < 1:
        print(f"error: --bn-val-images takes validation sample sizes >= 1, got {args.bn_val_images}", file=sys.stderr)
        raise SystemExit(2)

    if args.report_only:
        rows = [json.loads(line) for line in Path(args.out).read_text().splitlines()]
        report(rows, args, f"{rows[0].get('train_images', args.train_images or 'all')}")
        return
    import dataclasses

    from hybridprune.evaluators.timing import machine_description
    from hybridprune.search.config import load_study_config
    from hybridprune.search.context import build_context
    from hybridprune.spaces.base import Choice

    cfg = load_study_config(args.study)
    if args.precision:
        cfg = dataclasses.replace(cfg, baseline=dataclasses.replace(cfg.baseline, precision=args.precision),
                                  finetune=dataclasses.replace(cfg.finetune, precision=args.precision))
    ctx = build_context(cfg)
    train = ctx.data.train.sample(args.train_images, args.seed) if args.train_images else ctx.data.train
    crit, order = ctx.space.params["criterion"], ctx.space.params["order"]
    points = configurations(args.configs, list(crit.choices) if isinstance(crit, Choice) else [crit.value],
                            list(order.choices) if isinstance(order, Choice) else [order.value],
                            args.max_ratio, min(args.max_blocks, ctx.space.removable_blocks), args.seed)
    if "round_to" in ctx.space.params:
        points = [{**p, "round_to": 1} for p in points]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    def key(params: dict) -> str:
        return json.dumps(params, sort_keys=True)

    done = {key(r["params"]) for r in rows}
    from hybridprune.records import Metrics
    teacher = {k: ctx.baseline_metrics.get(k) for k in (Metrics.VAL_TOP1, Metrics.TEST_TOP1)}
    print(f"# {machine_description()}; {len(rows)} of {len(points)} configurations already in {out}; "
          f"val {len(ctx.data.val)} images, test {len(ctx.data.test)}, refine on {len(train)} train images "
          f"x {args.refine_epochs:g} epochs", flush=True)
    if args.bn_val_images:
        bn_val(ctx, rows, out, args, key)
        return
    for i, params in enumerate(points):
        if key(params) in done:
            continue
        row = evaluate_config(ctx, params, args, train)
        row["machine"] = machine_description()
        row["train_images"] = len(train)
        row["precision"] = cfg.finetune.precision
        row["teacher"] = teacher  # rows of several sessions each name the adapted model they were pruned from
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        rows.append(row)
        print(f"[{i + 1}/{len(points)}] {params}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["score"].items())
              + f", refined {row['refined']:.2f} ({row['seconds'][f'ft{args.steps[-1]}']:.0f} s + refine "
              f"{row['refine_seconds']:.0f} s)", flush=True)
    wanted = {key(p) for p in points}
    rows = [r for r in rows if key(r["params"]) in wanted]
    report(rows, args, len(train))


def bn_val(ctx, rows: list[dict], out: Path, args: argparse.Namespace, key) -> None:
    """``--bn-val-images``: the BN proxy on validation samples, against the refined reference of
    the rows in ``out`` (their full-split ``bn`` score read again here is printed beside the stored
    one: the same model, BN statistics and images should give it back)."""
    from hybridprune.evaluators.timing import machine_description

    side = out.with_name(out.stem + "-bn-val.jsonl")
    done = {key(r["params"]): r for r in map(json.loads, side.read_text().splitlines())} if side.exists() else {}
    for i, row in enumerate(rows):
        if key(row["params"]) not in done:
            new = rescore_bn(ctx, row["params"], args, args.bn_val_images)
            new["machine"], new["precision"] = machine_description(), ctx.cfg.finetune.precision
            with side.open("a") as fh:
                fh.write(json.dumps(new) + "\n")
            done[key(row["params"])] = new
            print(f"[{i + 1}/{len(rows)}] {row['params']}: stored bn {row['score']['bn']:.2f}, "
                  + ", ".join(f"{k} {v:.2f} ({new['seconds'][k]:.1f} s)" for k, v in new["score"].items()), flush=True)
    merged = [{"refined": r["refined"], "score": {"bn (stored)": r["score"]["bn"], **done[key(r["params"])]["score"]},
               "seconds": {"bn (stored)": float("nan"), **done[key(r["params"])]["seconds"]}} for r in rows]
    names = ["bn (stored)", "bn", *[f"bn{n}" for n in args.bn_val_images]]
    print(f"\n{len(merged)} configurations; BN proxy (adaptive BN, {args.bn_batches} train batches) scored on "
          f"validation samples; machine {machine_description()}")
    print("| proxy | Spearman | Kendall | top-third recall | evaluation (s, mean) |\n|---|---|---|---|---|")
    for s in summary(merged, names):
        print(f"| {s['proxy']} | {s['spearman']:.3f} | {s['kendall']:.3f} | {s['top_third']:.2f} | "
              f"{s['seconds']:.1f} |")
    gap = [abs(r["score"]["bn (stored)"] - r["score"]["bn"]) for r in merged]
    print(f"bn read again vs stored: max |difference| {max(gap):.2f} points, mean {sum(gap) / len(gap):.2f}")


def report(rows: list[dict], args: argparse.Namespace, train_images: int | str) -> None:
    """The correlation table (printed) and the scatter plot (next to ``--out``) of ``rows``."""
    proxies = ["pruned", "bn"] + [f"ft{s}" for s in args.steps]
    stats = summary(rows, proxies)
    print(f"\n{len(rows)} configurations; reference: test top-1 after {args.refine_epochs:g} epoch(s) of refine "
          f"(distilled from the adapted teacher) on {train_images} train images; machine {rows[0].get('machine')}")
    print("| proxy | Spearman | Kendall | top-third recall | mean cost (s, cumulative) |\n|---|---|---|---|---|")
    for s in stats:
        print(f"| {s['proxy']} | {s['spearman']:.3f} | {s['kendall']:.3f} | {s['top_third']:.2f} | "
              f"{s['seconds']:.1f} |")
    for what in ("machine", "teacher", "precision"):  # a run that spanned sessions says whether they agreed
        seen = sorted({json.dumps(r.get(what), sort_keys=True) for r in rows})
        print(f"{what}: {'one for all rows' if len(seen) == 1 else f'{len(seen)} different'}: {'; '.join(seen)}")
    spread = [r["refined"] for r in rows]
    print(f"refined test top-1: min {min(spread):.2f}, max {max(spread):.2f}; "
          f"nan-free: {all(math.isfinite(x) for x in spread)}")
    png = Path(args.out).with_suffix(".png")
    plot(rows, proxies, png, stats)
    print(f"plot: {png}")

if __name__ == "__main__":
    main()
