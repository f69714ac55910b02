"""A small residual CNN of your own, searched by hybridprune without registering anything.

hybridprune calls ``make_model(num_classes=..., **kwargs)`` (the ``[model] kwargs`` of the study)
and finds the removable residual blocks by structure: ``Residual`` below returns
``relu(x + branch(x))`` with a same-shape branch, so each one can be replaced by the identity.
The stride-2 ``Downsample`` layers change the shape and are kept; their channels are still pruned.

Reference it as ``examples/custom_model/net.py:make_model`` (CLI) or ``net.py:make_model``
(study file in this folder).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Residual(nn.Module):
    """Two 3x3 conv-BN layers around an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.branch(x))


def downsample(cin: int, cout: int) -> nn.Sequential:
    """Stride-2 conv-BN-ReLU: halves the resolution, changes the width (not removable)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyResNet(nn.Module):
    """Stem, then stages of residual blocks separated by stride-2 downsampling, then a linear head.

    Args:
        num_classes: Classifier size.
        width: Channels of the first stage; each later stage doubles them.
        depth: Residual blocks per stage.
        stages: Number of stages.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, depth: int = 2, stages: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [downsample(3, width)]  # 32x32 -> 16x16
        c = width
        for s in range(stages):
            if s:
                layers.append(downsample(c, 2 * c))
                c *= 2
            layers += [Residual(c) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def make_model(num_classes: int = 10, width: int = 16, depth: int = 2, stages: int = 2) -> nn.Module:
    """The factory hybridprune calls: ``make_model(num_classes=N, **[model] kwargs)``."""
    return TinyResNet(num_classes=num_classes, width=width, depth=depth, stages=stages)


# Optional facts about the model (defaults: (3, 32, 32) and the CIFAR-10 statistics).
make_model.input_size = (3, 32, 32)
make_model.normalization = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
