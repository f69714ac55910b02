"""CIFAR ResNets (He et al. 2016, section 4.2): depth 6n+2, three stages of 16/32/64 channels.

Parameter names follow the classic public implementation (``conv1``, ``bn1``,
``layerS.N.{conv1,bn1,conv2,bn2}``, ``linear``) so its pretrained checkpoints load unchanged.

Shortcut options:
    ``A``: stride-2 subsampling and zero-padded channels, no parameters (the paper's layout).
    ``B``: 1x1 convolution + BatchNorm projection where the shape changes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridprune.errors import ConfigError


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially, then place input channels into a zero tensor.

    ``route[j]`` is the j-th input channel that is carried and ``positions[j]`` the output channel
    it lands in; every other output channel is zero, and input channels not in ``route`` are
    ignored. Unpruned, ``route`` is every input and the classic layout pads ``out // 4`` zero
    channels on each side. Keeping the mapping explicit (rather than two pad widths) lets channel
    pruning remove any input or output channel and stay exact; :mod:`hybridprune.pruning`
    registers a Torch-Pruning pruner for it.

    Args:
        in_channels: Channels entering the shortcut.
        out_channels: Channels leaving it.
        stride: Spatial subsampling factor.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ConfigError(f"option-A shortcut needs out_channels >= in_channels, got {in_channels}->{out_channels}")
        front = (out_channels - in_channels) // 2
        self.n_in = in_channels
        self.out_channels = out_channels
        self.stride = stride
        # Not persistent: classic checkpoints have no such keys; pruning records rebuild them.
        self.register_buffer("route", torch.arange(in_channels), persistent=False)
        self.register_buffer("positions", torch.arange(in_channels) + front, persistent=False)

    @property
    def in_channels(self) -> int:
        return int(self.n_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.route.numel() != x.shape[1]:
            x = x.index_select(1, self.route)
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        pos = self.positions.tolist()
        if pos and pos == list(range(pos[0], pos[0] + len(pos))):
            # Contiguous block (the unpruned layout): a plain pad, which exports to one ONNX Pad.
            return F.pad(x, (0, 0, 0, 0, pos[0], self.out_channels - pos[-1] - 1))
        out = x.new_zeros(x.shape[0], self.out_channels, x.shape[2], x.shape[3])
        return out.index_copy(1, self.positions, x)

    def extra_repr(self) -> str:
        routed = f" (routed {self.route.numel()})" if self.route.numel() != self.n_in else ""
        return f"{self.n_in}->{self.out_channels}{routed}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or shortcut connection.

    Args:
        in_planes: Input channels.
        planes: Output channels of both convolutions.
        stride: Stride of the first convolution.
        shortcut: ``"A"`` or ``"B"``; only used when the shape changes.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs.

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110, ...).
        num_classes: Size of the classifier.
        shortcut: ``"A"`` (zero padding) or ``"B"`` (projection).
        width: Channels of the first stage (16 in the paper); later stages double it.

    Raises:
        ConfigError: for a depth that is not 6n+2, a bad class count or shortcut option.
    """

    def __init__(self, depth: int = 56, num_classes: int = 10, shortcut: str = "A", width: int = 16) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if shortcut not in ("A", "B"):
            raise ConfigError(f"shortcut must be 'A' (zero padding) or 'B' (projection), got {shortcut!r}")
        n = (depth - 2) // 6
        self.depth, self.shortcut_type = depth, shortcut
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        for stage, (planes, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2)], start=1):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
