"""Model registry and checkpoint loading."""

from pathlib import Path

import pytest
import torch

from hybridprune.errors import CheckpointError, ConfigError, UnknownNameError
from hybridprune.models import create_model, list_models, load_checkpoint, save_checkpoint
from hybridprune.models.registry import IMAGENET_MEAN, Normalization

from conftest import RESNET56_TH as RESNET56
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
