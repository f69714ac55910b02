"""The dependency graph layer: why the option-A shortcut pruner exists, and what records refuse."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from hybridprune.errors import ConfigError
from hybridprune.models import create_model
from hybridprune.models.resnet_cifar import ZeroPadShortcut
from hybridprune.pruning import HybridConfig, prune_model
from hybridprune.pruning.graph import ZeroPadPruner
from hybridprune.pruning.record import shortcut_routing

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _prune_quarter_of_every_group(model, graph):
    for g in list(graph.get_all_groups(ignored_layers=[model.linear])):
        n = len(g[0].idxs)
        graph.get_pruning_group(g[0].dep.target.module, g[0].dep.handler, list(range(0, n, 4))).prune()


def test_plain_torch_pruning_breaks_option_a_models():
    """The known pitfall: without a custom pruner the zero-padding shortcut is mis-traced."""
    model = create_model("resnet20")
    graph = tp.DependencyGraph().build_dependency(model, X[:1], verbose=False)
    _prune_quarter_of_every_group(model, graph)
    with pytest.raises(RuntimeError):
        model(X)


def test_zero_pad_pruner_keeps_shapes_and_routing():
    model = create_model("resnet20")
    before = model.layer2[0].shortcut.positions.tolist()
    graph = tp.DependencyGraph().build_dependency(
        model, X[:1], customized_pruners={ZeroPadShortcut: ZeroPadPruner()}, verbose=False
    )
    _prune_quarter_of_every_group(model, graph)
    assert model(X).shape == (2, 10)
    sc = model.layer2[0].shortcut
    assert isinstance(sc, ZeroPadShortcut) and sc.in_channels == 12 and sc.out_channels == 24
    kept_in = [i for i in range(16) if i % 4]
    kept_out = [o for o in range(32) if o % 4]
    route, positions = shortcut_routing(before, kept_in, kept_out)
    assert sc.route.tolist() == route and sc.positions.tolist() == positions


def test_unpruned_shortcut_matches_classic_option_a():
    plain = ZeroPadShortcut(16, 32, 2)
    x = torch.randn(2, 16, 8, 8)
    ref = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))  # the classic lambda layer
    assert torch.equal(plain(x), ref)


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)).mean((2, 3)))


def test_layers_a_record_cannot_describe_are_refused():
    with pytest.raises(ConfigError, match="GroupNorm"):
        prune_model(GroupNormNet(), HybridConfig(0.5, 0, "weight_magnitude", scope="all"), X[:1])


class BasicBlock(nn.Module):
    """Shaped like torchvision's BasicBlock (``downsample`` attribute, projection when shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + idt)


class TinyTorchvisionLikeResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("order", ["channel_first", "layer_first"])
def test_torchvision_style_blocks_scope_all(order):
    from hybridprune.models.blocks import removable_blocks
    from hybridprune.pruning import apply_record

    torch.manual_seed(0)
    model = TinyTorchvisionLikeResNet().eval()
    assert removable_blocks(model) == ["layer1.0", "layer1.1", "layer2.1"]
    res = prune_model(model, HybridConfig(0.5, 2, "bn_scale", scope="all", order=order), X[:1])
    assert len(res.removed_blocks) == 2 and res.model.fc.in_features == 8
    rebuilt = apply_record(TinyTorchvisionLikeResNet().eval(), res.record.to_dict())
    rebuilt.load_state_dict(res.model.state_dict(), strict=True)
    assert torch.allclose(rebuilt(X), res.model(X), atol=1e-6)
