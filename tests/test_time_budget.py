"""Wall-time budgets: parsing, no trial after the budget, resume with what is left, status."""

from __future__ import annotations

import time

import optuna
import pytest

from hybridprune.cli import main
from hybridprune.errors import ConfigError
from hybridprune.search import budget as B
from hybridprune.search import trials as T
from hybridprune.search.config import parse_duration

from helpers import load, write_study


@pytest.mark.parametrize("text, seconds", [(90, 90.0), (1.5, 1.5), ("45s", 45.0), ("90m", 5400.0), ("2h", 7200.0),
                                           ("1h30m", 5400.0), ("1h 30min", 5400.0), ("0.5h", 1800.0)])
def test_durations(text, seconds):
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize("text", ["", "2 hours", "-5", 0, -1, True, "1e400", float("inf"), "400d", 10**9])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="x must be a duration > 0"):
        parse_duration(text, "x")


def test_budget_is_kept_in_the_study_and_resumes_with_what_is_left():
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert B.start(study, None) is None and B.describe(study) is None
    first = B.start(study, 100.0)
    assert not B.used_up(study) and first.deadline == pytest.approx(time.time() + 100, abs=2)
    first.started -= 60  # as if this run had taken a minute
    first.finish()
    assert study.user_attrs[T.STUDY_TIME][B.USED_S] == pytest.approx(60, abs=2)
    assert B.describe(study).startswith("time budget 1m40s: 1m00s used, 40s left")
    again = B.start(study, None)  # a resume without a budget continues with the recorded one
    assert again.deadline == pytest.approx(time.time() + 40, abs=2)
    again.started -= 40
    again.finish()
    assert B.start(study, 100.0).deadline <= time.time() + 1  # the same budget: nothing left
    assert B.used_up(study)
    more = B.start(study, 30.0)  # a new budget on a resume: that much more from now
    assert more.budget_s == pytest.approx(130, abs=2) and not B.used_up(study)


@pytest.mark.slow
def test_no_trial_starts_after_the_budget_and_status_says_so(tmp_path, capsys):
    path = write_study(tmp_path, name="timed", trials=50)
    assert main(["run", str(path), "--no-progress", "--time-budget", "1s"]) == 0
    _, study = load(path)
    done = [t for t in study.trials if t.state.is_finished()]
    assert 1 <= len(done) < 50  # the trial running at the deadline finished; no other started
    assert study.user_attrs[T.STUDY_TIME][B.DEADLINE] is None
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "time budget 1s:" in out and "0s left" in out
    assert main(["run", str(path), "--no-progress"]) == 0  # a resume with nothing left starts nothing
    _, study = load(path)
    assert len([t for t in study.trials if t.state.is_finished()]) == len(done)
    assert main(["run", str(path), "--no-progress", "--time-budget", "abc"]) == 2
    assert "--time-budget must be a duration" in capsys.readouterr().err


def _reference_trial(study, start: float, end: float | None, label: str | None = "paper"):
    from datetime import datetime

    from optuna.trial import FrozenTrial, TrialState

    study.add_trial(FrozenTrial(
        number=len(study.trials), trial_id=len(study.trials),
        state=TrialState.COMPLETE if end is not None else TrialState.RUNNING,
        value=None, values=[0.5, 1.0] if end is not None else None,
        datetime_start=datetime.fromtimestamp(start),
        datetime_complete=None if end is None else datetime.fromtimestamp(end),
        params={}, distributions={}, user_attrs={T.REFERENCE: label} if label else {}, system_attrs={},
        intermediate_values={}))


def test_reference_seconds_are_the_union_of_reference_intervals_since_the_run_started():
    study = optuna.create_study(directions=["maximize", "minimize"])
    now = time.time()
    _reference_trial(study, now - 500, now - 400)  # before this run: not credited
    _reference_trial(study, now - 100, now - 60)
    _reference_trial(study, now - 80, now - 50)  # overlaps the one before: counted once
    _reference_trial(study, now - 40, now - 30, label=None)  # a searched trial: charged
    _reference_trial(study, now - 20, None)  # running: up to now
    assert B.reference_seconds(study, since=now - 200, now=now) == pytest.approx(50 + 20, abs=0.01)
    assert B.reference_seconds(study, since=now - 70, now=now) == pytest.approx(20 + 20, abs=0.01)


def test_a_budget_that_covers_the_search_gives_the_reference_points_time_back():
    study = optuna.create_study(directions=["maximize", "minimize"])
    budget = B.start(study, 100.0, covers="search")
    budget.started -= 60  # as if this run had taken a minute, 45 s of it a reference point
    study.set_user_attr(T.STUDY_TIME, {**study.user_attrs[T.STUDY_TIME], B.STARTED: budget.started,
                                       B.DEADLINE: budget.deadline})
    now = time.time()
    _reference_trial(study, now - 50, now - 5)
    assert B.deadline(study) == pytest.approx(budget.deadline + 45, abs=1)
    assert not B.used_up(study)
    assert "searched trials only; 45s of reference points not charged" in B.describe(study)
    budget.finish()
    rec = study.user_attrs[T.STUDY_TIME]
    assert rec[B.USED_S] == pytest.approx(15, abs=2) and rec[B.CREDITED_S] == pytest.approx(45, abs=1)
    plain = optuna.create_study(directions=["maximize", "minimize"])
    every = B.start(plain, 100.0)  # the default charges every trial
    every.started -= 60
    _reference_trial(plain, now - 50, now - 5)
    every.finish()
    assert plain.user_attrs[T.STUDY_TIME][B.USED_S] == pytest.approx(60, abs=2)


@pytest.mark.parametrize("extra, message", [
    ('budget_covers = "references"', "study.budget_covers must be one of ['all', 'search']"),
    ('budget_covers = "search"\nbackend = "ray"', 'study.budget_covers = "search" needs backend = "local"'),
])
def test_bad_budget_covers_is_refused(tmp_path, capsys, extra, message):
    path = write_study(tmp_path, name="covers", study_extra=extra)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


@pytest.mark.slow
def test_reference_points_run_whole_when_the_budget_covers_only_the_search(tmp_path, capsys):
    path = write_study(tmp_path, name="covers", trials=50, study_extra='budget_covers = "search"')
    assert main(["run", str(path), "--no-progress", "--time-budget", "1s"]) == 0
    _, study = load(path)
    done = [t for t in study.trials if t.state.is_finished()]
    refs = [t for t in done if t.user_attrs.get(T.REFERENCE)]
    assert len(refs) >= 3 and all(t.state.is_finished() for t in study.trials if t.user_attrs.get(T.REFERENCE))
    # the baseline and every paper point ran, though each took longer than the whole budget
    assert len(done) - len(refs) <= 2 and len(done) < 50  # then about a second of search
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    assert "of reference points not charged" in capsys.readouterr().out
