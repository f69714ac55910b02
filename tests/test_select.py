"""``hybridprune select``: budgets that are met, unmet and met exactly."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState

from hybridprune.cli import main

from helpers import load

pytestmark = pytest.mark.slow


def _completed(path):
    _, study = load(path)
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_met_budget_exports_the_most_accurate_feasible(tiny_study, tmp_path):
    from hybridprune.checkpoints import load_checkpoint

    trials = _completed(tiny_study)
    budget = sorted(t.values[1] for t in trials)[1]  # excludes the slowest trial(s)
    ok = [t for t in trials if t.values[1] <= budget]
    best = min(ok, key=lambda t: (-t.values[0], t.values[1], t.number))
    out = tmp_path / "export"
    assert main(["select", str(tiny_study), "--max-latency-ms", str(budget), "--export", str(out)]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["trial"] == best.number
    assert (out / "REPORT.md").read_text().startswith(f"# tiny: trial {best.number}")
    loaded = load_checkpoint(out / "model.pt")
    assert loaded.record == best.user_attrs["record"]
    assert sum(p.numel() for p in loaded.model.parameters()) == best.user_attrs["params"]


def test_exact_budget_counts_as_met(tiny_study, tmp_path):
    fastest = min(_completed(tiny_study), key=lambda t: t.values[1])
    out = tmp_path / "exact"
    assert main(["select", str(tiny_study), "--max-latency-ms", repr(fastest.values[1]), "--export", str(out)]) == 0
    assert json.loads((out / "record.json").read_text())["trial"] == fastest.number


@pytest.mark.parametrize("extra", [["--max-latency-ms", "1e-6"], ["--max-latency-ms", "1e6", "--min-accuracy", "1.0"]])
def test_unmet_budget_exits_nonzero_with_the_closest_trials(tiny_study, tmp_path, capsys, extra):
    if "--min-accuracy" in extra and any(t.values[0] >= 1.0 for t in _completed(tiny_study)):
        pytest.skip("a trial reached 100% accuracy")
    out = tmp_path / "none"
    assert main(["select", str(tiny_study), *extra, "--export", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: no completed trial of 3 (search basis) meets" in err and "closest trials" in err
    assert not out.exists()


def test_bad_budget_is_a_usage_error(tiny_study, tmp_path, capsys):
    assert main(["select", str(tiny_study), "--max-latency-ms", "-1", "--export", str(tmp_path / "x")]) == 2
    assert "--max-latency-ms must be > 0" in capsys.readouterr().err


def test_budget_relative_to_the_baseline(tiny_study, tmp_path, capsys):
    trials = _completed(tiny_study)
    base = next(t for t in trials if t.user_attrs.get("reference") == "baseline")
    out = tmp_path / "ratio"
    assert main(["select", str(tiny_study), "--max-latency-ratio", "1.0", "--export", str(out)]) == 0
    chosen = json.loads((out / "record.json").read_text())["trial"]
    ok = [t for t in trials if t.values[1] <= base.values[1]]
    assert chosen == min(ok, key=lambda t: (-t.values[0], t.values[1], t.number)).number
    capsys.readouterr()
    assert main(["select", str(tiny_study), "--export", str(out)]) == 2
    assert "exactly one of --max-latency-ms and --max-latency-ratio" in capsys.readouterr().err
