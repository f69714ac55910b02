"""Parameters and MACs (fvcore) and the architecture description."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hybridprune.errors import ConfigError
from hybridprune.models import create_model
from hybridprune.models.complexity import complexity, describe_architecture
from hybridprune.pruning import HybridConfig, prune_model


def _macs_by_hooks(model: nn.Module, size=(3, 32, 32)) -> int:
    total = 0

    def hook(m, _i, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *size))
    for h in hs:
        h.remove()
    return total


def test_resnet56_cifar100_numbers():
    c = complexity(create_model("resnet56", num_classes=100))
    assert c.params == 858_868
    assert abs(c.macs - 125.5e6) < 0.1e6


@pytest.mark.parametrize("scope", ["internal", "all"])
def test_macs_match_independent_count_after_pruning(scope):
    model = create_model("resnet32")
    pruned = prune_model(model, HybridConfig(0.4, 3, "weight_magnitude", scope=scope), torch.zeros(1, 3, 32, 32)).model
    for m in (model, pruned):
        c = complexity(m)
        assert c.macs == _macs_by_hooks(m)
        assert c.params == sum(p.numel() for p in m.parameters())
    assert complexity(pruned).macs < complexity(model).macs


def test_describe_architecture():
    model = create_model("resnet20")
    d = describe_architecture(model)
    assert d["blocks"] == 9
    assert d["stages"]["layer2"] == {"blocks": 3, "total": 3, "stream": 32, "internal": [32, 32, 32]}
    pruned = prune_model(model, HybridConfig(0.5, 2, "bn_scale", scope="all"), torch.zeros(1, 3, 32, 32)).model
    p = describe_architecture(pruned)
    assert p["blocks"] == 7 and p["stages"]["layer3"]["stream"] == 32
    assert all(w <= 32 for w in p["stages"]["layer3"]["internal"])


def test_describe_plain_model():
    d = describe_architecture(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3)))
    assert d == {"stages": {}, "blocks": 0, "convs": [8, 4]}


def test_bad_input_size():
    with pytest.raises(ConfigError, match="input_size"):
        complexity(create_model("resnet20"), (3, 32))
