"""[fidelity] calibrate: the sampler sees stopped trials' accuracy on the last rung's scale."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers.nsgaii._elite_population_selection_strategy import NSGAIIElitePopulationSelectionStrategy
from optuna.trial import TrialState, create_trial

from hybridprune.cli import main
from hybridprune.pruning import list_criteria
from hybridprune.search.fidelity_view import CalibratedSampler, CalibratedStudy, fit_lines
from hybridprune.search.samplers import get_sampler, list_samplers
from hybridprune.spaces import get_space

from helpers import load, write_study

FLOOR = 0.8


def _trial(x, rungs, latency):
    """A finished trial whose values are those of its last rung, as MO-ASHA records one."""
    acc = rungs[-1][1]
    return create_trial(params={"x": x}, distributions={"x": FloatDistribution(0, 1)}, values=[acc, latency],
                        user_attrs={"rungs": [{"rung": k, "steps": s, "accuracy": a, "latency_ms": latency,
                                               "decision": d} for k, (s, a, d) in enumerate(rungs)]},
                        system_attrs={"constraints:accuracy": FLOOR - acc})


def _study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for x, rungs, latency in (
            (0.1, [(0, 0.60, "continue"), (60, 0.85, "final")], 5.0),    # A
            (0.2, [(0, 0.40, "continue"), (60, 0.81, "final")], 3.0),    # B
            (0.3, [(0, 0.20, "continue"), (60, 0.77, "final")], 2.0),    # C: ended under the floor
            (0.4, [(0, 0.55, "stop")], 2.5)):                            # D: stopped at the screen
        study.add_trial(_trial(x, rungs, latency))
    return study


def test_a_line_per_rung_is_fit_on_the_trials_that_ran_the_whole_ladder():
    study = _study()
    lines = fit_lines(study.trials)
    assert set(lines) == {0}  # the last rung has no line; D's screen is not a pair (it has no final)
    assert lines[0].intercept == pytest.approx(0.73) and lines[0].slope == pytest.approx(0.2) and lines[0].pairs == 3
    assert lines[0](0.55) == pytest.approx(0.84) and lines[0](-50) == 0.0 and lines[0](50) == 1.0
    assert fit_lines(study.trials, min_pairs=4) == {}  # too little evidence: nothing is mapped
    flat = optuna.create_study(directions=["maximize", "minimize"])
    for x, final in ((0.1, 0.85), (0.2, 0.80), (0.3, 0.83)):  # the same screen, three endings: no spread
        flat.add_trial(_trial(x, [(0, 0.5, "continue"), (60, final, "final")], 3.0))
    falling = optuna.create_study(directions=["maximize", "minimize"])
    for x, screen, final in ((0.1, 0.2, 0.85), (0.2, 0.4, 0.82), (0.3, 0.6, 0.80)):  # ranks against the end
        falling.add_trial(_trial(x, [(0, screen, "continue"), (60, final, "final")], 3.0))
    assert fit_lines(flat.trials) == {} and fit_lines(falling.trials) == {}


def test_the_view_maps_a_stopped_trial_and_its_accuracy_constraint_and_leaves_the_study_alone():
    study = _study()
    view = CalibratedStudy(study)
    a, b, c, d = view.get_trials()
    assert [t.values for t in (a, b, c)] == [t.values for t in study.trials[:3]]  # measured at the end
    assert d.values[0] == pytest.approx(0.84) and d.values[1] == 2.5
    assert d.constraints["accuracy"] == pytest.approx(FLOOR - 0.84)  # feasible now; the floor did not move
    assert d.params == study.trials[3].params and d.user_attrs == study.trials[3].user_attrs
    stored = study.trials[3]
    assert stored.values == [0.55, 2.5] and stored.constraints["accuracy"] == pytest.approx(0.25)
    assert [t.number for t in view._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))] == [0, 1, 2, 3]
    assert view.directions == study.directions and view._study_id == study._study_id


def test_nsga2_keeps_a_stopped_trial_as_a_parent_when_its_screen_predicts_a_front_point():
    study = _study()
    select = NSGAIIElitePopulationSelectionStrategy(population_size=2)
    # measured values: D is a 55% result, infeasible, so the parents are the two feasible ladders
    assert sorted(t.number for t in select(study, study.trials)) == [0, 1]
    # calibrated: D (84% predicted at 2.5 ms) dominates B (81% at 3.0 ms) and joins A
    view = CalibratedStudy(study)
    assert sorted(t.number for t in select(view, view.trials)) == [0, 3]


@pytest.mark.parametrize("name", list_samplers())
def test_every_sampler_searches_through_the_calibrated_view(name):
    """Contract over the sampler registry: wrapped, each keeps producing valid configs from a study
    where half the trials stop at a screen, and the view maps them once there is evidence."""
    inner = get_sampler(name, seed=0, n_trials=12, n_startup_trials=4, population_size=4)
    sampler = CalibratedSampler(inner)
    space = get_space("hybrid", {}, removable_blocks=7, criteria=list_criteria())
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def objective(trial):
        c = space.suggest(trial)
        final = 0.95 - c.channel_ratio * 0.2 - c.pruned_blocks * 0.02
        screen = final - 0.3 - c.channel_ratio * 0.3
        lat = 1.0 - c.channel_ratio * 0.6 - c.pruned_blocks * 0.05
        rungs = [{"rung": 0, "steps": 0, "accuracy": screen, "latency_ms": lat, "decision": "continue"},
                 {"rung": 1, "steps": 60, "accuracy": final, "latency_ms": lat, "decision": "final"}]
        if trial.number % 2:
            rungs = [{**rungs[0], "decision": "stop"}]
        trial.set_user_attr("rungs", rungs)
        trial.set_constraint("accuracy", FLOOR - rungs[-1]["accuracy"])
        return rungs[-1]["accuracy"], lat

    study.optimize(objective, n_trials=12)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 12
    assert 0 in fit_lines(study.trials)
    mapped = [t for t in CalibratedStudy(study).trials if t.number % 2]
    assert all(t.values[0] > s.values[0] for t, s in zip(mapped, [s for s in study.trials if s.number % 2]))


def test_a_calibrated_study_records_it_and_its_sampler_sees_the_view(tmp_path):
    from hybridprune.search.config import load_study_config
    from hybridprune.search.study import open_study

    path = write_study(tmp_path, name="cal", trials=5, study_extra="references = false")
    text = path.read_text().replace("[finetune]\nsteps = 2\n", "[finetune]\n")  # [fidelity] replaces the budget
    path.write_text(text + "\n[fidelity]\nmin_steps = 1\nmax_steps = 2\neta = 2\nbn_batches = 2\n"
                           "defer_screen = true\ncalibrate = true\n")
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    assert study.user_attrs["fidelity"]["calibrate"] is True
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 5
    assert isinstance(open_study(load_study_config(path), create=False).sampler, CalibratedSampler)
