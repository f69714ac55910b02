"""Reference models ([references] models): adapted/trained, timed and refined like trials, on every front."""

from __future__ import annotations

import json

import pytest

from hybridprune.cli import main
from hybridprune.search import trials as T
from hybridprune.search.references import NAME, reference_trials

from helpers import load, write_study

pytestmark = pytest.mark.slow

REFS = '\n[references]\nmodels = [{ model = "resnet8", name = "ResNet-8" }]\n[baseline]\nepochs = 1\nbatch_size = 32\n'


@pytest.fixture(scope="module")
def study_with_reference(tmp_path_factory):
    path = write_study(tmp_path_factory.mktemp("refs"), name="refs", trials=3)
    path.write_text(path.read_text() + REFS)
    assert main(["run", str(path), "--no-progress"]) == 0
    return path


def test_the_reference_is_recorded_like_a_trial_but_is_none(study_with_reference, capsys):
    cfg, study = load(study_with_reference)
    (ref,) = reference_trials(study)
    assert ref.number == -1 and ref.user_attrs[NAME] == "ResNet-8" and T.is_reference(ref, T.REF_FAMILY)
    assert 0 <= T.accuracy(ref) <= 1 and T.latency_ms(ref) > 0 and ref.user_attrs[T.LATENCY_RATIO] > 0
    assert (cfg.artifact_dir / ref.user_attrs[T.ARTIFACTS]["checkpoint"]).is_file()
    assert all(t.number >= 0 for t in study.trials)  # the samplers never see it
    assert main(["status", str(study_with_reference)]) == 0
    out = capsys.readouterr().out
    assert "family: ResNet-8" in out
    from optuna_dashboard import get_note

    assert "Reference models" in get_note(study) and "ResNet-8" in get_note(study)
    # a resume does not make it again
    assert main(["run", str(study_with_reference), "--no-progress"]) == 0
    assert "reference ResNet-8:" not in capsys.readouterr().out


def test_refine_select_and_publish_treat_it_as_a_candidate(study_with_reference, tmp_path, capsys):
    assert main(["refine", str(study_with_reference), "--top", "1", "--epochs", "0.05", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "trial -1 fine-tuned" in out and "family" in out
    _, study = load(study_with_reference)
    rec = T.refined(study)[-1]
    assert rec[T.R_EPOCHS] == 0.05 and rec[T.R_RATIO] > 0 and 0 <= rec[T.R_TEST] <= 1
    export = tmp_path / "export"
    assert main(["select", str(study_with_reference), "--max-latency-ms", "1e6", "--export", str(export)]) == 0
    out = capsys.readouterr().out
    record = json.loads((export / "record.json").read_text())
    assert record["trial"] >= 0  # a pruned model (or the baseline) is exported unless asked otherwise
    assert "reference model ResNet-8" in (export / "REPORT.md").read_text()
    best_pruned = max(T.refined(study)[n][T.R_VAL] for n in T.refined(study) if n >= 0)
    if rec[T.R_VAL] > best_pruned:
        assert "note: reference model ResNet-8 meets the budget" in out
    allowed = tmp_path / "allowed"
    assert main(["select", str(study_with_reference), "--max-latency-ms", "1e6", "--min-accuracy", "0",
                 "--export", str(allowed), "--allow-reference"]) == 0
    chosen = json.loads((allowed / "record.json").read_text())["trial"]
    cands = {n: r[T.R_VAL] for n, r in T.refined(study).items()}
    assert cands[chosen] == max(cands.values())
    out_dir = tmp_path / "published"
    assert main(["publish", str(study_with_reference), "--out", str(out_dir), "--rounds", "1"]) == 0
    front = json.loads((out_dir / "front.json").read_text())
    family = [e for e in front if e["reference"] == T.REF_FAMILY]
    assert len(family) == 1 and family[0]["reference_name"] == "ResNet-8"
    assert (out_dir / family[0]["onnx"]).is_file() and family[0]["onnx"] == "reference-ResNet-8.onnx"


@pytest.mark.parametrize("entry, message", [
    ('{ model = "resnet8", bogus = 1 }', "unknown key(s) ['bogus'] in references.models[0]"),
    ('{ checkpoint = "x.pt" }', "references.models[0] needs model"),
    ('{ model = "resnet9" }', "resnet9"),
    ('{ model = "resnet8", checkpoint = "missing.pt" }', "references.models[0].checkpoint"),
    ('{ model = "resnet8" }, { model = "resnet8" }', "references.models[1].name must be a unique"),
])
def test_bad_references_are_one_line_before_any_training(tmp_path, capsys, entry, message):
    path = write_study(tmp_path, name="badref")
    path.write_text(path.read_text() + f"\n[references]\nmodels = [{entry}]\n")
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "study.db").exists()


def test_a_reference_with_other_classes_is_refused_before_the_baseline_trains(tmp_path, capsys):
    from hybridprune.checkpoints import save_checkpoint
    from hybridprune.models import Normalization, create_model

    save_checkpoint(tmp_path / "five.pt", create_model("resnet8", num_classes=5), Normalization())
    path = write_study(tmp_path, name="classes")
    path.write_text(path.read_text().replace('checkpoint = "', 'checkpoint = "', 1)
                    + '\n[references]\nmodels = [{ model = "resnet8", checkpoint = "five.pt" }]\n')
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "references.models[0] (resnet8) has 5 classes but dataset 'digits' has 10" in err
    assert not (tmp_path / "run" / "study.db").exists()
