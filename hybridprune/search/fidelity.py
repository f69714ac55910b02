"""Multi-objective asynchronous successive halving (MO-ASHA) on the study's own storage.

Schmucker et al. 2021 ("Multi-objective multi-fidelity hyperparameter optimization with application
to fairness"), as syne-tune's ``MOASHA`` implements it (stopping variant, one bracket): when a trial
reaches a rung it is ranked among every result recorded at that rung so far, by non-dominated
sorting with an epsilon-net order inside each front; it goes on only if its rank is in the top
``1/eta``. The first trial at a rung always goes on.

Optuna has no pruner for multi-objective studies, so the rung results live in each trial's
``rungs`` user attribute: every worker, process or Ray task reads them from the shared storage, so
decisions need no coordinator. Reference trials (baseline, paper settings) always run to the last
rung: they are what the search is compared against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hybridprune.search import trials as T

CONTINUE = "continue"
STOP = "stop"
FINAL = "final"


def nondominated_fronts(points: np.ndarray) -> list[list[int]]:
    """Indices of ``points`` (rows, every column minimised) grouped into successive Pareto fronts."""
    n = len(points)
    remaining = list(range(n))
    fronts: list[list[int]] = []
    while remaining:
        sub = points[remaining]
        front = []
        for i, p in enumerate(sub):
            dominated = np.any(np.all(sub <= p, axis=1) & np.any(sub < p, axis=1))
            if not dominated:
                front.append(remaining[i])
        fronts.append(front)
        remaining = [i for i in remaining if i not in set(front)]
    return fronts


def _epsilon_net(points: np.ndarray, idx: list[int]) -> list[int]:
    """Order ``idx`` farthest-first: the best in the first objective, then each next point the one
    farthest from those already taken (spread along the front before density)."""
    if len(idx) <= 1:
        return list(idx)
    sub = points[idx]
    span = np.ptp(points, axis=0)
    sub = (sub - points.min(axis=0)) / np.where(span > 0, span, 1.0)
    taken = [int(np.lexsort(sub.T[::-1])[0])]
    dist = np.linalg.norm(sub - sub[taken[0]], axis=1)
    while len(taken) < len(idx):
        nxt = int(np.argmax(np.where(np.isin(np.arange(len(idx)), taken), -1.0, dist)))
        taken.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(sub - sub[nxt], axis=1))
    return [idx[i] for i in taken]


def priorities(points: np.ndarray) -> np.ndarray:
    """Priority of each row (0 = best): non-dominated sorting, epsilon-net order within a front."""
    order: list[int] = []
    for front in nondominated_fronts(points):
        order.extend(_epsilon_net(points, front))
    out = np.empty(len(points), dtype=int)
    out[order] = np.arange(len(points))
    return out


def continues(own: Sequence[float], recorded: Sequence[Sequence[float]], eta: float) -> bool:
    """MO-ASHA's rule: does a result ``own`` (objectives minimised) go on, given the others at its rung?

    Args:
        own: This trial's objective vector at the rung.
        recorded: Vectors of the trials that reached the rung before it.
        eta: Reduction factor (the top ``1/eta`` go on).
    """
    if not recorded:
        return True
    pts = np.asarray([*recorded, own], dtype=float)
    rank = priorities(pts)[-1] / len(pts)
    return bool(rank <= 1.0 / eta)


@dataclass(frozen=True)
class RungResult:
    """One rung reached by one trial: cumulative steps, accuracy there, latency, and the decision."""

    rung: int
    steps: int
    accuracy: float
    latency_ms: float
    decision: str

    def to_dict(self) -> dict:
        return {"rung": self.rung, "steps": self.steps, "accuracy": self.accuracy,
                "latency_ms": self.latency_ms, "decision": self.decision}


def recorded_at(study: Any, rung: int, exclude_number: int) -> list[list[float]]:
    """(-accuracy, latency) of every other running or completed trial of ``study`` that recorded
    ``rung`` (a failed trial's results are left out: its retry records them again)."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)):
        if t.number == exclude_number:
            continue
        for r in t.user_attrs.get(T.RUNGS) or []:
            if r.get("rung") == rung:
                out.append([-float(r["accuracy"]), float(r["latency_ms"])])
    return out


def decide(study: Any, trial_number: int, rung: int, n_rungs: int, accuracy: float, latency_ms: float,
           eta: float, reference: bool) -> str:
    """The decision for a trial that just reached ``rung`` (0-based) of ``n_rungs``.

    Returns:
        ``final`` at the last rung, ``continue`` for reference trials and the top ``1/eta``,
        otherwise ``stop``.
    """
    if rung >= n_rungs - 1:
        return FINAL
    if reference:
        return CONTINUE
    others = recorded_at(study, rung, trial_number)
    return CONTINUE if continues([-accuracy, latency_ms], others, eta) else STOP
