"""End to end: a tiny study runs through the CLI; Pareto set, plots, status, failures."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest
import torch
from optuna.trial import TrialState

from hybridprune.cli import main

from helpers import load, write_study

pytestmark = pytest.mark.slow

ATTRS = {"config", "params", "macs", "architecture", "removed_blocks", "latency", "latency_ms", "latency_backend",
         "latency_cached", "latency_key", "accuracy", "finetune_steps", "time_s", "record", "constraints", "artifacts",
         "finetune"}


def test_tiny_study_records_everything(tiny_study):
    cfg, study = load(tiny_study)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    for t in trials:
        assert ATTRS <= set(t.user_attrs), ATTRS - set(t.user_attrs)
        assert t.values[0] == t.user_attrs["accuracy"] and t.values[1] == t.user_attrs["latency_ms"]
        assert set(t.user_attrs["time_s"]) >= {"prune", "export", "latency", "finetune", "eval", "total"}
        assert "accuracy_before" not in t.user_attrs  # only with [finetune] eval_before = true
        assert t.constraints == {"latency": pytest.approx(t.values[1] - 1000.0)}
        assert (cfg.artifact_dir / t.user_attrs["artifacts"]["checkpoint"]).is_file()
        assert (cfg.artifact_dir / t.user_attrs["artifacts"]["onnx"]).is_file()
    # the unpruned baseline and the paper's settings were enqueued first
    refs = [t.user_attrs.get("reference") for t in sorted(trials, key=lambda t: t.number)]
    assert refs == ["baseline", "paper", "paper"]
    assert trials[0].params["channel_ratio"] == 0.0 and trials[0].user_attrs["record"] is None
    pruned = next(t for t in trials if t.params["pruned_blocks"] == 1)
    assert (
        len(pruned.user_attrs["removed_blocks"]) == 1 and pruned.user_attrs["params"] < trials[0].user_attrs["params"]
    )
    # the study's records name paths as its study file does: a committed journal holds no path of this machine
    text = json.dumps([study.user_attrs, [t.user_attrs for t in study.trials]], default=str)
    assert str(cfg.path.parent) not in text and str(cfg.path.parent.parent) not in text
    assert study.user_attrs["study_file"] == cfg.path.name
    assert (cfg.path.parent / study.user_attrs["artifact_dir"]).resolve() == cfg.artifact_dir.resolve()


def test_rerun_resumes_without_redoing(tiny_study):
    _, study = load(tiny_study)
    before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert main(["run", str(tiny_study), "--no-progress"]) == 0
    _, study = load(tiny_study)
    after = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert after == before


def test_status_and_pareto(tiny_study, capsys):
    cfg, study = load(tiny_study)
    assert main(["status", str(tiny_study)]) == 0
    out = capsys.readouterr().out
    assert "3 complete" in out and "Pareto set" in out
    assert main(["pareto", str(tiny_study), "--out", str(cfg.run_dir / "plots")]) == 0
    png, html = cfg.run_dir / "plots" / "pareto.png", cfg.run_dir / "plots" / "pareto.html"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in html.read_text()[:200000].lower()
    capsys.readouterr()
    assert main(["pareto", str(tiny_study), "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert {r["number"] for r in rows} == {t.number for t in study.best_trials}


def test_status_counts_trials_stopped_with_their_worker(tmp_path, capsys):
    """A trial whose worker died (no fail_reason: killed, interrupted) is not hidden from ``status``."""
    import optuna

    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.study import open_study

    path = write_study(tmp_path, name="stale")
    study = open_study(load_cfg(str(path)))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "bad"}))
    assert main(["status", str(path)]) == 0
    assert "1 failed (+1 stopped with their worker)" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["status"], ["pareto"], ["refine"], ["publish", "--out", "OUT"],
                                     ["select", "--max-latency-ratio", "0.8", "--export", "OUT"]])
def test_read_only_commands_on_an_unrun_study_create_nothing(tmp_path, capsys, command):
    path = write_study(tmp_path, name="never")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    assert main([args[0], str(path), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "has not been run yet" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no study.db, no run folder, no output


def test_failing_trials_are_recorded_and_the_study_goes_on(tmp_path, capsys, caplog):
    """An unreachable latency agent fails each trial (LatencyError); the study still finishes, and
    each failure is one line (no Optuna traceback)."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_study(tmp_path, name="unreachable", trials=2, backend="remote",
                       latency_options=f'{{ url = "http://127.0.0.1:{port}", timeout = 2.0 }}')
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 2 and not study.get_trials(states=(TrialState.COMPLETE,))
    assert all(t.user_attrs["fail_reason"].startswith("LatencyError") for t in failed)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "failed with parameters" not in err, err
    lines = [r.getMessage() for r in caplog.records]
    assert not [m for m in lines if "failed with" in m], lines  # Optuna's two warnings, one with a traceback
    assert [m.split(":")[0] for m in lines if " failed: " in m] == ["trial 0 failed", "trial 1 failed"]
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= 30]


def test_exported_onnx_matches_checkpoint(tiny_study, tmp_path):
    from hybridprune.checkpoints import load_checkpoint

    cfg, study = load(tiny_study)
    out = tmp_path / "sel"
    assert main(["select", str(tiny_study), "--max-latency-ms", "1e6", "--export", str(out)]) == 0
    loaded = load_checkpoint(out / "model.pt")
    x = torch.randn(1, 3, 32, 32)
    ref = loaded.model(x).detach().numpy()
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {
        ort.InferenceSession(str(out / "model.onnx")).get_inputs()[0].name: x.numpy()})[0]
    assert abs(ref - got).max() < 1e-3


def test_params_as_a_third_objective(tmp_path):
    path = write_study(tmp_path, name="three", trials=1)
    path.write_text(path.read_text() + '\n[objectives]\nextra = ["params"]\n')
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    (t,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert study.metric_names == ["accuracy", "latency_ms", "params"]
    assert t.values[2] == t.user_attrs["params"]


def test_pareto_out_that_is_a_file_is_one_error_line(tiny_study, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep")
    assert main(["pareto", str(tiny_study), "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --out {target} is a file, not a folder; give a folder (it is created if missing)"
    assert target.read_text() == "keep"


def test_a_per_stage_study_prunes_each_stage_by_its_own_count(tmp_path):
    path = write_study(tmp_path, name="stages", trials=3)
    text = path.read_text()
    old = 'pruned_blocks = { low = 0, high = 3 }\n'
    assert old in text
    text = text.replace("[space]\n", '[space]\nkind = "hybrid_stages"\n')
    path.write_text(text.replace(old, "blocks_stage1 = [1, 2]\n"))
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    done = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "blocks_stage1" in t.params]
    assert done and study.user_attrs["space"]["kind"] == "hybrid_stages"
    for t in done:
        assert set(t.params) >= {"blocks_stage1", "blocks_stage2", "blocks_stage3"}
        counts = [t.params[f"blocks_stage{i}"] for i in (1, 2, 3)]
        config = t.user_attrs["config"]
        assert counts[0] in (1, 2) and config["stage_blocks"] == counts and config["pruned_blocks"] == sum(counts)
        removed = t.user_attrs["removed_blocks"]
        assert [sum(n.startswith(f"layer{i}.") for n in removed) for i in (1, 2, 3)] == counts


def test_warm_start_points_run_after_the_references_as_searched_trials_and_once(tmp_path):
    path = write_study(tmp_path, name="warm", trials=8)  # the baseline and 4 paper points, then the seeded
    text = path.read_text()
    path.write_text(text.replace("[space]\n", "[space]\nwarm_start = 3\n"))
    assert main(["run", str(path), "--no-progress"]) == 0
    cfg, study = load(path)
    from hybridprune.search.context import _architecture, build_space

    want = build_space(cfg, _architecture(cfg, 10)).warm_start_points()
    # one point per line, half-way: 0.3 of channels (0-0.5), 2 blocks (0-3), then both, which is
    # the paper's first setting (0.3, 2 blocks, first criterion and order): not enqueued twice
    assert [(p["channel_ratio"], p["pruned_blocks"]) for p in want] == [(0.3, 0), (0.0, 2), (0.3, 2)]
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.user_attrs.get("reference") for t in trials[:5]] == ["baseline"] + ["paper"] * 4
    assert want[2] in [t.params for t in trials[:5]]
    seeded = [t for t in trials if t.user_attrs.get("warm_start")]
    assert [t.number for t in seeded] == [5, 6] and [t.params for t in seeded] == want[:2]
    assert all(t.state == TrialState.COMPLETE and "reference" not in t.user_attrs for t in seeded)
    assert trials[7:] and not any(t.user_attrs.get("warm_start") for t in trials[7:])  # then the sampler's own

    path.write_text(path.read_text().replace("trials = 8", "trials = 9"))  # resume: one sampled trial more
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    assert len(study.get_trials()) > len(trials)
    assert sum(bool(t.user_attrs.get("warm_start")) for t in study.get_trials()) == 2


def test_a_resumed_run_adds_nothing_to_a_journal_that_only_repeats_it(tmp_path):
    # a committed journal is resumed in session after session: each resumed run of a finished study
    # used to log a study creation, every study record and a new version of the same dashboard note
    path = write_study(tmp_path, trials=1, study_extra='storage = "journal://study.journal"')
    assert main(["run", str(path), "--no-progress"]) == 0
    journal = tmp_path / "study.journal"
    lines = journal.read_text().splitlines()
    assert sum(json.loads(x)["op_code"] == 0 for x in lines) == 1
    assert main(["run", str(path), "--no-progress"]) == 0
    assert journal.read_text().splitlines() == lines
    _, study = load(path)
    assert study.user_attrs["study_file"] == path.name
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
