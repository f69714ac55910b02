"""``hybridprune refine``: a tiny study's best trials fine-tuned longer, scored on test, re-timed; resume; select."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from optuna_dashboard import get_note

from hybridprune.cli import main
from hybridprune.search import trials as T
from hybridprune.search.latency import BASELINE, interleaved_latency, ratio_summary

from helpers import load, load_benchmark, write_checkpoint, write_study

pytestmark = pytest.mark.slow

REFINE = ("--top", "2", "--epochs", "0.05", "--rounds", "2")


@pytest.fixture(scope="module")
def refined_study(tmp_path_factory):
    """A tiny study (baseline + 2 paper settings + 1 sampled) run and refined once through the CLI."""
    path = write_study(tmp_path_factory.mktemp("refine-study"), name="refine", trials=4)
    assert main(["run", str(path), "--no-progress"]) == 0
    assert main(["refine", str(path), *REFINE]) == 0
    return path


def _expected(study):
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs.get(T.ARTIFACTS)
            and T.counts_towards_target(t) and T.feasible(t)]
    top = sorted(done, key=lambda t: (-T.accuracy(t), T.latency_ms(t), t.number))[:2]
    base = next(t for t in done if t.user_attrs.get(T.REFERENCE) == "baseline")
    return {base.number} | {t.number for t in top}, base.number


def test_refine_records_results_artifacts_notes_and_plot(refined_study):
    cfg, study = load(refined_study)
    expected, base = _expected(study)
    records = T.refined(study)
    assert set(records) == expected  # the two most accurate and always the unpruned baseline
    for number, rec in records.items():
        assert rec[T.R_EPOCHS] == 0.05 and rec["distill"] is True and rec["lr"] == cfg.finetune.lr
        assert 0 <= rec[T.R_TEST] <= 1 and 0 <= rec[T.R_VAL] <= 1
        assert rec[T.R_LATENCY] > 0 and rec["rounds"] == 2 and rec["seconds"] > 0
        lo, hi = rec[T.R_RATIO_CI]
        assert lo <= rec[T.R_RATIO] <= hi
        for key in ("checkpoint", "onnx"):
            assert (cfg.artifact_dir / rec[T.R_ARTIFACTS][key]).is_file()
        trial = study.trials[number]
        assert rec[T.R_ARTIFACTS]["checkpoint"] != trial.user_attrs[T.ARTIFACTS]["checkpoint"]
        note = get_note(SimpleNamespace(storage=study._storage, study=study, _trial_id=trial._trial_id))
        assert f"Refined trial {number}" in note and "test top-1" in note
    assert records[base][T.R_RATIO] == 1.0 and records[base][T.R_RATIO_CI] == [1.0, 1.0]
    assert "Refined front of refine" in get_note(study)
    assert study.user_attrs[T.STUDY_REFINED]["baseline"] == base
    assert (cfg.run_dir / "refined_pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refined_checkpoint_carries_test_top1(refined_study, capsys):
    from optuna.artifacts import download_artifact

    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.search.storage import get_artifact_store

    cfg, study = load(refined_study)
    number, rec = next(iter(T.refined(study).items()))
    path = cfg.run_dir / "refined-check.pt"
    download_artifact(artifact_store=get_artifact_store(cfg.artifact_dir), artifact_id=rec[T.R_ARTIFACTS]["checkpoint"],
                      file_path=str(path))
    metrics = load_checkpoint(path).metrics
    assert metrics["test_top1"] == rec[T.R_TEST] and metrics["trial"] == number
    from hybridprune.search.context import load_data

    data = load_data(cfg)
    assert metrics["test_split"] == f"test: {len(data.test):,} images, the digits test set"  # which images, how many
    assert metrics["val_split"].startswith(f"val: {len(data.val):,} images held out of the digits training set")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "test_top1" in out and "test_split" in out


@pytest.mark.parametrize("change, key, value", [(("--no-distill",), T.R_DISTILL, False),
                                                (("--lr", "0.003"), T.R_LR, 0.003),
                                                (("--distill-weight", "0.6"), T.R_DISTILL_WEIGHT, 0.6)])
def test_a_changed_recipe_is_refined_again_not_reused(refined_study, tmp_path, capsys, change, key, value):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(refined_study.parent, copy)  # the study file, its run folder and its checkpoint
    study_file = copy / refined_study.name
    _, study = load(study_file)
    before = T.refined(study)
    assert main(["refine", str(study_file), *REFINE, *change]) == 0
    assert "reused (already refined)" not in capsys.readouterr().out
    _, study = load(study_file)
    after = T.refined(study)
    assert set(after) == set(before)
    for n in before:
        assert after[n][key] == value and after[n][key] != before[n][key]
        assert after[n][T.R_ARTIFACTS] != before[n][T.R_ARTIFACTS]


def test_second_run_skips_the_fine_tunes_but_retimes(refined_study, capsys):
    _, study = load(refined_study)
    before = T.refined(study)
    assert main(["refine", str(refined_study), *REFINE]) == 0
    assert capsys.readouterr().out.count("reused (already refined)") == len(before)
    _, study = load(refined_study)
    after = T.refined(study)
    assert set(after) == set(before)
    for n in before:
        assert after[n][T.R_ARTIFACTS] == before[n][T.R_ARTIFACTS]
        assert after[n][T.R_TEST] == before[n][T.R_TEST]


def test_select_exports_the_refined_model(refined_study, tmp_path):
    import hashlib

    cfg, study = load(refined_study)
    out = tmp_path / "export"
    assert main(["select", str(refined_study), "--max-latency-ms", "1000", "--export", str(out)]) == 0
    import json

    record = json.loads((out / "record.json").read_text())
    number = record["trial"]
    rec = T.refined(study).get(number)
    assert rec is not None, "the most accurate trial was refined (--top 2)"
    digest = hashlib.sha256((cfg.artifact_dir / rec[T.R_ARTIFACTS]["checkpoint"]).read_bytes()).hexdigest()
    assert hashlib.sha256((out / "model.pt").read_bytes()).hexdigest() == digest
    report = (out / "REPORT.md").read_text()
    assert "test top-1" in report and "x the unpruned baseline (CI" in report


@pytest.mark.parametrize("args, message", [
    (("--top", "0"), "--top must be >= 1"),
    (("--epochs", "-1"), "need --epochs > 0"),
    (("--epochs", "0"), "need --epochs > 0"),
    (("--epochs", "1e300"), "--epochs must be at most 10,000"),
    (("--top", "1", "--lr", "inf"), "--lr must be a number in (0, 10]"),
    (("--top", "1", "--lr", "0"), "--lr must be a number in (0, 10]"),
    (("--top", "2", "--max-latency-ms", "5"), "give one of --top, --trial or a latency budget"),
    (("--top", "2", "--max-latency-ratio", "0.5"), "give one of --top, --trial or a latency budget"),
    (("--top", "2", "--trial", "1"), "give one of --top, --trial or a latency budget"),
    (("--trial", "999"), "--trial 999: not a completed trial with artifacts"),
    (("--epochs", "inf"), "need --epochs > 0"),
    (("--rounds", "0"), "--rounds must be >= 1"),
    (("--distill-weight", "0"), "--distill-weight must be in (0, 1]"),
    (("--distill-weight", "1.5"), "--distill-weight must be in (0, 1]"),
    (("--distill-weight", "nan"), "--distill-weight must be in (0, 1]"),
])
def test_bad_options_are_one_line_errors(refined_study, capsys, args, message):
    _, study = load(refined_study)
    before = dict(study.user_attrs), study._storage.get_study_system_attrs(study._study_id)
    assert main(["refine", str(refined_study), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    _, study = load(refined_study)
    assert (dict(study.user_attrs), study._storage.get_study_system_attrs(study._study_id)) == before


def test_candidates_pareto_budget_and_top(refined_study):
    from hybridprune.search.pareto import pareto_rows
    from hybridprune.search.refine import candidates

    _, study = load(refined_study)
    expected, base = _expected(study)
    default = candidates(study)
    assert default[0].number == base
    assert {t.number for t in default[1:]} == {r.number for r in pareto_rows(study)} - {base}
    assert {t.number for t in candidates(study, top=2)} == expected
    fastest = min((t for t in study.trials if t.number != base and t.user_attrs.get(T.ARTIFACTS)), key=T.latency_ms)
    under = candidates(study, max_latency_ms=T.latency_ms(fastest))
    assert under[0].number == base and fastest.number in {t.number for t in under}
    assert all(T.latency_ms(t) <= T.latency_ms(fastest) for t in under[1:])
    named = candidates(study, numbers=[fastest.number, base])
    assert [t.number for t in named] == [base, fastest.number]  # the baseline first, once


def test_unknown_study_and_study_without_trials(tmp_path, capsys):
    assert main(["refine", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    never = write_study(tmp_path / "never", name="never")
    assert main(["refine", str(never)]) == 2
    assert "has not been run yet" in capsys.readouterr().err
    assert not (tmp_path / "never" / "run" / "refined_pareto.png").exists()


def test_study_with_no_completed_trials(tmp_path, capsys):
    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.study import open_study

    path = write_study(tmp_path, name="empty")
    open_study(load_cfg(str(path)), create=True)
    assert main(["refine", str(path)]) == 2
    assert "no completed trials" in capsys.readouterr().err


def test_ratio_summary_and_interleaving_order():
    s = ratio_summary([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert s[T.R_RATIO] == 1.0 and s[T.R_RATIO_CI] == [0.5, 1.5] and s[T.R_MEASURED] == 2.0
    # the ratio comes from the quietest rounds (baseline within 2% of its fastest), the CI from all
    s = ratio_summary([1.0, 1.0, 1.0], [2.0, 2.5, 2.02], ratios=[0.5, 0.7, 0.52])
    assert s[T.R_RATIO] == pytest.approx(0.51) and s[T.R_RATIO_CI] == [0.5, 0.7]
    calls = []

    def pair(model, baseline):
        calls.append((model, baseline))
        return {"m": 1.0, "n": 4.0}[model], 2.0, {"m": 0.5, "n": 2.0}[model]

    out = interleaved_latency(pair, "b", {1: "m", 2: "n"}, rounds=2)
    assert calls == [("m", "b"), ("n", "b")] * 2  # every model timed next to the baseline, each round
    assert out[1][T.R_RATIO] == 0.5 and out[2][T.R_RATIO] == 2.0 and out[BASELINE][T.R_RATIO] == 1.0


def test_paired_timing_drops_the_cold_runs_after_each_switch():
    """A run right after the other model's runs is slow (cold caches); alternating single runs
    read every run cold (here 1.5 / 4.2 for a warm 0.25). Blocks drop each block's first runs, alternate the
    order, and give the warm ratio; the callables here return their ms without being timed."""
    import itertools

    from hybridprune.evaluators import timing

    last = {"who": None}

    def runner(name, warm_ms, cold_ms):
        def run_once():
            cold = last["who"] != name
            last["who"] = name
            return cold_ms if cold else warm_ms
        return run_once

    calls = []
    model, base = runner("m", 1.0, 1.5), runner("b", 4.0, 4.2)

    def logged(f, name):
        return lambda: calls.append(name) or f()

    protocol = timing.Protocol(warmup_runs=3, min_runs=18, max_runs=18, max_time_s=600)  # 18 runs: 6 pairs
    stats = timing.alternate_blocks(logged(model, "m"), logged(base, "b"), protocol)
    assert stats["pair_ratio"] == 0.25 and stats["pair_ratio_ci"] == [0.25, 0.25]
    assert stats["median_ms"] == 1.0 and stats["baseline_median_ms"] == 4.0 and stats["runs"] == 6
    assert stats["pairing"] == timing.pair_blocks()
    # each block: 2 dropped runs, then >= 3 timed runs adding up to >= 25 ms: the model 25 of
    # 1 ms, the baseline 7 of 4 ms; a warm-up pair, then 6 pairs, the order flipping every pair
    m, b = timing.PAIR_BLOCK_WARMUP + 25, timing.PAIR_BLOCK_WARMUP + 7
    runs = [(who, len(list(g))) for who, g in itertools.groupby(calls)]  # back-to-back blocks of one merge
    assert runs == [("m", m)] + [("b", 2 * b), ("m", 2 * m)] * 3 + [("b", b)]


def test_paired_timing_is_stable_once_the_ratio_is_though_load_drifts():
    """Pairing cancels load that slows both alike, so a pair measurement is stable once the
    per-pair ratio's median is, not the model's drifting time (which would run to the cap)."""
    from hybridprune.evaluators import timing

    protocol = timing.Protocol(warmup_runs=10, min_runs=24, rel_ci=0.01)
    load = [1 + k / 4 for k in range(8)]  # each pair slower than the last, both sides alike
    model_ms, base_ms = [1.0 * f for f in load], [4.0 * f for f in load]
    rule = timing._RatioProtocol(protocol, model_ms, base_ms)
    # each block warms itself up; 24 timed runs are 8 pairs of >= 3 timed runs a side
    assert rule.warmup_runs == 1 and rule.min_runs == 24 // timing.PAIR_BLOCK_MIN_RUNS == 8
    assert not timing.Protocol(min_runs=8).is_stable(model_ms)  # the model's own time: far from a 1% CI
    assert rule.is_stable(model_ms)
    assert not rule.is_stable(model_ms[:7])  # below its min_runs
    base_ms[1::2] = [5.0 * f for f in load[1::2]]  # ratio 0.25 and 0.2 by turns: not settled
    assert not rule.is_stable(model_ms)


def test_paired_timing_on_onnx_files(tmp_path):
    """onnxruntime's measure_pair: a ratio with its CI and the baseline's own median (no timing asserted)."""
    from hybridprune.evaluators import export_onnx, get_latency_backend
    from hybridprune.models import create_model

    small = export_onnx(create_model("resnet20", num_classes=10).eval(), tmp_path / "s.onnx", (1, 3, 32, 32))
    big = export_onnx(create_model("resnet56", num_classes=10).eval(), tmp_path / "b.onnx", (1, 3, 32, 32))
    backend = get_latency_backend("onnxruntime", warmup_runs=2, min_runs=20, max_runs=40, max_time_s=1.0)
    result = backend.measure_pair(big, small)
    extra = result.extra
    lo, hi = extra["pair_ratio_ci"]
    assert 0 < lo <= extra["pair_ratio"] <= hi and extra["baseline_median_ms"] > 0
    # runs counts pairs of blocks: min_runs 20 timed runs ask for ceil(20 / 3) = 7 pairs
    assert 7 <= result.runs <= 40 and result.backend == "onnxruntime"
    with pytest.raises(Exception, match="cannot load"):
        backend.measure_pair(tmp_path / "missing.onnx", small)


@pytest.fixture
def own_refined_study(refined_study, tmp_path):
    """A copy of the refined study that a test may change without touching the shared one."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(refined_study.parent, folder)
    return folder / refined_study.name


def test_interrupted_run_resumes_where_it_stopped(own_refined_study, capsys):
    """A run stopped after one fine-tune keeps it; the next run reuses it and does the rest."""
    from hybridprune.search.context import build_context
    from hybridprune.search.refine import RefineOptions, candidates, refine

    refined_study = own_refined_study
    cfg, study = load(refined_study)
    trials = candidates(study, top=2)
    done = []

    def stop_after_first(t, rec, reused):
        done.append(t.number)
        raise KeyboardInterrupt  # as a kill would, once the first record is stored

    with pytest.raises(KeyboardInterrupt):
        refine(build_context(cfg, train_if_missing=False), study, trials, RefineOptions(epochs=0.1, rounds=1),
               on_trial=stop_after_first)
    _, study = load(refined_study)
    first = T.refined(study)[done[0]]
    assert first[T.R_EPOCHS] == 0.1
    assert all(T.refined(study)[t.number][T.R_EPOCHS] == 0.05 for t in trials[1:])
    capsys.readouterr()
    assert main(["refine", str(refined_study), "--top", "2", "--epochs", "0.1", "--rounds", "1"]) == 0
    assert capsys.readouterr().out.count("reused (already refined)") == 1
    _, study = load(refined_study)
    after = T.refined(study)
    assert after[done[0]][T.R_ARTIFACTS] == first[T.R_ARTIFACTS]
    assert all(after[t.number][T.R_EPOCHS] == 0.1 for t in trials)


def test_refine_and_publish_with_the_torch_latency_backend(tmp_path, capsys):
    """The torch backend times modules, not ONNX files: refine and publish hand it the refined module."""
    import json

    path = write_study(tmp_path / "torch-study", name="torchlat", trials=2, backend="torch")
    assert main(["run", str(path), "--no-progress"]) == 0
    assert main(["refine", str(path), "--top", "1", "--epochs", "0.05", "--rounds", "2"]) == 0
    _, study = load(path)
    records = T.refined(study)
    assert len(records) >= 1 and all(r[T.R_RATIO] > 0 and r[T.R_ROUNDS] == 2 for r in records.values())
    assert all(study.trials[n].user_attrs[T.LATENCY_RESULT]["backend"] == "torch" for n in records)
    out = tmp_path / "published"
    assert main(["publish", str(path), "--out", str(out), "--rounds", "1"]) == 0
    front = json.loads((out / "front.json").read_text())
    assert front[0]["reference"] == T.REF_BASELINE and front[0]["latency_backend"].startswith("torch")


def test_publish_writes_the_refined_front_as_onnx_files(refined_study, tmp_path, capsys):
    """``hybridprune publish``: the baseline and the refined front, each re-scored from its own ONNX file."""
    import json

    import onnx

    from hybridprune.search.context import load_data
    from hybridprune.search.publish import nondominated

    out = tmp_path / "results"
    assert main(["publish", str(refined_study), "--out", str(out), "--rounds", "1"]) == 0
    said = capsys.readouterr().out
    assert "published" in said
    cfg, study = load(refined_study)
    front = json.loads((out / "front.json").read_text())
    # every candidate is either published or said to be left off, with what dominates it
    candidates = len(re.findall(r"test top-1 [\d.]+% from \S+\.onnx", said))
    left = [line for line in said.splitlines() if line.startswith("left off the front: trial ")]
    assert len(left) == candidates - len(front)
    assert all("dominated by trial " in line or "paper settings" in line for line in left)
    assert front[0]["reference"] == T.REF_BASELINE and front[0]["latency_ratio"] == 1.0
    assert {p.name for p in out.glob("*.onnx")} == {e["onnx"] for e in front}  # the rest were removed
    pruned = [(e["test_top1"], e["latency_ratio"]) for e in front[1:] if not e["reference"]]
    assert len(nondominated(pruned)) == len(pruned)
    test = load_data(cfg).test
    verify = load_benchmark("verify_results")  # the outside reader's own ONNX Runtime scoring
    for e in front:
        for key in ("onnx", "test_top1", "macs", "params", "latency_ms", "latency_ratio", "config", "mean", "std",
                    "reference", "split", "refine_epochs"):
            assert key in e
        assert e["split"]["name"] == "test" and e["split"]["images"] == len(test.labels)
        model = onnx.load(str(out / e["onnx"]))
        assert model.opset_import[0].version == 13
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
        acc = verify.top1(out / e["onnx"], test.images.numpy(), test.labels.numpy(), e["mean"], e["std"])
        assert e["test_top1"] == round(acc, 2)
        assert e["macs"] == study.trials[e["trial"]].user_attrs[T.MACS]
        # one basis: the published latency is the ratio times the study's reference baseline latency
        assert e["latency_ms"] == pytest.approx(e["latency_ratio"] * front[0]["latency_ms"], rel=1e-3)
    assert (out / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert "verify_results.py" in (out / "README.md").read_text()
    # a second publish replaces its own folder; a folder of other files is never replaced
    assert main(["publish", str(refined_study), "--out", str(out), "--rounds", "1"]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    capsys.readouterr()
    assert main(["publish", str(refined_study), "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "refusing to replace it" in err and err.count("\n") == 1
    assert (other / "keep.txt").read_text() == "keep" and sorted(p.name for p in other.iterdir()) == ["keep.txt"]


def test_a_model_left_off_the_front_is_said_with_what_dominates_it():
    from hybridprune.search.publish import _why_left_off, choose_front

    def entry(trial, top1, ratio, reference=None, study="main"):
        return {"trial": trial, "test_top1": top1, "latency_ratio": ratio, "reference": reference, "study": study}

    entries = [entry(0, 89.3, 1.0, "baseline"), entry(68, 89.52, 0.714, study="stages"), entry(36, 89.52, 0.72,
               study="block"), entry(7, 89.2, 0.596), entry(21, 89.0, 0.68), entry(16, 89.42, 0.91, "paper"),
               entry(13, 89.3, 0.95, "paper"), entry(3, 89.2, 0.96, "paper")]
    front = choose_front(entries)
    left = [e for e in entries if e not in front]
    assert [e["trial"] for e in left] == [36, 21, 3]
    assert _why_left_off(left[0], front, "main") == "dominated by trial stages 68 (89.52% at 0.714x)"
    assert _why_left_off(left[1], front, "main") == "dominated by trial 7 (89.20% at 0.596x)"
    assert _why_left_off(left[2], front, "main") == "not among the 2 most accurate paper settings"


@pytest.fixture(scope="module")
def other_refined_study(refined_study, tmp_path_factory):
    """A second search of the same checkpoint and data, named ``other``, with a refined searched trial."""
    from pathlib import Path

    cfg, _ = load(refined_study)
    other = write_study(tmp_path_factory.mktemp("other-study"), name="other", trials=6,
                        checkpoint=Path(cfg.model.checkpoint))
    assert main(["run", str(other), "--no-progress"]) == 0
    sampled = [t.number for t in load(other)[1].trials
               if t.state.name == "COMPLETE" and not t.user_attrs.get(T.REFERENCE)]
    assert main(["refine", str(other), "--trial", str(sampled[0]), "--epochs", "0.05", "--rounds", "2"]) == 0
    return other


def test_publish_also_puts_another_searchs_refined_models_on_the_front(refined_study, other_refined_study, tmp_path,
                                                                       capsys):
    """``publish --also``: the other study's refined searched models are candidates like the
    study's own (scored, re-timed next to this baseline); its baseline is not published twice."""
    import json

    from hybridprune.search.publish import nondominated

    other = other_refined_study
    _, ostudy = load(other)
    theirs = {n for n in T.refined(ostudy) if not ostudy.trials[n].user_attrs.get(T.REFERENCE)}
    assert theirs
    capsys.readouterr()
    out = tmp_path / "results"
    assert main(["publish", str(refined_study), "--also", str(other), "--out", str(out), "--rounds", "1"]) == 0
    said = capsys.readouterr().out
    assert all(f"other trial {n}: test top-1" in said for n in theirs)  # every one was a candidate
    front = json.loads((out / "front.json").read_text())
    assert [e["study"] for e in front if e["reference"] == T.REF_BASELINE] == ["refine"]
    for e in front:
        if e["study"] == "other":
            assert not e["reference"] and e["trial"] in theirs and e["onnx"] == f"other-trial{e['trial']}.onnx"
    pruned = [(e["test_top1"], e["latency_ratio"]) for e in front if not e["reference"]]
    assert len(nondominated(pruned)) == len(pruned)
    assert {p.name for p in out.glob("*.onnx")} == {e["onnx"] for e in front}


def test_publish_also_takes_no_reference_model_of_the_other_study(refined_study, other_refined_study):
    # a family reference is refined as trial -1; study.trials[-1] is the last searched trial, which
    # once let the other study's ResNet-20 onto the front as one of its searched models
    import optuna

    from hybridprune.search.publish import _also

    cfg, ocfg = load(refined_study)[0], load(other_refined_study)[0]
    rec = {T.R_EPOCHS: 1.0}
    st = optuna.create_study(directions=["maximize", "minimize"])  # a real (in-memory) study
    for attrs in ({T.REFERENCE: T.REF_BASELINE}, {}):
        st.add_trial(optuna.trial.create_trial(values=[0.9, 1.0], user_attrs=attrs))
    for n in (-1, 0, 1):
        st.set_user_attr(f"{T.REFINED_PREFIX}{n}", rec)
    assert set(_also(cfg, rec, [(ocfg, st)])[0][3]) == {1}


def test_publish_also_refuses_a_study_of_another_model_split_or_name(refined_study, tmp_path):
    import dataclasses

    from hybridprune.errors import HybridPruneError
    from hybridprune.search.publish import _also

    cfg, study = load(refined_study)
    base = T.refined(study)[T.baseline_trial(study).number]

    def named(c, name):
        return dataclasses.replace(c, study=dataclasses.replace(c.study, name=name))

    with pytest.raises(HybridPruneError, match="given twice"):
        _also(cfg, base, [(cfg, study)])
    moved = dataclasses.replace(named(cfg, "moved"), model=dataclasses.replace(
        cfg.model, checkpoint=str(write_checkpoint(tmp_path / "elsewhere.pt"))))
    with pytest.raises(HybridPruneError, match="another model.checkpoint"):
        _also(cfg, base, [(moved, study)])
    split = dataclasses.replace(named(cfg, "split"), data=dataclasses.replace(cfg.data, val_size=0.5))
    with pytest.raises(HybridPruneError, match="another split"):
        _also(cfg, base, [(split, study)])
    with pytest.raises(HybridPruneError, match=r"refined for \[0.05\] epoch\(s\), 'refine' for 1"):
        _also(cfg, {**base, T.R_EPOCHS: 1}, [(named(cfg, "twin"), study)])


def test_a_reference_refined_by_a_twin_study_is_taken_not_fine_tuned_again(tmp_path, capsys):
    """Studies sharing [baseline] cache_dir refine the same unpruned baseline once."""
    ckpt = write_checkpoint(tmp_path / "base.pt")
    shared = tmp_path / "shared"
    paths = []
    for name in ("first", "twin"):
        p = write_study(tmp_path / name, name=name, trials=1, checkpoint=ckpt)
        p.write_text(p.read_text() + f'\n[baseline]\ncache_dir = "{shared.as_posix()}"\n')
        assert main(["run", str(p), "--no-progress"]) == 0
        paths.append(p)
    assert main(["refine", str(paths[0]), "--epochs", "0.05", "--rounds", "1"]) == 0
    assert len(list(shared.glob("refined-baseline-*.pt"))) == 1
    capsys.readouterr()
    assert main(["refine", str(paths[1]), "--epochs", "0.05", "--rounds", "1"]) == 0
    assert "refined by study 'first'; taking it" in capsys.readouterr().out
    (_, a), (_, b) = load(paths[0]), load(paths[1])
    ra, rb = T.refined(a)[T.baseline_trial(a).number], T.refined(b)[T.baseline_trial(b).number]
    assert rb["shared_from"] == "first" and "shared_from" not in ra
    assert (rb[T.R_TEST], rb[T.R_VAL]) == (ra[T.R_TEST], ra[T.R_VAL])  # the same model on the same images
    assert rb[T.R_ARTIFACTS] != ra[T.R_ARTIFACTS]  # stored as the twin's own refined model
    capsys.readouterr()
    assert main(["refine", str(paths[1]), "--epochs", "0.1", "--rounds", "1"]) == 0  # another recipe: refined anew
    assert "taking it" not in capsys.readouterr().out
    assert len(list(shared.glob("refined-baseline-*.pt"))) == 2


def test_real_scale_adds_the_comparison(refined_study, other_refined_study, tmp_path):
    import json

    out = tmp_path / "results"
    real_scale = load_benchmark("real_scale")
    args = [str(refined_study), "--single", str(refined_study), "--out", str(out), "--rounds", "1"]
    assert real_scale.main(args) == 0
    _, study = load(refined_study)
    cmp = json.loads((out / "comparison.json").read_text())
    assert set(cmp["hypervolume"]) >= {"hybrid", "paper grid", "refine"}
    # every target of the real-scale issue is judged, met or missed, with its numbers, in README.md too
    goals = {g["goal"]: g for g in cmp["goals"]}
    assert any("refined paper setting" in g for g in goals) and any("within 1.0 point" in g for g in goals)
    assert all(isinstance(g["met"], bool) and g["detail"] for g in goals.values())
    readme_text = (out / "README.md").read_text()
    assert "## The issue's targets" in readme_text
    assert all(f"**{'met' if g['met'] else 'MISSED'}**: {g['goal']}" in readme_text for g in goals.values())
    # --also: compared, and its refined models candidates for the published front
    args = [str(refined_study), "--also", str(other_refined_study), "--out", str(out), "--rounds", "1"]
    assert real_scale.main(args) == 0
    assert "other" in json.loads((out / "comparison.json").read_text())["hypervolume"]
    assert "--also" in (out / "README.md").read_text()
    assert len(cmp["paper_settings"]) == sum(t.user_attrs.get(T.REFERENCE) == T.REF_PAPER for t in study.trials
                                             if t.state.name == "COMPLETE")
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG" and (out / "front.json").is_file()
    assert "python benchmarks/real_scale.py" in (out / "README.md").read_text()
    cfg, _ = load(refined_study)
    budget = real_scale._budget(cfg)  # a study without [fidelity] reports its [finetune] budget
    assert not cfg.fidelity.enabled and budget == f"{cfg.finetune.steps} fine-tune steps"


def test_real_scale_goals_judge_each_target_from_the_published_numbers():
    from types import SimpleNamespace

    real_scale = load_benchmark("real_scale")

    def entry(trial, top1, ratio, macs, reference=None, **kw):
        return {"trial": trial, "test_top1": top1, "latency_ratio": ratio, "macs": macs, "reference": reference,
                "latency_ratio_ci": [ratio, ratio], "config": {}, "onnx": f"t{trial}.onnx", "params": 1,
                "latency_ms": ratio, **kw}

    entries = [entry(0, 89.5, 1.0, 100.0, "baseline"), entry(7, 89.2, 0.63, 60.0),
               entry(53, 88.2, 0.41, 40.0, study="stages"), entry(78, 86.2, 0.30, 30.0),
               entry(-1, 88.5, 0.34, 32.0, "family", reference_name="ResNet-20"), entry(3, 88.9, 0.9, 90.0, "paper")]
    cmp = {"targets": real_scale.targets(entries), "refined_paper": real_scale.refined_dominance(entries),
           "hypervolume": {"hybrid": 0.02, "hybrid (searched trials only)": 0.02, "paper grid": 0.01,
                           "stages": 0.039, "block": 0.033}}
    goals = real_scale.goals(entries, cmp, "main", frozenset({"block"}))
    assert [g["met"] for g in goals] == [False, False, False, True, True]
    assert "stages 53 (88.20% at 0.410x) by ResNet-20" in goals[0]["detail"] and "78" not in goals[0]["detail"]
    assert "stages 53, 88.20% at 0.410x, -0.30 points against 88.50%" in goals[1]["detail"]
    assert "the fastest within 1.0 point: trial 7, 0.30 points below at 0.630x" in goals[2]["detail"]
    assert goals[4]["detail"].startswith("stages 0.0390, block 0.0330")
    # the headline speaks of pruned models only: the family reference (-1) meets the drop/MACs/latency cuts here
    assert any(r["meets"] for r in cmp["targets"] if r["reference"] == "family")
    text = real_scale.readme(SimpleNamespace(name="main"), entries, {**cmp, "goals": goals, "min_accuracy": 0.8,
                             "wall": {}, "paper_settings": [], "refine_s": 0.0, "refine_latency_s": 0.0,
                             "machine": "m"}, "cmd")
    assert "**Headline:** no refined model meets" in text
    cmp["hypervolume"]["block"] = 0.05  # the best single-mode search ahead: missed
    assert not real_scale.goals(entries, cmp, "main", frozenset({"block"}))[4]["met"]


def test_real_scale_judges_the_refined_baseline_against_the_plain_control_of_refines_budget(tmp_path):
    from hybridprune.errors import HybridPruneError

    real_scale = load_benchmark("real_scale")
    rows = tmp_path / "control.jsonl"
    row = {"model": "unpruned", "way": "plain", "test_top1": 89.44}
    rows.write_text("\n".join(json.dumps(r) for r in [
        {**row, "epochs": 1.0, "test_top1": 80.0}, {**row, "epochs": 3.0},
        {**row, "epochs": 3.0, "way": "distilled", "distill_weight": 0.25, "test_top1": 89.22},
        {**row, "epochs": 3.0, "model": "pruned 30% channels, 4 blocks", "test_top1": 70.0}]) + "\n")
    control = real_scale.plain_control(rows, 3.0)
    assert control["plain"]["test_top1"] == 89.44 and [r["test_top1"] for r in control["distilled"]] == [89.22]
    base = {"trial": 0, "test_top1": 89.30, "latency_ratio": 1.0, "macs": 100.0, "reference": "baseline"}
    cmp = {"targets": [], "refined_paper": [], "hypervolume": {}}
    first = real_scale.goals([base], cmp, "main", control=control)[0]
    assert first["goal"].startswith("the refined baseline is at least as accurate as a plain fine-tune")
    assert not first["met"] and "plain 89.44% (-0.14 points)" in first["detail"] and "89.22%" in first["detail"]
    assert real_scale.goals([{**base, "test_top1": 89.44}], cmp, "main", control=control)[0]["met"]  # a tie meets it
    assert len(real_scale.goals([base], cmp, "main")) == 1  # no control: that target is not judged
    missing = r"no plain fine-tune of the unpruned model for 2 epochs .*\[1\.0, 3\.0\]"
    with pytest.raises(HybridPruneError, match=missing):
        real_scale.plain_control(rows, 2.0)
    rows.write_text(json.dumps(row) + "\n{broken\n")
    with pytest.raises(HybridPruneError, match="line 2 is not JSON"):
        real_scale.plain_control(rows, 3.0)
    with pytest.raises(HybridPruneError, match="cannot read it"):
        real_scale.plain_control(tmp_path / "nowhere.jsonl", 3.0)


def test_distill_vs_plain_refuses_bad_input_before_any_fine_tune(tmp_path, capsys):
    """An unwritable ``--out`` or a bad recipe is one ``error:`` line and exit 2 at once, not after the
    hour of fine-tunes; nothing is written."""
    bench = load_benchmark("distill_vs_plain")
    ckpt, data = tmp_path / "model.th", tmp_path / "data"
    ckpt.write_bytes(b"not read: the checks come first")
    data.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ok = ["--data", str(data), "--checkpoint", str(ckpt)]
    cases = [
        (["--out", str(blocker / "rows.jsonl")], "--out"),
        (["--distill", "0.25"], "give WEIGHT:TEMPERATURE"),
        (["--distill", "1.5:4"], "need 0 <= WEIGHT <= 1"),
        (["--budgets", "3", "0"], "--budgets must be a positive number, got 0"),
        (["--teacher", str(tmp_path / "nowhere.pt")], "--teacher"),
    ]
    for extra, words in cases:
        assert bench.main(ok + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error:") and words in err and err.count("\n") == 1, (extra, err)
    assert bench.main(["--data", str(tmp_path / "none"), "--checkpoint", str(ckpt)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a-file", "data", "model.th"]


def test_real_scale_and_verify_refuse_bad_input(tmp_path, capsys):
    """One ``error:`` line, exit 2, and no results folder written."""
    never = write_study(tmp_path / "never", name="never")
    out = tmp_path / "results"
    assert load_benchmark("real_scale").main([str(never), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "has not been run yet" in err and err.count("\n") == 1
    assert not out.exists()
    verify = load_benchmark("verify_results")
    assert verify.main([str(tmp_path / "nowhere"), "--data", str(tmp_path)]) == 2
    assert "has no front.json" in capsys.readouterr().err
    out.mkdir()
    (out / "baseline.onnx").write_bytes(b"not read before the data is checked")
    entry = {"onnx": "baseline.onnx", "test_top1": 89.3, "latency_ratio": 1.0, "mean": [0.5] * 3, "std": [0.25] * 3,
             "reference": "baseline", "split": {"val_from": "test", "val_size": 0.5}}
    (out / "front.json").write_text(json.dumps([entry]))
    assert verify.main([str(out), "--data", str(tmp_path)]) == 2
    assert "needs train/<class>/ and test/<class>/" in capsys.readouterr().err


@pytest.mark.parametrize("front, says", [
    ("{not json", "is not JSON"),
    ("[]", "must be a non-empty list"),
    ("[3]", "entry 0 is not an object"),
    ('[{"onnx": "baseline.onnx"}]', "entry 0 lacks test_top1, latency_ratio, mean, std"),
    ("BASE|onnx=../x.onnx", "onnx must be a file name inside the folder"),
    ("BASE|onnx=gone.onnx", "gone.onnx is not in"),
    ("BASE|split=half", "split must be an object"),
    ("BASE|split={}", None),  # no split: every test image, as before
    ('BASE|split={"val_from": "test"}', 'needs val_size in (0, 1)'),
    ('BASE|split={"val_from": "test", "val_size": 1.5}', "got 1.5"),
    ("BASE|reference=paper", 'exactly one entry with "reference": "baseline", has 0'),
])
def test_verify_results_refuses_a_malformed_front_before_reading_images(tmp_path, capsys, front, says):
    """A hand-edited or truncated front.json gets one ``error:`` line and exit 2, not a traceback
    after minutes of reading images; a well-formed one goes on to the data check."""
    verify = load_benchmark("verify_results")
    (tmp_path / "baseline.onnx").write_bytes(b"onnx")
    if front.startswith("BASE|"):
        key, value = front[5:].split("=", 1)
        entry = {"onnx": "baseline.onnx", "test_top1": 89.3, "latency_ratio": 1.0, "mean": [0.5] * 3,
                 "std": [0.25] * 3, "reference": "baseline"}
        entry[key] = json.loads(value) if value[:1] in "{[" else value
        front = json.dumps([entry])
    (tmp_path / "front.json").write_text(front)
    assert verify.main([str(tmp_path), "--data", str(tmp_path / "no-data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert (says or "needs train/<class>/ and test/<class>/") in err


def test_verify_results_refuses_bad_options(tmp_path, capsys):
    verify = load_benchmark("verify_results")
    for flags in (["--rounds", "0"], ["--seconds", "0"], ["--max-top1-diff", "-1"]):
        assert verify.main([str(tmp_path), "--data", str(tmp_path), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --rounds must be >= 1") and err.count("\n") == 1
    assert verify.main([str(tmp_path), "--data", str(tmp_path), "--max-ratio-diff", "-0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max-ratio-diff must be >= 0") and err.count("\n") == 1


def test_refine_budget_reads_the_studys_budget_runs_the_others_and_leaves_the_study_alone(refined_study, tmp_path,
                                                                                          capsys):
    """benchmarks/refine_budget.py: the budget the study refined is read from its record, a new one is
    refined for real on a copy of the storage (the study's own records stay as they were), each
    result is one JSON line, and a second call resumes with nothing left to run."""
    bench = load_benchmark("refine_budget")
    cfg, study = load(refined_study)
    before = T.refined(study)
    number = next(n for n in sorted(before) if n != study.user_attrs[T.STUDY_REFINED]["baseline"])
    out, work = tmp_path / "budget.jsonl", tmp_path / "work"
    args = [str(refined_study), "--trial", str(number), "--epochs", "0.05", "0.1", "--out", str(out),
            "--work", str(work)]
    assert bench.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["epochs"], r["source"]) for r in rows] == [(0.05, "the study's refine record"),
                                                         (0.1, "refine_budget.py")]
    assert rows[0]["test_top1"] == before[number][T.R_TEST] and rows[0]["trial"] == number
    assert 0 <= rows[1]["test_top1"] <= 1 and rows[1]["seconds"] > 0 and "flags:" in rows[1]["machine"]
    assert rows[1]["latency_ratio"] == before[number][T.R_RATIO]  # same architecture, the study's timing
    _, study = load(refined_study)
    assert T.refined(study) == before  # the refine ran on the copy in --work
    assert "| trial | latency ratio | 0.05 ep (w 0.25, record) | 0.1 ep (w 0.25, here) |" in capsys.readouterr().out
    assert bench.main(args) == 0
    assert "0 refine(s) to run" in capsys.readouterr().out and len(out.read_text().splitlines()) == 2
    assert bench.main([*args, "--rerun-recorded"]) == 0  # the recorded budget again, as a control, beside it
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["epochs"], r["source"]) for r in rows[2:]] == [(0.05, "refine_budget.py")]
    assert "0.05 ep (w 0.25, record) | 0.05 ep (w 0.25, here) | 0.1 ep (w 0.25, here)" in capsys.readouterr().out
    for bad, says in ((["--trial", "999"], "--trial 999: not a trial"), (["--epochs", "0"], "--epochs > 0")):
        assert bench.main([str(refined_study), "--trial", str(number), *bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and says in err and err.count("\n") == 1
    out.write_text("{torn")
    assert bench.main(args) == 2 and "is not a JSON line" in capsys.readouterr().err
    assert out.read_text() == "{torn"


def test_paired_timing_benchmark_reads_each_way_and_refuses_bad_input(tmp_path, capsys):
    """benchmarks/paired_timing.py on two real ONNX files (one short round; no timing asserted),
    and one ``error:`` line with exit 2 for a missing file, a bad count and a lone file."""
    from hybridprune.evaluators import export_onnx
    from hybridprune.models import create_model

    bench = load_benchmark("paired_timing")
    big = export_onnx(create_model("resnet20", num_classes=10).eval(), tmp_path / "big.onnx", (1, 3, 32, 32))
    small = export_onnx(create_model("resnet8", num_classes=10).eval(), tmp_path / "small.onnx", (1, 3, 32, 32))
    assert bench.main([str(big), str(small), "--rounds", "1", "--seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| small.onnx |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 6 and all(float(c) > 0 for c in cells[1:4])
    assert "baseline: big.onnx" in out and "flags:" in out
    # --costs: a study's latency step per round length, each way, its seconds, ratio and spread
    assert bench.main([str(big), str(small), "--costs", "0.05", "0.02", "--study-rounds", "2", "--repeats", "2"]) == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| small.onnx |")]
    assert [r[1] for r in rows] == ["single runs, 2 x 0.05 s", "single runs, 2 x 0.02 s", "blocks, 2 x 0.05 s",
                                    "blocks, 2 x 0.02 s"]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 and r[4].endswith("%") for r in rows)
    for argv, says in (([str(big), str(tmp_path / "gone.onnx")], "missing: "),
                       ([str(big), str(small), "--costs", "0"], "--costs takes round lengths > 0 s"),
                       ([str(big), str(small), "--costs", "1", "--repeats", "1"], "--repeats >= 2"),
                       ([str(big), str(small), "--costs", "1", "--study-rounds", "0"], "--study-rounds >= 1"),
                       ([str(big), str(small), "--rounds", "0"], "--rounds >= 1"),
                       ([str(big)], "at least one model"),
                       ([str(tmp_path)], "has no front.json")):
        assert bench.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and says in err and err.count("\n") == 1
