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
