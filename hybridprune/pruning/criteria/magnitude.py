"""Data-free criteria: weight magnitude, BatchNorm scale, random."""

from __future__ import annotations

import torch
import torch.nn as nn

from hybridprune.errors import ConfigError
from hybridprune.pruning.criteria.base import CRITERIA, BaseCriterion, ScoredLayer, producer_weight


@CRITERIA.register()
class WeightMagnitude(BaseCriterion):
    """Lp norm of each output filter (``p=1``: L1, the default; ``p=2``: L2)."""

    name = "weight_magnitude"
    options = {"p": 1}

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if self.opts["p"] not in (1, 2):
            raise ConfigError(f"weight_magnitude option p must be 1 or 2, got {self.opts['p']!r}")

    def _score(self, model: nn.Module, layers: list[ScoredLayer], calib: list) -> dict[str, torch.Tensor]:
        return {layer.name: producer_weight(layer).norm(p=self.opts["p"], dim=1) for layer in layers}


@CRITERIA.register()
class BNScale(BaseCriterion):
    """|gamma| of the BatchNorm after each channel (network slimming); L1 filter norm without one."""

    name = "bn_scale"

    def _score(self, model: nn.Module, layers: list[ScoredLayer], calib: list) -> dict[str, torch.Tensor]:
        out = {}
        for layer in layers:
            if layer.norm is not None and getattr(layer.norm, "weight", None) is not None:
                out[layer.name] = layer.norm.weight.abs()
            else:
                out[layer.name] = producer_weight(layer).abs().sum(dim=1)
        return out


@CRITERIA.register()
class RandomCriterion(BaseCriterion):
    """Uniform random scores, the baseline; reproducible through ``seed``."""

    name = "random"
    options = {"seed": 0}

    def _score(self, model: nn.Module, layers: list[ScoredLayer], calib: list) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(self.opts["seed"]))
        return {layer.name: torch.rand(producer_weight(layer).shape[0], generator=gen) for layer in layers}
