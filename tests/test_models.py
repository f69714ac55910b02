"""Model registry and checkpoint loading."""


import pytest
import torch

from hybridprune.checkpoints import load_checkpoint, save_checkpoint
from hybridprune.errors import CheckpointError, ConfigError, UnknownNameError
from hybridprune.models import create_model, list_models
from hybridprune.models.registry import IMAGENET_MEAN, Normalization

from helpers import RESNET56_TH as RESNET56

needs_shared = pytest.mark.skipif(not RESNET56.exists(), reason="../shared/models not present")


@pytest.mark.parametrize("name", list_models("cifar_resnet"))
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_cifar_resnets_forward(name, shortcut):
    model = create_model(name, num_classes=7, shortcut=shortcut)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_resnet56_parameter_count_matches_paper():
    assert sum(p.numel() for p in create_model("resnet56", num_classes=100).parameters()) == 858_868


def test_unknown_model_lists_choices():
    with pytest.raises(UnknownNameError, match="resnet56"):
        create_model("resnet57")


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"shortcut": "C"}])
def test_bad_model_options(kwargs):
    with pytest.raises(ConfigError):
        create_model("resnet20", **kwargs)


@needs_shared
def test_classic_checkpoint_loads_with_imagenet_normalization():
    ck = load_checkpoint(RESNET56)
    assert ck.model_name == "resnet56" and ck.num_classes == 10 and ck.source_format == "classic"
    assert ck.normalization.mean == IMAGENET_MEAN
    assert sum(p.numel() for p in ck.model.parameters()) == 853_018


@needs_shared
def test_classic_checkpoint_wrong_model_is_clear_error():
    with pytest.raises(CheckpointError, match="does not fit model resnet20"):
        load_checkpoint(RESNET56, model_name="resnet20")


def test_roundtrip_own_format(tmp_path):
    model = create_model("resnet20", num_classes=5)
    norm = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    path = save_checkpoint(tmp_path / "m.pt", model, norm, metrics={"acc": 0.5})
    ck = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(ck.model(x), model(x))
    assert ck.normalization == norm and ck.metrics == {"acc": 0.5}


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_file_is_clear_error(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(bad)


def test_non_checkpoint_object(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def _torchvision_importable() -> bool:
    try:
        import torchvision.models  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.parametrize("name", list_models("torchvision"))
def test_torchvision_models_build_or_fail_clearly(name):
    """torchvision is imported lazily: it builds where it imports, else a one-line install hint."""
    from hybridprune.errors import MissingDependencyError

    if _torchvision_importable():
        model = create_model(name, num_classes=10)
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    else:
        with pytest.raises(MissingDependencyError, match=r"pip install 'hybridprune\[torchvision\]'"):
            create_model(name, num_classes=10)


def test_importing_hybridprune_does_not_import_torchvision():
    import subprocess
    import sys

    code = "import sys, hybridprune.models, hybridprune.cli; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _payload(**changes):
    """A valid hybridprune/1 payload of a resnet20 with some fields replaced (None: deleted)."""
    model = create_model("resnet20", num_classes=10)
    p = {
        "format": "hybridprune/1", "model": {"name": "resnet20", "kwargs": dict(model.hp_model_kwargs)},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "input_size": [3, 32, 32], "record": None,
        "state_dict": model.state_dict(), "metrics": {"acc": 0.5},
    }
    for key, value in changes.items():
        if value is None:
            p.pop(key)
        else:
            p[key] = value
    return p


def _state(**changes):
    state = create_model("resnet20").state_dict()
    state.update(changes)
    return state


MALFORMED = [
    (_payload(model=None), r"lacks key\(s\) \['model'\]"),
    (_payload(state_dict=None), r"lacks key\(s\) \['state_dict'\]"),
    (_payload(model="resnet20"), "'model' must be a dict with a 'name' string"),
    (_payload(model={"kwargs": {}}), "'model' must be a dict with a 'name' string"),
    (_payload(model={"name": "resnet20", "kwargs": [1]}), "model kwargs must be a dict"),
    (
        _payload(model={"name": "resnet20", "kwargs": {"num_classes": 10**12}}),
        r"num_classes must be an integer in \[1, 100000\]",
    ),
    (_payload(model={"name": "resnet20", "kwargs": {"num_classes": "10"}}), "num_classes must be an integer"),
    (
        _payload(model={"name": "resnet20", "kwargs": {"num_classes": 10, "depth": "x"}}),
        "cannot rebuild model resnet20",
    ),
    (_payload(model={"name": "resnet99", "kwargs": {"num_classes": 10}}), "unknown model 'resnet99'"),
    (_payload(model={"name": "resnet20", "kwargs": {"num_classes": 10, "width": 10**6}}), "would hold .* values"),
    (_payload(input_size=32), r"input_size must be \[C, H, W\]"),
    (_payload(input_size=[3, 32]), r"input_size must be \[C, H, W\]"),
    (_payload(input_size=[3, 10**6, 10**6]), r"input_size must be \[C, H, W\]"),
    (_payload(normalization=[0.5, 0.5]), "normalization must be"),
    (_payload(normalization={"mean": [0.5] * 3, "std": [0.0] * 3}), "std values must be > 0"),
    (_payload(normalization={"mean": [float("nan")] * 3, "std": [1.0] * 3}), "normalization must be"),
    (_payload(metrics=[1, 2]), "metrics must be a dict"),
    (_payload(metrics="[/oops]"), "metrics must be a dict"),
    (_payload(record=[1]), "record must be a pruning record dict"),
    (_payload(record={"version": 1, "removed_blocks": ["layer9.0"], "channels": {}}), "not a removable residual block"),
    (_payload(record={"version": 1, "removed_blocks": [], "channels": {"conv1": {"out": "abc"}}}), "channels must map"),
    (_payload(state_dict={"conv1.weight": 3}), "state_dict must map names to tensors"),
    (_payload(state_dict=[]), "state_dict must be a non-empty dict"),
    (_payload(format="hybridprune/9"), "format 'hybridprune/9'; this version reads hybridprune/1"),
    (_state(**{"linear.weight": torch.tensor(1.0)}), r"linear.weight must be a 2-D"),
    ({k: v for k, v in _state().items() if not k.startswith("layer1.")}, "no CIFAR ResNet layout"),
    (
        {"linear.weight": torch.zeros(10**6, 1), "layer1.0.conv1.weight": torch.zeros(1)},
        r"num_classes must be an integer in \[1, 100000\]",
    ),
    (_state(**{"layer1.0.conv1.weight": torch.zeros(3)}), "does not fit model resnet20"),
]


@pytest.mark.parametrize("payload, message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_checkpoint_is_one_clear_error(tmp_path, payload, message):
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("version", ["2.5.1+cpu", "2.1.0", "1.13.1"])
def test_torch_below_2_6_refuses_to_unpickle(tmp_path, monkeypatch, version):
    path = save_checkpoint(tmp_path / "m.pt", create_model("resnet20"), Normalization())
    monkeypatch.setattr(torch, "__version__", version)  # the old torch itself cannot be installed here
    with pytest.raises(CheckpointError, match=r"CVE-2025-32434.*pip install 'torch>=2.6'"):
        load_checkpoint(path)
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    assert load_checkpoint(path).model_name == "resnet20"
