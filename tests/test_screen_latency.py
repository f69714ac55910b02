"""``[fidelity] screen_latency_s``: a short latency reading at the 0-step screen, the study's own
protocol for whatever goes on past it, one basis for both."""

from __future__ import annotations

import dataclasses

import pytest
from optuna.trial import TrialState

from hybridprune.cli import main

from helpers import load, write_study

ROUNDS = 3
SCREEN = ("\n[fidelity]\nmin_steps = 1\nmax_steps = 2\neta = 2\nbn_batches = 2\ndefer_screen = true\n"
          "screen_latency_s = 0.05\n")


def _study(tmp_path, name, trials, budget_ms=1000.0):
    path = write_study(tmp_path, name=name, trials=trials, study_extra="references = false")
    text = path.read_text().replace("[finetune]\nsteps = 2\n", "[finetune]\n")
    text = text.replace("[latency]\n", f"[latency]\nrounds = {ROUNDS}\n")
    text = text.replace("max_latency_ms = 1000.0", f"max_latency_ms = {budget_ms}")
    path.write_text(text + SCREEN)
    return path


def _rounds(trial) -> int:
    return len(trial.user_attrs["latency"]["extra"]["round_ms"])


@pytest.mark.slow
def test_screens_read_one_short_round_and_what_goes_on_is_timed_again_with_the_study_protocol(tmp_path):
    from hybridprune.search._optuna import study_system_attrs
    from hybridprune.search.latency import REFERENCE_ATTR
    from hybridprune.search.latency_cache import LatencyCache, screen_key

    path = _study(tmp_path, "screenlat", trials=8)
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    assert study.user_attrs["fidelity"]["screen_latency_s"] == 0.05
    (reference_ms,) = study_system_attrs(study)[REFERENCE_ATTR].values()  # one basis: no reference of its own
    cache = LatencyCache(study)
    trials = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    went_on = [t for t in trials if len(t.user_attrs["rungs"]) > 1]
    stopped = [t for t in trials if len(t.user_attrs["rungs"]) == 1]
    assert went_on and stopped  # eta 2, deferred: the first stops, and something goes on by the eighth
    for t in stopped:  # the screen's reading is the trial's: one round, flagged, cached under its own key
        assert t.user_attrs["latency_screen"] is True and _rounds(t) == 1
        assert t.user_attrs["rungs"][0]["latency_ms"] == t.user_attrs["latency_ms"] == t.values[1]
        assert cache.get(t.user_attrs["latency_key"]) is not None
    for t in went_on:  # timed again with [latency] rounds before its first step: every later rung reads that
        assert t.user_attrs.get("latency_screen") is None and _rounds(t) == ROUNDS
        assert all(r["latency_ms"] == t.user_attrs["latency_ms"] == t.values[1] for r in t.user_attrs["rungs"][1:])
        short = cache.get(screen_key(t.user_attrs["latency_key"], 0.05))  # the screen's entry stays apart
        assert short is not None and len(short["extra"]["round_ms"]) == 1
        assert t.user_attrs["rungs"][0]["latency_ms"] == pytest.approx(short["extra"]["latency_ratio"] * reference_ms)
        assert t.user_attrs["latency_ms"] == pytest.approx(t.user_attrs["latency_ratio"] * reference_ms)
    assert {t.user_attrs["latency_key"] for t in stopped}.isdisjoint(t.user_attrs["latency_key"] for t in went_on)


@pytest.mark.slow
def test_a_screen_reading_over_the_latency_budget_is_confirmed_with_the_study_protocol_before_gating(tmp_path):
    path = _study(tmp_path, "screengate", trials=3, budget_ms=1e-6)
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        if "duplicate_of" in t.user_attrs:
            continue
        assert "latency_gate" in t.user_attrs and "rungs" not in t.user_attrs  # gated: never screened
        assert t.user_attrs.get("latency_screen") is None and _rounds(t) == ROUNDS  # on the study's reading


@pytest.mark.slow
def test_a_candidate_whose_short_reading_was_under_the_budget_stops_at_the_screen_when_the_study_reading_is_not(
        tmp_path, monkeypatch):
    from hybridprune.search.latency import StudyLatency

    # a screen reading that came out under the budget (noise) while the study's reading is over it: the
    # short reading is scaled down here, since no machine can be made to produce that noise on demand
    real = StudyLatency.trial

    def noisy(self, study, model, *, screen_s=None):
        timed = real(self, study, model, screen_s=screen_s)
        return dataclasses.replace(timed, latency_ms=timed.latency_ms * 1e-9) if screen_s is not None else timed

    monkeypatch.setattr(StudyLatency, "trial", noisy)
    path = _study(tmp_path, "screennoise", trials=6, budget_ms=1e-3)
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    trials = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    went_past = [t for t in trials if t.user_attrs["rungs"][0]["decision"] in ("continue", "promoted")]
    assert went_past  # eta 2, deferred: something ranks in by the sixth trial
    for t in trials:
        assert "rungs" in t.user_attrs  # the short reading let every candidate be screened
        assert t.user_attrs["finetune_steps"] == 0  # and none was fine-tuned: each that went on was gated
    for t in went_past:
        assert "not fine-tuned past the screen" in t.user_attrs["latency_gate"]
        assert t.user_attrs.get("latency_screen") is None and t.user_attrs["latency_ms"] > 1e-3
