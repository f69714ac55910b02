"""Registers the CIFAR ResNets resnet20/32/44/56/110 (option A by default, ``shortcut="B"``)."""

from __future__ import annotations

from functools import partial

from hybridprune.models.registry import ModelSpec, register_model
from hybridprune.models.resnet_cifar import CifarResNet

CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110)


def _factory(depth: int, num_classes: int = 10, shortcut: str = "A", width: int = 16) -> CifarResNet:
    return CifarResNet(depth=depth, num_classes=num_classes, shortcut=shortcut, width=width)


for _depth in CIFAR_DEPTHS:
    register_model(
        ModelSpec(
            name=f"resnet{_depth}",
            factory=partial(_factory, _depth),
            family="cifar_resnet",
            defaults={"shortcut": "A"},
        )
    )
