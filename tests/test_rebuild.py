"""A trial's model rebuilt from its record (``search/rebuild.py``) and ``refine`` of a study whose
artifact store is gone: the replay is the stored model, weight for weight."""

from __future__ import annotations

import shutil

import pytest
import torch
from optuna.trial import TrialState

from hybridprune.cli import main
from hybridprune.errors import HybridPruneError
from hybridprune.search import trials as T

from helpers import load, write_study

pytestmark = pytest.mark.slow

REFERENCE = '\n[references]\nmodels = [{ model = "resnet20", checkpoint = "base.pt", name = "R20" }]\n'
BN_LADDER = "\n[fidelity]\nmin_steps = 1\nmax_steps = 4\neta = 2\nbn_batches = 2\n"


def _study(tmp_path, fidelity: bool, reference: bool = False):
    path = write_study(tmp_path, name="rebuild", trials=7)
    text = path.read_text()  # a data-driven criterion too: its calibration batches must replay the same
    path.write_text(text.replace('criterion = ["weight_magnitude", "bn_scale"]',
                                 'criterion = ["bn_scale", "taylor_weight"]'))
    if fidelity:  # every rung kind: adaptive BN (0 steps), then 1, 2, 4 steps
        path.write_text(path.read_text().replace("[finetune]\nsteps = 2\n", "[finetune]\n") + BN_LADDER)
    if reference:
        path.write_text(path.read_text() + REFERENCE)
    assert main(["run", str(path), "--no-progress"]) == 0
    return path


def _stored(cfg, trial):
    from optuna.artifacts import download_artifact

    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.search.storage import get_artifact_store

    path = cfg.run_dir / f"stored{trial.number}.pt"
    download_artifact(artifact_store=get_artifact_store(cfg.artifact_dir),
                      artifact_id=trial.user_attrs[T.ARTIFACTS][T.ARTIFACT_CHECKPOINT], file_path=str(path))
    return load_checkpoint(path, cfg.model.name).model


@pytest.mark.parametrize("fidelity", [False, True], ids=["fixed-budget", "bn-and-step-rungs"])
def test_a_rebuilt_trial_is_the_stored_model(tmp_path, fidelity):
    from hybridprune.search.context import build_context
    from hybridprune.search.pareto import usable
    from hybridprune.search.rebuild import rebuild

    cfg, study = load(_study(tmp_path, fidelity))
    ctx = build_context(cfg, train_if_missing=False)
    trials = usable(study)
    assert {t.params.get("criterion") for t in trials} >= {"bn_scale", "taylor_weight"}
    if fidelity:  # every replay starts with the adaptive BN rung; MO-ASHA stopped some trials early
        assert all([r["steps"] for r in t.user_attrs[T.RUNGS]] == [0, 1, 2, 4][: len(t.user_attrs[T.RUNGS])]
                   for t in trials)
        assert any(t.user_attrs[T.FIDELITY_STEPS] == 4 for t in trials)
    for t in trials:
        made = rebuild(ctx, t)
        stored = _stored(cfg, t).state_dict()
        rebuilt = made.model.cpu().state_dict()
        assert rebuilt.keys() == stored.keys()
        for k, v in stored.items():
            assert torch.equal(rebuilt[k], v), (t.number, k)
        assert made.val_top1 == made.recorded_top1 == T.accuracy(t)
        assert made.record == t.user_attrs[T.RECORD]


def test_refine_of_a_study_whose_artifacts_are_gone_rebuilds_them_and_gets_the_same_result(tmp_path, capsys):
    path = _study(tmp_path, fidelity=True, reference=True)
    refine = ["refine", str(path), "--top", "2", "--epochs", "0.05", "--rounds", "1"]
    assert main(refine) == 0
    cfg, study = load(path)
    first = T.refined(study)
    shutil.rmtree(cfg.artifact_dir)  # the storage outlived its artifact store
    capsys.readouterr()
    assert main(refine) == 0
    out = capsys.readouterr().out
    _, study = load(path)
    again = T.refined(study)
    assert again.keys() == first.keys() and -1 in again  # the reference model was refined and rebuilt too
    assert out.count("checkpoint artifact missing, rebuilt from its record") == len(first)
    assert "reused (already refined)" not in out  # a record whose artifacts are gone is refined again
    for n, rec in again.items():
        assert rec[T.R_REBUILT]["val_top1"] == rec[T.R_REBUILT]["recorded_val_top1"]
        assert rec[T.R_TEST] == first[n][T.R_TEST] and rec[T.R_VAL] == first[n][T.R_VAL]
        assert rec[T.R_ARTIFACTS] != first[n][T.R_ARTIFACTS]
    assert main(["select", str(path), "--max-latency-ratio", "10", "--export", str(tmp_path / "sel")]) == 0
    assert (tmp_path / "sel" / "model.onnx").exists()


def test_a_trial_without_a_fine_tune_of_its_own_is_refused(tmp_path):
    from hybridprune.search.context import build_context
    from hybridprune.search.rebuild import rebuild

    cfg, study = load(_study(tmp_path, fidelity=False))
    ctx = build_context(cfg, train_if_missing=False)
    t = next(t for t in study.get_trials(states=(TrialState.COMPLETE,)))
    for attr in ({T.GATED: "latency 9 ms is over the budget"}, {T.DUPLICATE_OF: 0}):
        fake = type("Frozen", (), {"number": t.number, "params": t.params, "user_attrs": {**t.user_attrs, **attr}})
        with pytest.raises(HybridPruneError, match="no fine-tune of its own to replay"):
            rebuild(ctx, fake)


def _next_session(first, second, study_file: str):
    """What reaches the next session: the study file, its baseline checkpoint, the committed state/."""
    second.mkdir()
    for name in (study_file, "base.pt"):
        shutil.copy(first / name, second / name)
    shutil.copytree(first / "state", second / "state")
    return second


def test_a_journal_carried_to_a_fresh_folder_refines_there(tmp_path, capsys):
    """The real-scale stages' hand-off: only the study file, its baseline checkpoint and its journal
    storage reach the next session (no run folder, no artifacts); refine rebuilds and refines there."""
    first = tmp_path / "session1"
    path = write_study(first, name="carried", trials=5, study_extra='storage = "state/carried.journal"')
    assert main(["run", str(path), "--no-progress"]) == 0
    second = _next_session(first, tmp_path / "session2", "carried.toml")
    capsys.readouterr()
    assert main(["refine", str(second / "carried.toml"), "--top", "1", "--epochs", "0.05", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    cfg, study = load(second / "carried.toml")
    refined = T.refined(study)
    assert len(refined) == 2 and out.count("rebuilt from its record") == 2  # the baseline and the top trial
    assert all(r[T.R_REBUILT]["val_top1"] == r[T.R_REBUILT]["recorded_val_top1"] for r in refined.values())
    assert cfg.artifact_dir.resolve().is_relative_to(second.resolve())  # the refined models are stored here
    assert any(cfg.artifact_dir.rglob("*")) and T.STUDY_REFINED in study.user_attrs


def test_refine_resumes_model_by_model_from_a_kept_refined_store_in_another_session(tmp_path, capsys):
    """``[study] refined_artifact_dir`` beside the journal: a later session (no run folder, no trial
    artifacts) reuses what was refined, refines only what is new, and publishes from the kept store."""
    first = tmp_path / "session1"
    extra = 'storage = "state/kept.journal"\nrefined_artifact_dir = "state/refined"'
    path = write_study(first, name="kept", trials=5, study_extra=extra)
    assert main(["run", str(path), "--no-progress"]) == 0
    refine = ["--epochs", "0.05", "--rounds", "1"]
    assert main(["refine", str(path), "--top", "1", *refine]) == 0
    cfg, study = load(path)
    before = T.refined(study)
    assert len(before) == 2 and any((first / "state" / "refined").rglob("*"))
    kept_files = {p.name for p in (first / "state" / "refined").rglob("*") if p.is_file()}
    trial_files = {p.name for p in cfg.artifact_dir.rglob("*") if p.is_file()}
    assert kept_files and not kept_files & trial_files  # the refined models, and only they, are kept there
    second = _next_session(first, tmp_path / "session2", "kept.toml")
    capsys.readouterr()
    assert main(["refine", str(second / "kept.toml"), "--top", "2", *refine]) == 0
    out = capsys.readouterr().out
    _, study = load(second / "kept.toml")
    after = T.refined(study)
    assert out.count("reused (already refined)") == 2 and out.count("rebuilt from its record") == 1
    assert len(after) == 3 and all(after[n][T.R_TEST] == rec[T.R_TEST] for n, rec in before.items())
    assert main(["publish", str(second / "kept.toml"), "--out", str(second / "published"), "--rounds", "1"]) == 0
    assert any((second / "published").glob("*.onnx"))
