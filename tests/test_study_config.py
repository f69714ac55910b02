"""Study files: validation with clear errors before any trial runs; the shipped studies parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridprune.cli import main
from hybridprune.errors import ConfigError
from hybridprune.search.config import load_study_config

from helpers import REPO, write_checkpoint

BASE = """
[study]
trials = 2
run_dir = "run"
[model]
name = "resnet20"
checkpoint = "base.pt"
[data]
dataset = "digits"
train_subset = 64
val_subset = 32
[finetune]
steps = 1
[latency]
options = { warmup_runs = 1, min_runs = 2, max_runs = 3, max_time_s = 0.1 }
"""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "base.pt")


def _file(tmp_path: Path, ckpt: Path, text: str) -> Path:
    (tmp_path / "base.pt").write_bytes(ckpt.read_bytes())
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


BAD = [
    # (what, replacement in BASE or appended text, expected words in the message)
    ("unknown key", ("[finetune]\nsteps = 1", "[finetune]\nsteps = 1\nepochz = 2"), ["epochz", "allowed", "epochs"]),
    ("unknown table", ("[study]", "[stuff]\nx = 1\n[study]"), ["stuff", "allowed"]),
    ("wrong type", ("trials = 2", 'trials = "two"'), ["study.trials", "whole number"]),
    ("bool is no int", ("trials = 2", "trials = true"), ["study.trials"]),
    ("non-positive", ("trials = 2", "trials = 0"), ["study.trials", "> 0"]),
    ("unknown model", ('name = "resnet20"', 'name = "resnet21"'), ["resnet21", "resnet20"]),
    ("unknown dataset", ('dataset = "digits"', 'dataset = "mnist"'), ["data.dataset", "digits"]),
    ("unknown sampler", ("[finetune]", '[sampler]\nname = "cmaes"\n[finetune]'), ["sampler.name", "nsga2"]),
    ("bad statistic", ("[latency]", '[latency]\nstatistic = "max_ms"'), ["latency.statistic", "median_ms"]),
    ("low > high", ("[finetune]", "[space]\nchannel_ratio = { low = 0.6, high = 0.2 }\n[finetune]"),
     ["space.channel_ratio", "low"]),
    ("too many blocks", ("[finetune]", "[space]\npruned_blocks = { low = 0, high = 8 }\n[finetune]"),
     ["space.pruned_blocks.high", "[0, 7]"]),
    ("ratio out of range", ("[finetune]", "[space]\nchannel_ratio = 1.2\n[finetune]"), ["space.channel_ratio", "1.2"]),
    ("unknown criterion", ("[finetune]", '[space]\ncriterion = ["l7"]\n[finetune]'), ["space.criterion", "weight_magnitude"]),
    ("unknown space key", ("[finetune]", "[space]\nratio = 0.3\n[finetune]"), ["ratio", "allowed", "channel_ratio"]),
    ("unknown space kind", ("[finetune]", '[space]\nkind = "grid"\n[finetune]'), ["space.kind", "hybrid"]),
    ("missing checkpoint", ('checkpoint = "base.pt"', 'checkpoint = "nope.pt"'), ["model.checkpoint", "nope.pt", "does not exist"]),
    ("missing data", ('dataset = "digits"', 'dataset = "cifar10"\nroot = "no-such-dir"'), ["data.root", "no-such-dir"]),
    ("both budgets", ("steps = 1", "steps = 1\nepochs = 1"), ["epochs or steps"]),
    ("both baseline budgets", ("[finetune]", "[baseline]\nepochs = 1\nsteps = 2\n[finetune]"), ["[baseline]", "epochs or steps"]),
    ("bad latency option", ("max_time_s = 0.1 }", "max_time_s = 0.1, speed = 3 }"), ["speed", "allowed"]),
    ("grace <= heartbeat", ("trials = 2", "trials = 2\nheartbeat_interval = 5\ngrace_period = 5"), ["grace_period"]),
    ("accuracy is a fraction", ("[finetune]", "[constraints]\nmin_accuracy = 90\n[finetune]"), ["constraints.min_accuracy"]),
    ("bad toml", ("[study]", "[study\n"), ["not valid TOML"]),
    # checked inside every trial before, after the baseline had trained; now at load
    ("bad scope", ("[finetune]", '[pruning]\nscope = "everything"\n[finetune]'), ["pruning.scope", "internal", "all"]),
    ("bad allocation", ("[finetune]", '[pruning]\nallocation = "greedy"\n[finetune]'),
     ["pruning.allocation", "uniform", "global"]),
    ("round_to 0", ("[finetune]", "[pruning]\nround_to = 0\n[finetune]"), ["pruning.round_to", ">= 1"]),
    ("calib_batches 0", ("[finetune]", "[pruning]\ncalib_batches = 0\n[finetune]"), ["pruning.calib_batches", ">= 1"]),
    ("precision the backend lacks", ("[latency]", '[latency]\nprecision = "fp16"'),
     ["latency.precision", "onnxruntime", "fp32", "fp16"]),
    ("unknown latency backend", ("[latency]", '[latency]\nbackend = "tflite"'), ["latency.backend", "onnxruntime", "remote"]),
    # bounds
    ("huge latency batch", ("[latency]", "[latency]\nbatch_size = 100000000000"), ["latency.batch_size", "at most 4096"]),
    ("huge finetune batch", ("steps = 1", "steps = 1\nbatch_size = 5000"), ["finetune.batch_size", "at most 4096"]),
    ("huge baseline batch", ("[finetune]", "[baseline]\nbatch_size = 99999\n[finetune]"), ["baseline.batch_size", "4096"]),
    ("huge trials", ("trials = 2", "trials = 1000000000"), ["study.trials", "at most 1000000"]),
    ("too many workers", ("trials = 2", "trials = 2\nworkers = 100000"), ["study.workers", "at most 256"]),
    ("huge heartbeat", ("trials = 2", "trials = 2\nheartbeat_interval = 10000000000\ngrace_period = 20000000000"),
     ["study.heartbeat_interval", "86400"]),
    ("huge grace period", ("trials = 2", "trials = 2\ngrace_period = 10000000000"), ["study.grace_period", "86400"]),
    ("huge max_retry", ("trials = 2", "trials = 2\nmax_retry = 10000000000"), ["study.max_retry", "at most 1000"]),
    ("negative seed", ("trials = 2", "trials = 2\nseed = -1"), ["study.seed", "4294967295"]),
    ("unknown val_from", ('dataset = "digits"', 'dataset = "digits"\nval_from = "valid"'), ["data.val_from", "train", "test"]),
    ("val_from test needs a fraction", ('dataset = "digits"', 'dataset = "digits"\nval_from = "test"\nval_size = 100'),
     ["data.val_from", "fraction"]),
    ("val_from folder needs an image folder", ('dataset = "digits"', 'dataset = "digits"\nval_from = "folder"'),
     ["data.val_from", "image_folder", "digits"]),
    ("adapt without checkpoint", ('checkpoint = "base.pt"', '[baseline]\nadapt_epochs = 1'),
     ["baseline.adapt_epochs", "model.checkpoint"]),
    ("adapt_epochs <= 0", ("[finetune]", "[baseline]\nadapt_epochs = -1\n[finetune]"), ["baseline.adapt_epochs", "(0, 10000]"]),
    ("huge adapt_epochs", ("[finetune]", "[baseline]\nadapt_epochs = 1e300\n[finetune]"), ["baseline.adapt_epochs"]),
    ("bad adapt_lr", ("[finetune]", "[baseline]\nadapt_epochs = 1\nadapt_lr = 0\n[finetune]"), ["baseline.adapt_lr"]),
    ("huge latency rounds", ("[latency]", "[latency]\nrounds = 100000"), ["latency.rounds", "at most 100"]),
    ("huge finetune steps", ("steps = 1", "steps = 100000000000000000000"), ["finetune.steps", "at most 100,000,000"]),
    ("huge finetune epochs", ("steps = 1", "epochs = 1e300"), ["finetune.epochs", "at most 10,000"]),
    ("infinite finetune lr", ("steps = 1", "steps = 1\nlr = inf"), ["finetune.lr", "got inf"]),
    ("huge finetune lr", ("steps = 1", "steps = 1\nlr = 1e6"), ["finetune.lr", "(0, 10]"]),
    ("huge baseline steps", ("[finetune]", "[baseline]\nsteps = 1000000000000\n[finetune]"), ["baseline.steps"]),
    ("huge fidelity max_steps", ("[finetune]", "[fidelity]\nmin_steps = 1\nmax_steps = 1000000000000\n[finetune]"),
     ["fidelity.max_steps", "at most 100000000"]),
    ("infinite eta", ("[finetune]", "[fidelity]\nmin_steps = 1\nmax_steps = 4\neta = inf\n[finetune]"),
     ["fidelity.eta", "got inf"]),
    ("huge eta", ("[finetune]", "[fidelity]\nmin_steps = 1\nmax_steps = 4\neta = 1e300\n[finetune]"),
     ["fidelity.eta", "[2, 1000]"]),
    ("huge latency threads", ("max_time_s = 0.1 }", "max_time_s = 0.1, threads = 1000000 }"),
     ["threads", "[1, 1024]"]),
    ("in-memory sqlite", ("trials = 2", 'trials = 2\nstorage = "sqlite:///:memory:"'), ["in-memory", "persist"]),
    ("in-memory sqlite, short", ("trials = 2", 'trials = 2\nstorage = "sqlite://"'), ["in-memory"]),
    ("arrays nested too deep for the parser", ("[finetune]", "[space]\ncriterion = " + "[" * 3000 + "]" * 3000 + "\n[finetune]"),
     ["nests", "32 levels"]),
    ("arrays nested deeper than allowed", ("[finetune]", "[space]\ncriterion = " + "[" * 40 + "]" * 40 + "\n[finetune]"),
     ["space.criterion", "32 levels"]),
]


@pytest.mark.parametrize("what,change,words", BAD, ids=[b[0] for b in BAD])
def test_bad_study_file_fails_before_any_trial(tmp_path, ckpt, capsys, what, change, words):
    old, new = change
    assert old in BASE
    path = _file(tmp_path, ckpt, BASE.replace(old, new, 1))
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "run" / "study.db").exists()  # no study (and no trial) was created


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_non_utf8_study_file(tmp_path, ckpt, capsys):
    path = _file(tmp_path, ckpt, BASE)
    path.write_bytes(BASE.replace('name = "resnet20"', 'name = "resnet20" # r\xe9seau').encode("latin-1"))
    before = _listing(tmp_path)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "not UTF-8" in err and "\\xe9" in err
    assert _listing(tmp_path) == before


PATHS = [
    # (what, [study] lines (RUN: a file named "run" exists), expected words)
    ("run_dir is a file", 'run_dir = "taken"', ["study.run_dir", "is a file"]),
    ("baseline cache_dir is a file", 'run_dir = "run"\n[baseline]\ncache_dir = "taken"', ["baseline.cache_dir", "is a file"]),
    ("run_dir below a file", 'run_dir = "taken/run"', ["study.run_dir", "cannot be created", "is a file"]),
    ("artifact_dir is a file", 'artifact_dir = "taken"', ["study.artifact_dir", "is a file"]),
    ("refined_artifact_dir is a file", 'refined_artifact_dir = "taken"', ["study.refined_artifact_dir", "is a file"]),
    ("sqlite below a file", 'storage = "sqlite:///taken/s.db"', ["study.storage", "is a file"]),
    ("sqlite is a folder", 'storage = "sqlite:///adir"', ["study.storage", "is a folder"]),
    ("journal below a file", 'storage = "taken/s.log"', ["study.storage", "is a file"]),
    ("run_dir not writable", 'run_dir = "/proc/hybridprune-test/run"', ["study.run_dir", "not writable"]),
    ("sqlite not writable", 'storage = "sqlite:////proc/hybridprune-test/s.db"', ["study.storage", "not writable"]),
    ("journal not writable", 'storage = "/proc/hybridprune-test/s.log"', ["study.storage", "not writable"]),
]


@pytest.mark.parametrize("what,lines,words", PATHS, ids=[p[0] for p in PATHS])
def test_unusable_run_paths_fail_before_any_training(tmp_path, ckpt, capsys, what, lines, words):
    """A run_dir / artifact_dir / storage file that cannot be written: one line, nothing created."""
    if "/proc/" in lines and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc (a folder nobody, not even root, can create files in)")
    path = _file(tmp_path, ckpt, BASE.replace('run_dir = "run"', lines) if "run_dir" in lines
                 else BASE.replace('run_dir = "run"', f'run_dir = "run"\n{lines}'))
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "adir").mkdir()
    before = _listing(tmp_path)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert _listing(tmp_path) == before  # no baseline trained, no run folder, no database


def test_unusable_run_dir_is_refused_before_the_baseline_is_announced(tmp_path, ckpt, capsys):
    path = _file(tmp_path, ckpt, BASE.replace('checkpoint = "base.pt"\n', "").replace('run_dir = "run"', 'run_dir = "taken"'))
    (tmp_path / "taken").write_text("a file")
    assert main(["run", str(path), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "study.run_dir" in err and "training the unpruned baseline" not in out


def test_in_memory_storage_override_is_refused(tmp_path, ckpt, capsys):
    path = _file(tmp_path, ckpt, BASE)
    assert main(["run", str(path), "--storage", "sqlite:///:memory:"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "in-memory" in err
    assert not (tmp_path / "run").exists()


def test_relative_paths_resolve_against_the_study_file(tmp_path, ckpt):
    path = _file(tmp_path, ckpt, BASE.replace("[study]", '[study]\nstorage = "sqlite:///db/s.db"'))
    cfg = load_study_config(path)
    assert cfg.model.checkpoint == str(tmp_path / "base.pt")
    assert cfg.run_dir == tmp_path / "run"
    assert cfg.storage_url == f"sqlite:///{tmp_path / 'db' / 's.db'}"
    assert cfg.artifact_dir == tmp_path / "run" / "artifacts"
    assert cfg.name == "s"


def test_cli_overrides_are_validated(tmp_path, ckpt, capsys):
    path = _file(tmp_path, ckpt, BASE)
    assert main(["run", str(path), "--backend", "slurm"]) == 2
    assert "study.backend" in capsys.readouterr().err
    assert main(["run", str(path), "--workers", "0"]) == 2
    assert "study.workers" in capsys.readouterr().err


def test_missing_study_file(tmp_path, capsys):
    assert main(["status", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "studies").glob("*.toml")))
def test_shipped_studies_are_valid(name, tmp_path):
    path = REPO / "studies" / name
    text = path.read_text()
    if "../../shared" in text and not (REPO.parent / "shared").exists():
        pytest.skip("../shared is not present")
    if 'root = "../data"' in text:  # CIFAR-100 is not shipped: validate a copy pointing at a folder
        (tmp_path / "data").mkdir()
        path = tmp_path / "studies" / name
        path.parent.mkdir()
        path.write_text(text)
    cfg = load_study_config(path)
    assert cfg.study.trials >= 1 and cfg.objectives.names()[:2] == ["accuracy", "latency_ms"]
    if cfg.model.checkpoint:  # the space fits the real model
        from hybridprune.checkpoints import load_checkpoint
        from hybridprune.search.context import build_space

        space = build_space(cfg, load_checkpoint(cfg.model.checkpoint).model)
        first = space.to_config(space.reference_points()[0])  # fixed parameters are not in the point itself
        assert first.pruned_blocks == 0 and first.channel_ratio == 0


def test_a_shipped_study_without_shared_beside_the_checkout_says_where_it_looks(tmp_path, capsys):
    text = (REPO / "studies" / "resnet56-cifar10-jpeg.toml").read_text()
    path = tmp_path / "checkout" / "studies" / "r56.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "must sit beside the checkout (../shared)" in err


def test_paper_study_needs_its_data_and_agent_token(tmp_path, monkeypatch):
    from hybridprune.search.context import build_backend

    text = (REPO / "studies" / "resnet56-cifar100-tx2.toml").read_text()
    path = tmp_path / "studies" / "tx2.toml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ConfigError, match="data.root .* does not exist"):
        load_study_config(path)
    (tmp_path / "data").mkdir()
    cfg = load_study_config(path)
    assert cfg.latency.backend == "remote" and cfg.data.dataset == "cifar100"
    monkeypatch.delenv("HYBRIDPRUNE_AGENT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="HYBRIDPRUNE_AGENT_TOKEN"):
        build_backend(cfg)
    monkeypatch.setenv("HYBRIDPRUNE_AGENT_TOKEN", "s3cret")
    assert build_backend(cfg).token == "s3cret"


def test_study_with_other_objectives_in_the_same_storage_is_refused(tmp_path, ckpt):
    from hybridprune.search.study import open_study

    path = _file(tmp_path, ckpt, BASE)
    open_study(load_study_config(path))
    path.write_text(BASE + "[objectives]\nextra = [\"params\"]\n")
    with pytest.raises(ConfigError, match="optimises"):
        open_study(load_study_config(path))


@pytest.mark.parametrize("space, words", [
    ('criterion = ["l7"]', ["space.criterion", "weight_magnitude"]),
    ("ratio = 0.3", ["ratio", "allowed", "channel_ratio"]),
    ('references = "paper_gird"', ["space.references", "paper_grid"]),
    ("pruned_blocks = { low = 0, high = 99 }", ["space.pruned_blocks.high"]),
])
def test_space_errors_come_before_a_baseline_trains(tmp_path, ckpt, capsys, space, words):
    """Without a checkpoint (or with adapt_epochs) the baseline trains first: [space] is checked before that."""
    text = BASE.replace('checkpoint = "base.pt"\n', "").replace("[finetune]", f"[baseline]\nsteps = 1\n[space]\n{space}"
                                                                              f"\n[finetune]")
    path = _file(tmp_path, ckpt, text)
    assert main(["run", str(path), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and all(w in captured.err for w in words), captured.err
    assert "baseline" not in captured.out and not (tmp_path / "run").exists()


def test_a_paired_latency_round_is_capped_by_default_and_a_given_cap_is_kept():
    """A paired ONNX Runtime round mostly runs to its max_time_s; left out, it is PAIRED_ROUND_S,
    not the protocol's 10 s (5 rounds would cost ~50 s a model). Other backends keep their own."""
    from hybridprune.search.sections import PAIRED_ROUND_S, LatencySection

    assert LatencySection(backend="onnxruntime").options == {"max_time_s": PAIRED_ROUND_S}
    given = LatencySection(backend="onnxruntime", options={"threads": 1, "max_time_s": 3.0})
    assert given.options == {"threads": 1, "max_time_s": 3.0}
    assert "max_time_s" not in LatencySection(backend="torch").options
