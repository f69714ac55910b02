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

``[fidelity] defer_screen``: at the 0-step screen (adaptive BN), the stopping rule above gives the
first trials a fine-tune on no evidence (the first always goes on, and ``rank <= 1/eta`` lets 2 of
the first 3 through). Deferred, the screen decides as ASHA's promotion variant does (Li et al.
2020): a trial goes on only if it is among the top ``floor(n / eta)`` of the ``n`` screened so far;
the others stop, and one that ranks there later, as more trials are screened, is promoted: a twin
trial with its parameters is queued (:data:`~hybridprune.search.trials.PROMOTED_FROM`), re-prunes
and re-adapts (deterministic, seconds; its latency comes from the study's cache) and goes on from
the screen. A screen is cheap to redo, so only that rung defers; later rungs keep the stopping rule.

``[fidelity] floor_aware``: non-dominated sorting prizes the fastest candidate at any accuracy, so
a heavily pruned network that the screen scores at 20% goes on as readily as one at 70%, and is
fine-tuned only to end below ``[constraints] min_accuracy``. Floor-aware, a result at rung ``k``
whose accuracy there is no better than that of a trial which ran the whole ladder and still ended
below the floor (the study's own evidence, :func:`floor_bar`) ranks behind every other result at
that rung, as constrained domination ranks infeasible points (Deb 2000). Before the first such
trial nothing changes.

``[fidelity] rank = "hypervolume"``: inside each non-dominated front the epsilon-net order above
takes the extremes first, and the fastest result of a rung is an extreme whatever its accuracy, so
a network pruned to 20% accuracy goes on before a knee point. Ranked by hypervolume, a front is
ordered by each result's exclusive hypervolume contribution (the area only it dominates, as
SMS-EMOA selects: Beume et al. 2007), the reference point being the lowest accuracy ranked and the
study's reference baseline latency: the least accurate result adds nothing, a result slower than
the baseline adds nothing, and a knee point of the front adds the most. Ties keep the epsilon-net
order. ``rank = "hypervolume-per-cost"`` divides each contribution by the estimated seconds per
fine-tune image of that trial (:mod:`~hybridprune.search.fidelity_cost`): area bought per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from hybridprune.search import trials as T

CONTINUE = "continue"
STOP = "stop"
FINAL = "final"
PROMOTED = "promoted"  # a promoted twin's screen: it goes on, and it is not ranked a second time

EPSILON_NET = "epsilon-net"  # syne-tune's MOASHA order inside a front
HYPERVOLUME = "hypervolume"  # exclusive hypervolume contribution inside a front
HYPERVOLUME_PER_COST = "hypervolume-per-cost"  # that, over the estimated seconds per fine-tune image
RANKS = (EPSILON_NET, HYPERVOLUME, HYPERVOLUME_PER_COST)


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


def hv_contributions(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exclusive hypervolume contribution of each row of a non-dominated set of 2-objective points
    (both minimised) with reference point ``ref``: the area dominated by that row alone (0 for a
    duplicate, and for a row at or beyond ``ref`` in either objective)."""
    out = np.zeros(len(points))
    order = np.lexsort((points[:, 0], points[:, 1]))  # by the second objective; on a front the first falls
    for j, i in enumerate(order):
        left = ref[0] if j == 0 else points[order[j - 1], 0]
        right = ref[1] if j == len(order) - 1 else points[order[j + 1], 1]
        out[i] = max(0.0, min(left, ref[0]) - points[i, 0]) * max(0.0, min(right, ref[1]) - points[i, 1])
    return out


def priorities(points: np.ndarray, behind: np.ndarray | None = None, *, rank: str = EPSILON_NET,
               ref_latency: float | None = None, costs: np.ndarray | None = None) -> np.ndarray:
    """Priority of each row of ``(-accuracy, latency)`` points (0 = best): non-dominated sorting,
    then ``rank`` within a front (epsilon-net order, or exclusive hypervolume contribution with the
    reference point (lowest accuracy of ``points``, ``ref_latency`` or else the highest latency),
    divided by each row's ``costs`` under ``hypervolume-per-cost``); rows flagged in ``behind``
    (judged unable to reach the accuracy floor) all rank after the others."""
    if rank not in RANKS:
        raise ValueError(f"rank must be one of {list(RANKS)}, got {rank!r}")
    if rank == HYPERVOLUME_PER_COST and (costs is None or len(costs) != len(points)
                                         or not np.all(np.isfinite(costs) & (np.asarray(costs) > 0))):
        raise ValueError(f"rank hypervolume-per-cost needs one finite cost > 0 per point, got {costs!r}")
    if behind is not None and behind.any() and not behind.all():
        out = np.empty(len(points), dtype=int)
        for rows, start in ((~behind, 0), (behind, int((~behind).sum()))):
            sub = None if costs is None else np.asarray(costs)[rows]
            out[rows] = start + priorities(points[rows], rank=rank, ref_latency=ref_latency, costs=sub)
        return out
    ref = np.array([points[:, 0].max(), points[:, 1].max() if ref_latency is None else float(ref_latency)])
    order: list[int] = []
    for front in nondominated_fronts(points):
        net = _epsilon_net(points, front)
        if rank != EPSILON_NET:
            gain = hv_contributions(points[front], ref)
            if rank == HYPERVOLUME_PER_COST:
                gain = gain / np.asarray(costs, dtype=float)[front]
            gain = dict(zip(front, gain))
            net = sorted(net, key=lambda i: -gain[i])  # stable: ties keep the epsilon-net order
        order.extend(net)
    out = np.empty(len(points), dtype=int)
    out[order] = np.arange(len(points))
    return out


def continues(own: Sequence[float], recorded: Sequence[Sequence[float]], eta: float, *, defer: bool = False,
              bar: float | None = None, rank: str = EPSILON_NET, ref_latency: float | None = None,
              costs: Sequence[float] | None = None) -> bool:
    """MO-ASHA's rule: does a result ``own`` (objectives minimised) go on, given the others at its rung?

    Args:
        own: This trial's objective vector at the rung.
        recorded: Vectors of the trials that reached the rung before it.
        eta: Reduction factor (the top ``1/eta`` go on).
        defer: The promotion variant's rule: only the top ``floor(n / eta)`` of the ``n`` results
            (``own`` included) go on, so nothing goes on before ``eta`` results are in.
        bar: Results with accuracy (``-own[0]``) at or below it rank behind the rest (floor-aware).
        rank, ref_latency: The order inside a front (:func:`priorities`).
        costs: Under ``hypervolume-per-cost``, the cost of each of ``recorded`` and then of ``own``.
    """
    pts = np.asarray([*recorded, own], dtype=float)
    cost_arr = None if costs is None else np.asarray(costs, dtype=float)
    prio = priorities(pts, _behind(pts, bar), rank=rank, ref_latency=ref_latency, costs=cost_arr)[-1]
    if defer:
        return bool(prio < top_count(len(pts), eta))
    if not recorded:
        return True
    return bool(prio / len(pts) <= 1.0 / eta)


def _behind(points: np.ndarray, bar: float | None) -> np.ndarray | None:
    """Which rows of ``(-accuracy, latency)`` points rank behind under the floor-aware ``bar``."""
    return None if bar is None else -points[:, 0] <= bar


def top_count(n: int, eta: float) -> int:
    """How many of ``n`` results at a deferred rung go on: ``floor(n / eta)``."""
    return int(math.floor(n / eta + 1e-9))


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


def results_at(study: Any, rung: int) -> list[tuple[Any, list[float]]]:
    """``(trial, [-accuracy, latency])`` for every running or completed trial of ``study`` that
    recorded ``rung`` (a failed trial's results are left out: its retry records them again; a
    promoted twin's screen is its original's, counted once)."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)):
        for r in t.user_attrs.get(T.RUNGS) or []:
            if r.get("rung") == rung and r.get("decision") != PROMOTED:
                out.append((t, [-float(r["accuracy"]), float(r["latency_ms"])]))
    return out


def recorded_at(study: Any, rung: int, exclude_number: int) -> list[list[float]]:
    """(-accuracy, latency) of every other running or completed trial of ``study`` that recorded
    ``rung`` (see :func:`results_at`)."""
    return [v for t, v in results_at(study, rung) if t.number != exclude_number]


def floor_bar(study: Any, rung: int, floor: float | None) -> float | None:
    """The highest accuracy at ``rung`` of a trial that ran the whole ladder and still ended below
    ``floor`` (``None`` without a floor or before such a trial): results at or below it rank behind."""
    from optuna.trial import TrialState

    if floor is None:
        return None
    bar = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rungs = t.user_attrs.get(T.RUNGS) or []
        if not rungs or rungs[-1].get("decision") != FINAL or rungs[-1]["accuracy"] >= floor:
            continue
        for r in rungs:
            if r.get("rung") == rung and r.get("decision") != FINAL:
                bar = float(r["accuracy"]) if bar is None else max(bar, float(r["accuracy"]))
    return bar


def to_promote(study: Any, eta: float, bar: float | None = None, *, rank: str = EPSILON_NET,
               ref_latency: float | None = None, cost: Callable[[Any], float] | None = None) -> list[Any]:
    """Trials stopped at the deferred screen (rung 0) that now rank in its top ``floor(n / eta)``
    (floor-aware with ``bar``; ordered by ``rank``, :func:`priorities`, with ``cost`` giving each
    trial's cost under ``hypervolume-per-cost``) and have no promoted twin yet (queued, running,
    finished or failed), best first."""
    from optuna.trial import TrialState

    results = results_at(study, 0)
    if not results:
        return []
    promoted = {t.user_attrs.get(T.PROMOTED_FROM) for t in study.get_trials(deepcopy=False)} - {None}
    pts = np.asarray([v for _, v in results], dtype=float)
    costs = None if cost is None else np.asarray([cost(t) for t, _ in results], dtype=float)
    prio = priorities(pts, _behind(pts, bar), rank=rank, ref_latency=ref_latency, costs=costs)
    out = []
    for i in np.argsort(prio, kind="stable")[:top_count(len(results), eta)]:
        t = results[int(i)][0]
        last = t.user_attrs[T.RUNGS][-1]  # results_at only returns trials that recorded rung 0
        if t.state == TrialState.COMPLETE and last["rung"] == 0 and last["decision"] == STOP \
                and t.number not in promoted:
            out.append(t)
    return out


def promote(study: Any, eta: float, bar: float | None = None, *, rank: str = EPSILON_NET,
            ref_latency: float | None = None, cost: Callable[[Any], float] | None = None) -> list[int]:
    """Queue a promoted twin of every trial :func:`to_promote` names; returns their numbers.

    The twin carries the original's parameters and labels (reference, warm start) and
    ``promoted_from``; Optuna runs queued trials before asking the sampler for new ones.
    """
    numbers = []
    for t in to_promote(study, eta, bar, rank=rank, ref_latency=ref_latency, cost=cost):
        attrs = {k: t.user_attrs[k] for k in (T.REFERENCE, T.REFERENCE_NAME, T.WARM_START) if k in t.user_attrs}
        study.enqueue_trial(dict(t.params), user_attrs={**attrs, T.PROMOTED_FROM: t.number}, skip_if_exists=False)
        numbers.append(t.number)
    return numbers


def decide(study: Any, trial_number: int, rung: int, n_rungs: int, accuracy: float, latency_ms: float,
           eta: float, reference: bool, *, defer: bool = False, bar: float | None = None,
           rank: str = EPSILON_NET, ref_latency: float | None = None, cost: Callable[[Any], float] | None = None,
           own_cost: float | None = None) -> str:
    """The decision for a trial that just reached ``rung`` (0-based) of ``n_rungs``.

    Args:
        defer: Decide by the promotion variant's rule (:func:`continues`); the caller promotes
            stopped trials that rank in later (:func:`promote`).
        bar: Floor-aware ranking (:func:`floor_bar`).
        rank, ref_latency: The order inside a front (:func:`priorities`).
        cost, own_cost: Under ``hypervolume-per-cost``, each recorded trial's cost and this one's.

    Returns:
        ``final`` at the last rung, ``continue`` for reference trials and the top ``1/eta``,
        otherwise ``stop``.
    """
    if rung >= n_rungs - 1:
        return FINAL
    if reference:
        return CONTINUE
    if (cost is None) != (own_cost is None):
        raise ValueError("cost (each recorded trial's) and own_cost (this trial's) come together")
    others = [(t, v) for t, v in results_at(study, rung) if t.number != trial_number]
    costs = None if cost is None else [*(cost(t) for t, _ in others), own_cost]
    ok = continues([-accuracy, latency_ms], [v for _, v in others], eta, defer=defer, bar=bar, rank=rank,
                   ref_latency=ref_latency, costs=costs)
    return CONTINUE if ok else STOP
