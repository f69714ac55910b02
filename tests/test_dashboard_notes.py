"""The dashboard as a user reads it: the study note explains objectives, units and constraints;
reference trials carry a note saying what they are."""

from __future__ import annotations

import pytest
from optuna_dashboard import get_note

from hybridprune.cli import main
from hybridprune.search import trials as T
from hybridprune.search._optuna import finished_trial_note

from helpers import load, write_study

pytestmark = pytest.mark.slow


def test_study_and_reference_trial_notes(tmp_path):
    path = write_study(tmp_path, name="notes", trials=3)
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    note = get_note(study)
    assert "## About notes" in note and "`accuracy`: validation top-1" in note and "`latency_ms`: latency in ms" in note
    assert "**Constraints**" in note and "min_accuracy - accuracy" in note and "**Data**: val:" in note
    base = T.baseline_trial(study)
    assert "## Reference point: baseline" in finished_trial_note(study, base)
    paper = next(t for t in study.trials if T.is_reference(t, T.REF_PAPER))
    assert "## Reference point: paper" in finished_trial_note(study, paper)
    other = next((t for t in study.trials if not t.user_attrs.get(T.REFERENCE)), None)
    if other is not None:
        assert finished_trial_note(study, other) == ""
