"""Does a longer refine close the gap between a pruned model and the smaller model a user would pick?

The real-scale result (``results/resnet56-cifar10-jpeg/``) refines every model 3 epochs. At that
budget the pruned ResNet-56 models at <= 0.5x latency sit below the public ResNet-20 refined the
same way. This benchmark refines chosen trials of a study again with larger budgets, through the
product's own refine step (:func:`hybridprune.search.refine.refine_trial`: the trial's model,
rebuilt from its record when its checkpoint is gone; distillation from the study's adapted teacher;
the study's learning rate and seed; test top-1 on the study's test split), and prints each trial's
test top-1 per budget next to the reference model at the same budget.

It never writes to the study's own storage: the study's storage file is copied once into ``--work``
(refine records its models on the study it refines) and its refined models go there too. Each
finished (trial, budget) is one JSON line in ``--out``, so a stopped run resumes where it was
(commit the file). Budgets already refined by the study itself (the published 3 epochs) are read
from its records, not run again; ``--rerun-recorded`` runs them here as well, as a control (this
machine's teacher and the rebuilt starting model), in a column of their own.

    python benchmarks/refine_budget.py studies/resnet56-cifar10-jpeg-stages.toml --trial 53 --trial -1 \\
        --epochs 3 10 --out results/refine-budget/resnet56.jsonl

Latency does not change with a fine-tune (same architecture), so the ratio printed is the one the
study's refine measured, on the machine named in its record.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", help="the study file whose trials to refine")
    ap.add_argument("--trial", type=int, action="append", required=True,
                    help="a trial number to refine (repeatable; -1 and below: reference models)")
    ap.add_argument("--epochs", type=float, nargs="+", default=[3.0, 10.0], help="refine budgets, in epochs")
    ap.add_argument("--distill-weight", type=float, default=None,
                    help="distillation weight (default: refine's, hybridprune.recipe.REFINE_DISTILL_WEIGHT)")
    ap.add_argument("--out", default="results/refine-budget/resnet56.jsonl", help="JSON lines, one per result")
    ap.add_argument("--work", default="runs/refine-budget", help="the copied journal and refined models")
    ap.add_argument("--rerun-recorded", action="store_true",
                    help="also refine the budgets the study's own refine recorded (a control on this machine, "
                         "teacher and starting model; its rows sit beside the recorded ones)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print what would run and what is recorded; run and write nothing")
    return ap.parse_args(argv)


class Refused(Exception):
    """Bad input: printed as one ``error:`` line, exit status 2, nothing run or written."""


def _fail(msg: str) -> None:
    raise Refused(msg)


def _done(out: Path) -> list[dict]:
    if not out.exists():
        return []
    rows = []
    for i, line in enumerate(out.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                _fail(f"{out}:{i} is not a JSON line; fix or remove it (nothing was run)")
    return rows


RECORD, HERE = "the study's refine record", "refine_budget.py"  # where a row's result comes from


def _key(row: dict) -> tuple:
    return row["study"], row["trial"], float(row["epochs"]), float(row["distill_weight"]), row["source"]


def main(argv: list[str] | None = None) -> int:
    """Refine the chosen trials at each budget not recorded yet, then print the table; exit status."""
    from hybridprune.errors import HybridPruneError

    try:
        _main(_args(argv))
    except (Refused, HybridPruneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _main(args: argparse.Namespace) -> None:
    from hybridprune.recipe import REFINE_DISTILL_WEIGHT
    from hybridprune.search import trials as T
    from hybridprune.search.references import by_number as trials_by_number
    from hybridprune.search.refine import RefineOptions, same_recipe
    from hybridprune.search.service import load
    from hybridprune.search.study import open_study, quiet_optuna

    quiet_optuna()
    weight = REFINE_DISTILL_WEIGHT if args.distill_weight is None else args.distill_weight
    budgets = [RefineOptions(epochs=e, distill_weight=weight) for e in args.epochs]
    cfg = load(args.study)
    study = open_study(cfg, create=False)
    by_number = trials_by_number(study)
    bad = [n for n in args.trial if n not in by_number]
    if bad:
        _fail(f"--trial {', '.join(map(str, bad))}: not a trial or reference model of study {cfg.name!r}; "
              f"trials are 0-{max(n for n in by_number)}, references {sorted(n for n in by_number if n < 0)}")
    out = Path(args.out)
    rows = _done(out)
    have = {_key(r) for r in rows}
    seed, lr = int(cfg.study.seed), cfg.finetune.lr
    todo = []
    for n in args.trial:
        t, published = by_number[n], T.refined(study, by_number[n])
        for opt in budgets:
            recorded = bool(published) and same_recipe(published, opt, lr, seed)
            setting = (cfg.name, n, float(opt.epochs), float(weight))
            if recorded and (*setting, RECORD) not in have:
                rows.append(_row(cfg, t, published, opt, study, source=RECORD))  # read, not re-run
                have.add(_key(rows[-1]))
                if not args.dry_run:
                    _append(out, rows[-1])
            if (not recorded or args.rerun_recorded) and (*setting, HERE) not in have:
                todo.append((t, opt))
    print(f"{len(todo)} refine(s) to run: " + ", ".join(f"trial {t.number} x {o.epochs:g} ep" for t, o in todo),
          flush=True)
    if todo and not args.dry_run:
        _run(args, cfg, todo, rows, out, study)
    _table(rows, cfg.name, args.trial)


def _row(cfg, trial, rec: dict, opt, study, *, source: str, machine: str | None = None) -> dict:
    from hybridprune.search import trials as T

    published = T.refined(study, trial)  # the latency of this architecture, from the study's refine
    return {"study": cfg.name, "trial": trial.number, "epochs": float(opt.epochs),
            "distill_weight": float(opt.distill_weight), "lr": rec.get(T.R_LR), "seed": rec.get(T.R_SEED),
            "test_top1": rec[T.R_TEST], "val_top1": rec[T.R_VAL], "seconds": rec.get(T.R_SECONDS),
            "latency_ratio": published.get(T.R_RATIO), "params": dict(getattr(trial, "params", {}) or {}),
            "source": source, "machine": machine,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _append(out: Path, row: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def _run(args, cfg, todo, rows, out, study) -> None:
    import torch

    from hybridprune.evaluators.timing import machine_description
    from hybridprune.search.context import build_context
    from hybridprune.search.references import by_number
    from hybridprune.search.refine import refine_trial
    from hybridprune.search.service import load
    from hybridprune.search.storage import get_artifact_store, storage_file
    from hybridprune.search.study import open_study

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    src = storage_file(cfg.storage_url)
    if src is None or not src.is_file():
        _fail(f"this benchmark copies a study stored in a local file; {cfg.name!r} is stored at {cfg.storage_url}")
    mine = work / f"{cfg.name}{src.suffix}"
    if not mine.exists():  # refine writes its records on the study: a copy keeps the study's own as they are
        shutil.copyfile(src, mine)
    copy = load(args.study, storage=cfg.storage_url.replace(str(src), str(mine)))
    copy = dataclasses.replace(copy, study=dataclasses.replace(copy.study, refined_artifact_dir=str(work / cfg.name)))
    twin = open_study(copy, create=False)
    ctx = build_context(copy)  # adapts the teacher when this machine has not cached it yet
    machine = f"{machine_description()}; torch {torch.__version__}; precision {copy.finetune.precision}"
    print(f"machine: {machine}", flush=True)
    store, kept = get_artifact_store(copy.artifact_dir), get_artifact_store(copy.refined_artifact_dir)
    twins = by_number(twin)
    try:
        with tempfile.TemporaryDirectory(prefix="refine-budget-", dir=work) as tmp:
            for t, opt in todo:
                print(f"refining {t.number} for {opt.epochs:g} epochs", flush=True)
                rec = refine_trial(ctx, twin, twins[t.number], store, opt, Path(tmp), kept)
                rows.append(_row(cfg, t, rec, opt, study, source=HERE, machine=machine))
                _append(out, rows[-1])
                print(f"trial {t.number}, {opt.epochs:g} epochs: test top-1 {100 * rec['test_top1']:.2f}% "
                      f"({rec['seconds']:.0f} s)", flush=True)
    finally:
        ctx.close()


def _table(rows: list[dict], study: str, trials: list[int]) -> None:
    """Test top-1 per trial and budget, and each trial against the best reference model at that budget."""
    mine = [r for r in rows if r["study"] == study and r["trial"] in trials]
    budgets = sorted({(r["epochs"], r["distill_weight"], r["source"]) for r in mine},
                     key=lambda b: (b[0], b[1], b[2] != RECORD))
    cell = {(r["trial"], r["epochs"], r["distill_weight"], r["source"]): r for r in mine}
    refs = [n for n in trials if n < 0]
    print(f"\nstudy {study}: test top-1 after refine (distillation weight per column; 'record': the study's own "
          f"refine, 'here': this benchmark)")
    print("| trial | latency ratio | " + " | ".join(f"{e:g} ep (w {w:g}, {'record' if src == RECORD else 'here'})"
                                                for e, w, src in budgets) + " |")
    print("|---|---:|" + "---:|" * len(budgets))
    for n in trials:
        got = [cell.get((n, *b)) for b in budgets]
        ratio = next((g["latency_ratio"] for g in got if g and g.get("latency_ratio") is not None), None)
        cols = []
        for b, g in zip(budgets, got):
            if g is None:
                cols.append("–")
                continue
            ref = [cell[(m, *b)]["test_top1"] for m in refs if (m, *b) in cell and m != n]
            vs = f" ({100 * (g['test_top1'] - max(ref)):+.2f} vs ref)" if ref and n >= 0 else ""
            cols.append(f"{100 * g['test_top1']:.2f}%{vs}")
        print(f"| {n} | {'–' if ratio is None else f'{ratio:.3f}'} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    sys.exit(main())
