"""``[fidelity] rank = "hypervolume-per-cost"``: the fine-tune cost line and the order it gives."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from hybridprune.search.fidelity import (
    HYPERVOLUME,
    HYPERVOLUME_PER_COST,
    continues,
    decide,
    priorities,
    promote,
    to_promote,
)
from hybridprune.search.fidelity_cost import StepCost, fit, samples, study_cost

# one front: 90% at 0.70x adds the most area (0.03 against 0.025), 80% at 0.45x the most per cost
FRONT = np.array([[-0.90, 0.70], [-0.80, 0.45], [-0.70, 0.30]])


def _trial(study, acc, lat, *, macs=None, ft=None, decision=None, **extra):
    attrs = dict(extra)
    if macs is not None:
        attrs["macs"] = macs
    if ft is not None:  # (steps, seconds per image at the warm rate)
        attrs["finetune"] = {"steps": ft[0], "seconds": 99.0, "images_per_second": 1.0 / ft[1] if ft[1] else 0.0}
    if decision is not None:
        attrs["rungs"] = [{"rung": 0, "steps": 0, "accuracy": acc, "latency_ms": lat, "decision": decision}]
    study.add_trial(optuna.trial.create_trial(
        params={"x": acc}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        values=[acc, lat], user_attrs=attrs))


def test_the_line_is_fit_to_seconds_per_step_and_kept_non_negative():
    line = fit([(1e6, 0.1 + 2e-7 * 1e6), (3e6, 0.1 + 2e-7 * 3e6), (5e6, 0.1 + 2e-7 * 5e6)])
    assert line.a == pytest.approx(0.1) and line.b == pytest.approx(2e-7)
    assert line.of_macs(2e6) == pytest.approx(0.5)
    # a negative intercept: through the origin (a network of no MACs costs nothing, not less)
    origin = fit([(1e6, 0.05), (2e6, 0.3)])
    assert origin.a == 0 and origin.b == pytest.approx((1e6 * 0.05 + 2e6 * 0.3) / (1e12 + 4e12))
    # cost that does not grow with MACs: every trial costs the same (the hypervolume order)
    flat = fit([(1e6, 0.3), (2e6, 0.2)])
    assert flat.b == 0 and flat.of_macs(1e6) == flat.of_macs(9e9) == pytest.approx(0.25)
    # before two fine-tunes of different size: proportional to MACs
    assert fit([]).of_macs(3e6) / fit([]).of_macs(1e6) == pytest.approx(3.0)
    assert fit([(2e6, 0.4), (2e6, 0.5)]) == StepCost(0.0, 1.0, 2e6)
    # a trial with no recorded MACs costs what the median trial costs; a cost is never 0
    assert fit([], [1e6, 3e6, 5e6]).of_macs(None) == pytest.approx(3e6)
    assert StepCost(0.0, 0.0).of_macs(1e6) > 0


def test_the_study_line_reads_each_trials_warm_rate_once_and_skips_trials_without_one():
    study = optuna.create_study(directions=["maximize", "minimize"])
    _trial(study, 0.8, 1.0, macs=2e6, ft=(60, 0.1 + 2e-7 * 2e6))
    _trial(study, 0.7, 0.5, macs=1e6, ft=(120, 0.1 + 2e-7 * 1e6))
    _trial(study, 0.6, 0.4, macs=5e5)  # stopped at the screen: no fine-tune
    _trial(study, 0.6, 0.4, macs=5e5, ft=(0, 0.0))  # no steps: nothing to learn from
    _trial(study, 0.7, 0.5, macs=1e6, ft=(120, 9.0), duplicate_of=1)  # a copy of trial 1's record
    # the warm rate, not seconds over steps (99 s in every record here: the first step's warm-up)
    assert sorted(samples(study.get_trials())) == [(1e6, pytest.approx(0.3)), (2e6, pytest.approx(0.5))]
    line = study_cost(study)
    assert line.a == pytest.approx(0.1) and line.b == pytest.approx(2e-7)
    assert line(study.get_trials()[2]) == pytest.approx(0.2)
    assert line.of_macs(0) == line.of_macs(None) == line.of_macs(line.fallback_macs)  # 0 MACs: not measured


def test_per_cost_the_cheaper_knee_goes_before_the_larger_but_dearer_area():
    assert priorities(FRONT, rank=HYPERVOLUME, ref_latency=1.0).tolist() == [0, 1, 2]
    costs = FRONT[:, 1]  # seconds per image proportional to latency, as on a CPU
    assert priorities(FRONT, rank=HYPERVOLUME_PER_COST, ref_latency=1.0, costs=costs).tolist() == [1, 0, 2]
    # equal costs: the hypervolume order; fronts still come first whatever they cost
    assert priorities(FRONT, rank=HYPERVOLUME_PER_COST, ref_latency=1.0, costs=np.ones(3)).tolist() == [0, 1, 2]
    dominated = np.vstack([FRONT, [[-0.65, 0.9]]])
    assert priorities(dominated, rank=HYPERVOLUME_PER_COST, ref_latency=1.0,
                      costs=np.array([1.0, 1.0, 1.0, 1e-6])).tolist()[-1] == 3
    # floor-aware: the rows behind the bar rank last, each group ordered by its own rows' costs
    split = np.vstack([[[-0.95, 0.95]], FRONT, [[-0.5, 0.9]]])
    behind = np.array([True, False, False, False, True])
    cost_split = np.array([1.0, 0.70, 0.45, 0.30, 1.0])
    assert priorities(split, behind, rank=HYPERVOLUME_PER_COST, ref_latency=1.0,
                      costs=cost_split).tolist() == [3, 1, 0, 2, 4]
    assert priorities(split, behind, rank=HYPERVOLUME_PER_COST, ref_latency=1.0,
                      costs=np.array([1.0, 0.1, 0.45, 0.30, 1.0])).tolist() == [3, 0, 1, 2, 4]
    for bad in (None, np.ones(2), np.array([1.0, 0.0, 1.0]), np.array([1.0, np.nan, 1.0])):
        with pytest.raises(ValueError, match="needs one finite cost > 0 per point"):
            priorities(FRONT, rank=HYPERVOLUME_PER_COST, ref_latency=1.0, costs=bad)
    own, others = FRONT[1].tolist(), [FRONT[0].tolist(), FRONT[2].tolist()]
    assert not continues(own, others, eta=3, defer=True, rank=HYPERVOLUME, ref_latency=1.0)
    assert continues(own, others, eta=3, defer=True, rank=HYPERVOLUME_PER_COST, ref_latency=1.0,
                     costs=[0.70, 0.30, 0.45])


def test_promotion_and_decisions_read_each_trials_cost_from_the_line():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for row, macs in zip(FRONT, [7e6, 4.5e6, 3e6]):
        _trial(study, -row[0], row[1], macs=macs, decision="stop")
    line = StepCost(0.0, 1e-7)  # seconds per image proportional to MACs
    assert [t.number for t in to_promote(study, 3, rank=HYPERVOLUME, ref_latency=1.0)] == [0]
    assert [t.number for t in to_promote(study, 3, rank=HYPERVOLUME_PER_COST, ref_latency=1.0, cost=line)] == [1]
    assert promote(study, 3, rank=HYPERVOLUME_PER_COST, ref_latency=1.0, cost=line) == [1]
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["promoted_from"] for t in waiting] == [1]
    # a fourth screen, 85% at 0.40x: first per cost if cheap, behind 90% at 0.70x if it costs 40 s a step
    kw = dict(defer=True, rank=HYPERVOLUME_PER_COST, ref_latency=1.0, cost=line)
    assert decide(study, 99, 0, 3, 0.85, 0.40, 3, False, own_cost=line.of_macs(2e6), **kw) == "continue"
    assert decide(study, 99, 0, 3, 0.85, 0.40, 3, False, own_cost=line.of_macs(4e8), **kw) == "stop"
    with pytest.raises(ValueError, match="come together"):
        decide(study, 99, 0, 3, 0.85, 0.40, 3, False, **kw)
