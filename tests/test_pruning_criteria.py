"""Contract test over the criteria registry: every entry brings its tests with it."""

from __future__ import annotations

import pytest
import torch

from hybridprune.errors import ConfigError
from hybridprune.models import create_model
from hybridprune.models.blocks import removable_blocks
from hybridprune.pruning import CRITERIA, BaseCriterion, get_criterion, list_criteria
from hybridprune.pruning.blocks import block_layers


def test_registry_has_the_issue_criteria():
    assert set(list_criteria()) >= {
        "weight_magnitude", "bn_scale", "taylor_weight", "taylor_feature_map", "feature_map_rank", "random",
    }


@pytest.mark.parametrize("name", CRITERIA.names())
def test_criterion_contract(name):
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    with torch.no_grad():  # fresh BatchNorms all have gamma = 1
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = block_layers(model, removable_blocks(model))
    crit = get_criterion(name)
    assert isinstance(crit, BaseCriterion) and crit.name == name
    g = torch.Generator().manual_seed(0)
    calib = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g))]
    if crit.data_driven:
        with pytest.raises(ConfigError, match="calibration"):
            crit.score(model, layers, None)
    scores = crit.score(model, layers, calib)
    assert set(scores) == {layer.name for layer in layers}
    for layer in layers:
        s = scores[layer.name]
        assert s.shape == (layer.producer.out_channels,) and torch.isfinite(s).all() and (s >= 0).all()
        assert s.unique().numel() > 1, f"{name} gives constant scores for {layer.name}"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "scoring must not change weights"
    assert all(p.grad is None for p in model.parameters())
    assert crit.score(model, layers, calib).keys() == scores.keys()
    again = crit.score(model, layers, calib)
    assert all(torch.equal(again[k], scores[k]) for k in scores), "scores must be deterministic"


def test_unknown_option_is_clear():
    with pytest.raises(ConfigError, match="has no option"):
        get_criterion("bn_scale", p=2)


def test_weight_magnitude_l1_l2_differ():
    model = create_model("resnet20")
    layers = block_layers(model, ["layer1.1"])
    l1 = get_criterion("weight_magnitude").score(model, layers)["layer1.1"]
    l2 = get_criterion("weight_magnitude", p=2).score(model, layers)["layer1.1"]
    w = model.layer1[1].conv1.weight.detach().flatten(1)
    assert torch.allclose(l1, w.abs().sum(1).double()) and torch.allclose(l2, w.norm(dim=1).double())
