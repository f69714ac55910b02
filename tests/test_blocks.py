"""Removable residual blocks are found by structure (y = x + f(x)), whatever the class is called."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hybridprune.errors import ConfigError
from hybridprune.models import create_model
from hybridprune.models.blocks import find_blocks, removable_blocks
from hybridprune.pruning import HybridConfig, apply_record, prune_model

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def conv_bn(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class Bottle(nn.Module):
    """torchvision's Bottleneck layout under another name; in-place add and ReLU."""

    def __init__(self, c, mid, stride=1, cin=None):
        super().__init__()
        cin = cin or c
        self.a, self.b, self.c = conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride), conv_bn(mid, c, 1)
        self.proj = conv_bn(cin, c, 1, stride) if stride != 1 or cin != c else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.c(self.relu(self.b(self.relu(self.a(x)))))
        out += x if self.proj is None else self.proj(x)
        return self.relu(out)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand, depthwise, project; residual only at stride 1 and equal widths."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, hidden, 1), nn.ReLU6(), conv_bn(hidden, hidden, 3, stride, hidden),
                                  nn.ReLU6(), conv_bn(hidden, cout, 1))

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class NotBlocks(nn.Module):
    """Shape-preserving modules that are not residual blocks."""

    def __init__(self):
        super().__init__()
        self.body = conv_bn(8, 8)
        self.bias = nn.Parameter(torch.zeros(1, 8, 1, 1))
        self.gate = conv_bn(8, 8, 1)

    def forward(self, x):
        y = self.body(x)
        return y + y + self.bias + x * torch.sigmoid(self.gate(x).mean((2, 3), keepdim=True))


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = conv_bn(8, 8)

    def forward(self, x):
        return x + x  # adds its input to itself: no branch


class Broadcast(nn.Module):
    def __init__(self):
        super().__init__()
        self.squeeze = conv_bn(8, 8, 1)

    def forward(self, x):
        return x + self.squeeze(x).mean((2, 3), keepdim=True)  # branch of another shape


class Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.wrapped = nn.Sequential(Bottle(8, 4))  # one block in a container: reported once, innermost
        self.down = Bottle(16, 4, stride=2, cin=8)  # projection shortcut: not removable
        self.mb = nn.Sequential(
            InvertedResidual(16, 16, 1, 2), InvertedResidual(16, 24, 2, 2), InvertedResidual(24, 24, 1, 6)
        )
        self.squash = conv_bn(24, 8, 1)
        self.others = nn.Sequential(NotBlocks(), Twice(), Broadcast())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.squash(self.mb(self.down(self.wrapped(torch.relu(self.stem(x))))))
        return self.head(self.others(x).mean((2, 3)))


def test_blocks_found_by_structure():
    model = Zoo().eval()
    blocks = find_blocks(model)
    assert [b.name for b in blocks] == ["wrapped.0", "mb.0", "mb.2"]
    assert [b.channels for b in blocks] == [8, 16, 24]
    assert [c for _, c in blocks[0].convs] == [4, 4, 8]
    assert [c for _, c in blocks[2].convs] == [144, 144, 24]


def test_resnet56_keeps_its_25_blocks_and_names():
    names = removable_blocks(create_model("resnet56"))
    expected = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(9) if not (s > 1 and i == 0)]
    assert names == expected


def test_option_b_resnet_projection_blocks_not_removable():
    names = removable_blocks(create_model("resnet20", shortcut="B"))
    assert "layer2.0" not in names and "layer3.0" not in names and len(names) == 7


def test_block_detection_restores_training_mode_and_running_stats():
    model = create_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    removable_blocks(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("order", ["channel_first", "layer_first"])
def test_prune_generic_blocks_and_rebuild(order):
    torch.manual_seed(0)
    model = Zoo().eval()
    res = prune_model(model, HybridConfig(0.3, 2, "weight_magnitude", order=order), X[:1])
    assert len(res.removed_blocks) == 2 and set(res.removed_blocks) <= {"wrapped.0", "mb.0", "mb.2"}
    rebuilt = apply_record(Zoo().eval(), res.record.to_dict())
    rebuilt.load_state_dict(res.model.state_dict(), strict=True)
    assert torch.allclose(rebuilt(X), res.model(X), atol=1e-5)


def test_model_that_cannot_run_on_the_example_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(7, 2))
    with pytest.raises(ConfigError, match=r"cannot trace the model .* \(1, 3, 32, 32\)"):
        removable_blocks(model)


def test_bare_parameter_on_the_pruned_stream_is_refused():
    with pytest.raises(ConfigError, match=r"parameter others.0.bias \(a bare nn.Parameter"):
        prune_model(Zoo().eval(), HybridConfig(0.3, 0, "weight_magnitude", scope="all"), X[:1])
