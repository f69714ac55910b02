"""What a trial's fine-tune will cost, for ``[fidelity] rank = "hypervolume-per-cost"``.

Ranked by hypervolume, a front is ordered by the area each result alone adds; that ignores what
the rest of its ladder costs, and the mild candidates that add the least area are the widest
networks, whose fine-tunes take the longest (in ``results/search-bench/resnet56-bf16-b.jsonl`` a
full ladder took 24 s at 0.30x the baseline's latency and 65-76 s at 0.86-0.89x). Ranked per
cost, each result's area is divided by its estimated fine-tune seconds per training image (every
trial of a study trains with one batch size, so this orders trials as seconds per step would).

The estimate is a line ``a + b * MACs`` fit by least squares to the study's own fine-tunes (the
last segment each trial ran: the warm rate of its :data:`~hybridprune.search.trials.FINETUNE`,
which leaves out the first step's warm-up, on whatever device trains them), so a fixed per-image
overhead (a GPU, a tiny model) is learned rather than assumed. Before two fine-tunes of different
MACs exist, cost is taken proportional to MACs; a fit that does not rise with MACs makes every
cost equal (the plain hypervolume order). A trial that reused a duplicate's results is not
counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from hybridprune.search import trials as T


@dataclass(frozen=True)
class StepCost:
    """Estimated fine-tune seconds per training image of a trial from its MACs: ``a + b * macs``.

    Only ratios between trials matter to a ranking; a cost is never below a small positive floor.
    """

    a: float = 0.0
    b: float = 1.0
    fallback_macs: float = 1.0  # for a trial with no recorded MACs: the median of the fitted trials

    def of_macs(self, macs: float | None) -> float:
        """The estimate for a network of ``macs`` multiply-accumulates."""
        x = float(macs) if macs else self.fallback_macs  # 0 is no more a measurement than None
        return max(self.a + self.b * x, 1e-12)

    def __call__(self, trial: Any) -> float:
        """The estimate for ``trial`` (an Optuna trial or frozen trial with the ``macs`` attribute)."""
        return self.of_macs(trial.user_attrs.get(T.MACS))


def samples(trials: Iterable[Any]) -> list[tuple[float, float]]:
    """``(macs, seconds per image)`` of every trial in ``trials`` that recorded a fine-tune of its
    own (a duplicate's copied record is left out)."""
    out = []
    for t in trials:
        if t.user_attrs.get(T.DUPLICATE_OF) is not None:
            continue
        ft, macs = t.user_attrs.get(T.FINETUNE) or {}, t.user_attrs.get(T.MACS)
        rate = ft.get("images_per_second") or 0.0  # the warm rate: the first step is left out
        if macs and (ft.get("steps") or 0) > 0 and rate > 0:
            out.append((float(macs), 1.0 / float(rate)))
    return out


def fit(points: list[tuple[float, float]], all_macs: Iterable[float] = ()) -> StepCost:
    """The :class:`StepCost` line through ``(macs, seconds per image)`` points.

    Least squares with both coefficients kept non-negative: a negative intercept refits the line
    through the origin; a slope at or below 0 (cost does not grow with MACs) gives the mean as a
    constant. Fewer than two distinct MACs: cost proportional to MACs. ``all_macs`` (the MACs of
    every trial to be ranked) sets the value used for a trial without MACs.
    """
    known = [float(m) for m in all_macs if m] + [m for m, _ in points]
    fallback = float(np.median(known)) if known else 1.0
    if len({m for m, _ in points}) < 2:
        return StepCost(0.0, 1.0, fallback)
    x, y = np.array(points).T
    b, a = np.polyfit(x, y, 1)
    if b <= 0:
        return StepCost(float(y.mean()), 0.0, fallback)
    if a < 0:
        return StepCost(0.0, float((x * y).sum() / (x * x).sum()), fallback)
    return StepCost(float(a), float(b), fallback)


def study_cost(study: Any) -> StepCost:
    """The :class:`StepCost` fit to ``study``'s running and completed trials."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
    return fit(samples(trials), (t.user_attrs.get(T.MACS) for t in trials))
