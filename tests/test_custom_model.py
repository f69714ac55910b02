"""Bring your own model: factories by reference, plain state_dicts, bad references (issue 12)."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn as nn

from hybridprune.checkpoints import load_checkpoint, save_checkpoint
from hybridprune.cli import main
from hybridprune.errors import CheckpointError, ConfigError, ModelReferenceError
from hybridprune.models import create_model, get_model_spec
from hybridprune.models.registry import CIFAR_MEAN, Normalization

USER_NET = '''
import torch
import torch.nn as nn


class Unit(nn.Module):  # not called BasicBlock: found by structure
    def __init__(self, c):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                               nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(self.f(x) + x)


class Net(nn.Module):
    def __init__(self, num_classes, width):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(Unit(width), Unit(width),
                                  nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
                                  Unit(2 * width), Unit(2 * width))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


def make(num_classes=10, width=8):
    return Net(num_classes, width)


def make_gray(num_classes=10, width=8):
    return Net(num_classes, width)


make_gray.normalization = ((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))


def broken(num_classes=10):
    raise ValueError("no GPU here")


def not_a_module(num_classes=10):
    return {"fc": 1}


NOT_CALLABLE = 3
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "models" / "user_net.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(USER_NET))
    return path


def _outputs(tmp_path):
    return sorted(p.name for p in tmp_path.rglob("*") if p.suffix == ".pt")


def test_reference_builds_and_describes_the_model(user_file):
    ref = f"{user_file}:make"
    spec = get_model_spec(ref)
    assert spec.family == "custom" and spec.input_size == (3, 32, 32) and spec.normalization.mean == CIFAR_MEAN
    model = create_model(ref, num_classes=4, width=4)
    assert model.hp_model_name == f"{user_file.resolve()}:make" and model.hp_model_kwargs == {
        "num_classes": 4,
        "width": 4,
    }
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
    assert get_model_spec(f"{user_file}:make_gray").normalization == Normalization((0.5,) * 3, (0.2,) * 3)
    net = create_model(
        "hybridprune.models.resnet_cifar:CifarResNet", num_classes=3, depth=20
    )  # package.module:callable
    assert net.hp_model_name == "hybridprune.models.resnet_cifar:CifarResNet" and net.linear.out_features == 3


def test_relative_reference_resolves_against_the_working_directory(user_file, monkeypatch):
    monkeypatch.chdir(user_file.parent.parent)
    assert create_model("models/user_net.py:make").hp_model_name == f"{user_file.resolve()}:make"


def test_prune_plain_state_dict_through_the_cli_and_reload(user_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # long temporary paths on one line
    ref = f"{user_file}:make"
    torch.manual_seed(0)
    base = create_model(ref, num_classes=5)
    plain = tmp_path / "plain.pt"
    torch.save(base.state_dict(), plain)  # what a user has: no hybridprune metadata at all
    loaded = load_checkpoint(plain, model_name=ref)
    assert loaded.source_format == "state_dict" and loaded.num_classes == 5  # classes from the state_dict
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.model(x), base(x))

    assert main(["info", "--model", ref]) == 0
    out = capsys.readouterr().out
    assert "removable residual blocks: 4" in out and "body.0" in out and "body.5" in out

    pruned = tmp_path / "pruned.pt"
    code = main(["prune", "--model", ref, "-c", str(plain), "--ratio", "0.5", "--blocks", "2", "--scope", "all",
                 "--out", str(pruned)])
    text = capsys.readouterr()
    assert code == 0, text.err
    ck = load_checkpoint(pruned, model_name=ref)  # the checkpoint records the reference and rebuilds through it
    assert ck.model_name == f"{user_file.resolve()}:make" and ck.num_classes == 5
    assert len(ck.record["removed_blocks"]) == 2 and set(ck.record["removed_blocks"]) <= {
        "body.0",
        "body.1",
        "body.4",
        "body.5",
    }
    assert all(isinstance(ck.model.get_submodule(b), nn.Identity) for b in ck.record["removed_blocks"])
    assert (
        ck.metrics["params"]
        == sum(p.numel() for p in ck.model.parameters())
        < sum(p.numel() for p in base.parameters())
    )
    assert ck.model.fc.in_features < 16 and ck.model(x).shape == (2, 5)
    assert main(["info", str(pruned), "--model", ref]) == 0
    out = capsys.readouterr().out
    assert "removable residual blocks: 2" in out and "user_net.py:make" in out


def test_checkpoint_of_a_reference_model_whose_file_or_callable_is_gone(user_file, tmp_path, capsys):
    ref = f"{user_file}:make"
    path = save_checkpoint(tmp_path / "m.pt", create_model(ref), get_model_spec(ref).normalization)
    assert torch.load(path, weights_only=True)["model"]["name"] == f"{user_file.resolve()}:make"
    other = tmp_path / "other.py"
    other.write_text(user_file.read_text().replace("def make(", "def make_v2("))
    user_file.rename(other.with_name("moved.py"))
    with pytest.raises(
        CheckpointError,
        match=r"was saved from model .*user_net.py:make, which cannot be loaded now: model file .* does not exist",
    ):
        load_checkpoint(path, trust_model_code=True)
    # the callable is renamed: a fresh interpreter would import the new file, the message lists what is there
    other.rename(user_file)
    from hybridprune.models import reference

    reference._LOADED.pop(str(user_file.resolve()), None)
    assert main(["info", str(path), "--trust-model-code"]) == 2
    err = capsys.readouterr().err
    assert (
        "has no callable 'make'; callables defined there:" in err
        and "make_v2" in err
        and len(err.strip().splitlines()) == 1
    )


BAD_REFERENCES = [
    ("{dir}/missing.py:make", "model file {dir}/missing.py does not exist"),
    (
        "{file}:nope",
        "has no callable 'nope'; callables defined there: Net, Unit, broken, make, make_gray, not_a_module",
    ),
    ("{file}:NOT_CALLABLE", "has a non-callable 'NOT_CALLABLE'"),
    ("{file}:broken", "raised ValueError: no GPU here (called with num_classes=10)"),
    ("{file}:not_a_module", "returned a dict, not a torch.nn.Module"),
    ("no_such_package_xyz.models:make", "model module 'no_such_package_xyz.models' cannot be imported"),
    ("{file}:make(1)", "is malformed"),
    ("resnet99", "unknown model 'resnet99'"),
]


@pytest.mark.parametrize("reference, message", BAD_REFERENCES)
def test_bad_reference_one_line_exit_2_nothing_written(user_file, tmp_path, capsys, reference, message):
    fmt = {"dir": str(user_file.parent), "file": str(user_file)}
    out = tmp_path / "never.pt"
    for argv in (["prune", "--model", reference.format(**fmt), "--ratio", "0.2", "--out", str(out)],
                 ["info", "--model", reference.format(**fmt)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message.format(**fmt) in err and len(err.splitlines()) == 1
    assert _outputs(tmp_path) == []


def test_plain_state_dict_that_does_not_fit(user_file, tmp_path, capsys):
    ref = f"{user_file}:make"
    plain = tmp_path / "wide.pt"
    torch.save(create_model(ref, width=12).state_dict(), plain)
    with pytest.raises(
        CheckpointError, match=r"does not fit model .*user_net.py:make: stem.0.weight has shape \(12, 3, 3, 3\)"
    ):
        load_checkpoint(plain, model_name=ref)
    assert main(["prune", "--model", ref, "-c", str(plain), "--ratio", "0.2", "--out", str(tmp_path / "o.pt")]) == 2
    assert "does not fit model" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r"no CIFAR ResNet layout .* pass its name or reference"):
        load_checkpoint(plain)  # a plain state_dict needs its model named
    assert _outputs(tmp_path) == ["wide.pt"]


def test_study_file_resolves_a_relative_reference_against_its_folder(user_file, tmp_path, monkeypatch):
    from hybridprune.search.config import load_study_config

    study = user_file.parent / "study.toml"
    study.write_text('[model]\nname = "user_net.py:make"\nkwargs = { width = 4 }\n[data]\ndataset = "digits"\n')
    monkeypatch.chdir(tmp_path)  # not the study's folder
    cfg = load_study_config(study)
    assert cfg.model.name == f"{user_file.resolve()}:make"
    assert create_model(cfg.model.name, num_classes=10, **cfg.model.kwargs).hp_model_kwargs["width"] == 4
    study.write_text('[model]\nname = "gone.py:make"\n')
    with pytest.raises(ModelReferenceError, match=r"model file .*models/gone.py does not exist"):
        load_study_config(study)
    study.write_text('[model]\nname = "user_net.py:nope"\n')
    with pytest.raises(ConfigError, match="has no callable 'nope'"):
        load_study_config(study)


STUDY = """
[study]
trials = 2
seed = 0
run_dir = "run"

[model]
name = "user_net.py:make"          # relative to this file's folder
checkpoint = "plain.pt"            # torch.save(model.state_dict())
kwargs = {{ width = 8 }}

[data]
dataset = "digits"
train_subset = 128
val_subset = 64

[space]
channel_ratio = {{ low = 0.1, high = 0.5, step = 0.1 }}
pruned_blocks = {{ low = 1, high = 4 }}
criterion = ["weight_magnitude"]

[finetune]
steps = 2
batch_size = 32

[latency]
backend = "onnxruntime"
options = {{ warmup_runs = 1, min_runs = 3, max_runs = 5, max_time_s = 0.2 }}

[sampler]
name = "random"
"""


@pytest.mark.slow
def test_study_on_a_user_model_from_a_plain_state_dict(user_file, tmp_path, monkeypatch, capsys):
    import optuna

    from hybridprune.search.config import load_study_config

    torch.manual_seed(0)
    torch.save(create_model(f"{user_file}:make", num_classes=10).state_dict(), user_file.parent / "plain.pt")
    study = user_file.parent / "study.toml"
    study.write_text(STUDY.format())
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(study), "--no-progress"]) == 0, capsys.readouterr().err
    cfg = load_study_config(study)
    trials = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    for t in trials:  # every trial removed 1..4 of the user net's structurally found blocks
        assert 1 <= len(t.user_attrs["removed_blocks"]) <= 4
        assert set(t.user_attrs["removed_blocks"]) <= {"body.0", "body.1", "body.4", "body.5"}


def test_model_file_may_import_modules_beside_it(tmp_path, capsys):
    (tmp_path / "my_blocks_xyz.py").write_text(textwrap.dedent(USER_NET))
    (tmp_path / "entry.py").write_text(
        "from my_blocks_xyz import make\n\n\ndef build(num_classes=10):\n    return make(num_classes, width=4)\n"
    )
    (tmp_path / "broken_import.py").write_text("import not_installed_pkg_xyz\n")
    assert create_model(f"{tmp_path}/entry.py:build", num_classes=3).fc.out_features == 3
    assert main(["info", "--model", f"{tmp_path}/broken_import.py:build"]) == 2
    err = capsys.readouterr().err
    assert "importing model file" in err and "ModuleNotFoundError: No module named 'not_installed_pkg_xyz'" in err


def test_a_checkpoint_never_runs_the_code_it_names(tmp_path, capsys):
    """H2: a checkpoint whose model is a file or module reference is refused unless the user names it."""
    evil = tmp_path / "evil.py"
    marker = tmp_path / "ran"
    evil.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n" + USER_NET)
    ref = f"{evil}:make"
    path = save_checkpoint(tmp_path / "evil.pt", create_model(ref), get_model_spec(ref).normalization)
    marker.unlink()
    from hybridprune.models import reference

    reference._LOADED.pop(str(evil.resolve()), None)  # as in a fresh process
    for command in (["info", str(path)], ["evaluate", str(path), "--dataset", "digits"],
                    ["latency", str(path)], ["prune", "-c", str(path), "--out", str(tmp_path / "p.pt")],
                    ["train", "--checkpoint", str(path), "--dataset", "digits", "--steps", "1",
                     "--out", str(tmp_path / "t.pt")]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error:") and "names model code" in err and "--trust-model-code" in err, err
        assert err.count("\n") == 1 and not marker.exists(), command
    hub = tmp_path / "hub.pt"
    raw = torch.load(path, weights_only=True)
    raw["model"]["name"] = "torch.hub:load"
    raw["model"]["kwargs"] = {"repo_or_dir": str(tmp_path), "model": "m", "source": "local", "trust_repo": True}
    torch.save(raw, hub)
    assert main(["info", str(hub)]) == 2 and "names model code 'torch.hub:load'" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="names model code"):
        load_checkpoint(path)
    assert not marker.exists()
    # the user's own reference, or an explicit trust, loads it (and so runs the file, as asked)
    assert load_checkpoint(path, model_name=ref).model_name == f"{evil.resolve()}:make" and marker.exists()
    assert main(["info", str(path), "--trust-model-code"]) == 0


@pytest.mark.parametrize("code, words", [
    ("import sys\nsys.exit(0)\n", "it called sys.exit(0) while being imported"),
    ("raise SystemExit('bye')\n", "it called sys.exit('bye') while being imported"),
])
def test_a_model_file_that_exits_at_import_is_an_error_not_a_success(tmp_path, capsys, monkeypatch, code, words):
    path = tmp_path / "quits.py"
    path.write_text(code + "def make(num_classes=10):\n    raise AssertionError('never reached')\n")
    study = tmp_path / "study.toml"
    study.write_text('[study]\ntrials = 1\nrun_dir = "run"\n[model]\nname = "quits.py:make"\n'
                     '[data]\ndataset = "digits"\n')
    monkeypatch.chdir(tmp_path)
    for argv in (["info", "--model", f"{path}:make"], ["run", str(study), "--no-progress"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "run").exists()


def test_read_only_commands_do_not_import_the_model_file_a_study_names(tmp_path, capsys, monkeypatch):
    from hybridprune.search.config import load_study_config

    marker = tmp_path / "imported"
    (tmp_path / "net.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n"
                                     "def make(num_classes=10):\n    raise AssertionError('not built')\n")
    study = tmp_path / "study.toml"
    study.write_text('[study]\ntrials = 1\nrun_dir = "run"\n[model]\nname = "net.py:make"\n[data]\ndataset = "digits"\n'
                     '[references]\nmodels = [{ model = "net.py:make" }]\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_study_config(study, import_models=False)
    assert cfg.model.name == f"{(tmp_path / 'net.py').resolve()}:make"
    for argv in (["status", str(study)], ["pareto", str(study)]):
        assert main(argv) == 2  # nothing to show yet, and that is all they find out
        assert "has not been run yet" in capsys.readouterr().err
    assert not marker.exists()
    load_study_config(study)  # a command that builds the model checks it, and so imports it
    assert marker.exists()
