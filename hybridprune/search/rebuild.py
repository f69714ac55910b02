"""A trial's model rebuilt from what the storage records, for when its checkpoint artifact is gone.

A study's storage can outlive its artifact store: a journal file carried to another machine, a
PostgreSQL study whose workers kept their artifacts on their own disks, a run folder cleaned to
save space. Every searched model is a function of what the storage holds: the baseline (cached, or
adapted again from the same checkpoint, seed and recipe), the trial's parameters, and its fine-tune
schedule (the rungs it reached; seeds from the study seed and the rung index).
:func:`rebuild` replays exactly that and scores the replay on validation, beside the accuracy the
trial recorded, so the user sees whether the replay matched: on the same CPU and precision it
does; another CPU's kernels round differently and the two drift apart by a little.

A reference model (``[references] models``) is rebuilt by loading (and adapting) it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hybridprune.errors import HybridPruneError
from hybridprune.search import trials as T


@dataclass(frozen=True)
class Rebuilt:
    """A trial's model made again, and how its validation top-1 compares with the recorded one."""

    model: Any
    record: dict | None   # the pruning record (``None``: unpruned)
    metrics: dict         # what the trial's checkpoint would have carried
    val_top1: float       # validation top-1 of the replay, a fraction
    recorded_top1: float  # what the trial recorded

    def to_dict(self) -> dict:
        """The refine record's ``rebuilt`` entry."""
        return {"val_top1": self.val_top1, "recorded_val_top1": self.recorded_top1}

    def describe(self, number: int) -> str:
        """One line for the console."""
        return (f"trial {number}: checkpoint artifact missing, rebuilt from its record: validation top-1 "
                f"{100 * self.val_top1:.2f}% (recorded {100 * self.recorded_top1:.2f}%)")


def rebuild(ctx: Any, trial: Any) -> Rebuilt:
    """Make ``trial``'s model again: prune the baseline with its parameters, replay its fine-tune.

    Raises:
        HybridPruneError: the trial records no fine-tune this study could replay (a latency-gated
            trial, a reused twin, a reference model the study file no longer lists).
    """
    from hybridprune.accuracy import evaluate
    from hybridprune.records import Metrics as M
    from hybridprune.search.objective import finetune_kwargs, finetune_seed, prune_config, run_budget, run_rung
    from hybridprune.search.references import NAME, reference_model
    from hybridprune.search.split import split_record

    cfg = ctx.cfg
    if T.is_reference(trial, T.REF_FAMILY):
        m = next((m for m in cfg.references.models if m["name"] == trial.user_attrs[NAME]), None)
        if m is None:
            raise HybridPruneError(f"reference model {trial.user_attrs[NAME]!r} is not in the study file's "
                                   f"[references] models any more: it cannot be rebuilt")
        model, _, metrics = reference_model(cfg, ctx, m)
        record = None
    else:
        if trial.user_attrs.get(T.GATED) or trial.user_attrs.get(T.DUPLICATE_OF) is not None:
            raise HybridPruneError(f"trial {trial.number} was not fine-tuned itself (latency-gated or a reused "
                                   f"twin): there is no fine-tune of its own to replay")
        model, record, _ = prune_config(ctx, ctx.space.to_config(trial.params))
        model = model.to(ctx.device)
        seed, kw = finetune_seed(cfg), finetune_kwargs(ctx)
        if not cfg.fidelity.enabled:
            run_budget(ctx, model, seed, kw)
        else:
            reached, done = trial.user_attrs.get(T.FIDELITY_STEPS), 0
            if reached is None:
                raise HybridPruneError(f"trial {trial.number} records no fidelity steps: its rungs cannot be replayed")
            for k, steps in enumerate(r for r in cfg.fidelity.rungs() if r <= reached):
                run_rung(ctx, model, k, done, steps, seed, kw)
                done = steps
        metrics = {M.STUDY: cfg.name, M.TRIAL: trial.number, M.FINETUNE_STEPS: trial.user_attrs.get(T.FIDELITY_STEPS),
                   M.SPLIT: split_record(cfg)}
    model = model.to(ctx.device).eval()
    val = float(evaluate(model, ctx.data.val, ctx.normalization, device=ctx.device, **ctx.precision_kwargs()).top1)
    return Rebuilt(model=model, record=record, metrics={**metrics, M.VAL_TOP1: val}, val_top1=val,
                   recorded_top1=float(T.accuracy(trial)))
