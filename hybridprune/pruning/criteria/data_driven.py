"""Data-driven criteria: first-order Taylor (weights, feature maps) and HRank feature-map rank.

All three run the calibration batches through the model in eval mode with forward hooks on
each layer's feature module (the BatchNorm after the conv); the Taylor criteria also back-propagate
the cross-entropy loss of the batch labels. The model's parameters and buffers are unchanged and
gradients are cleared afterwards.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridprune.pruning.criteria.base import CRITERIA, BaseCriterion, ScoredLayer


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return F.cross_entropy(out, y.to(out.device).long(), reduction="sum")


@CRITERIA.register()
class TaylorWeight(BaseCriterion):
    """|sum over each filter of weight * dLoss/dweight| (Molchanov et al. 2019), summed over batches."""

    name = "taylor_weight"
    data_driven = True

    def _score(self, model: nn.Module, layers: list[ScoredLayer], calib: list) -> dict[str, torch.Tensor]:
        acc = {layer.name: torch.zeros(layer.producer.weight.shape[0], dtype=torch.float64) for layer in layers}
        with _eval_mode(model), torch.enable_grad():
            for x, y in calib:
                model.zero_grad(set_to_none=True)
                _loss(model, x, y).backward()
                for layer in layers:
                    w = layer.producer.weight
                    if w.grad is None:
                        continue
                    acc[layer.name] += (w * w.grad).reshape(w.shape[0], -1).sum(1).abs().double().cpu()
        return acc


class _FeatureMapCriterion(BaseCriterion):
    """Shared hook plumbing: ``_channel_stat`` reduces one layer's feature map (and grad)."""

    needs_grad = False

    def _channel_stat(self, fmap: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, model: nn.Module, layers: list[ScoredLayer], calib: list) -> dict[str, torch.Tensor]:
        acc: dict[str, torch.Tensor] = {}
        count = 0
        maps: dict[str, torch.Tensor] = {}

        def hook_for(name):
            def hook(_m, _i, out):
                if self.needs_grad:
                    out.retain_grad()
                maps[name] = out
            return hook

        hooks = [layer.feature_module.register_forward_hook(hook_for(layer.name)) for layer in layers]
        try:
            with _eval_mode(model), torch.set_grad_enabled(self.needs_grad):
                for x, y in calib:
                    maps.clear()
                    if self.needs_grad:
                        model.zero_grad(set_to_none=True)
                        _loss(model, x, y).backward()
                    else:
                        model(x)
                    for name, fmap in maps.items():
                        stat = self._channel_stat(fmap.detach(), fmap.grad if self.needs_grad else None)
                        acc[name] = acc.get(name, 0) + stat.double().cpu().sum(0)
                    count += x.shape[0]
        finally:
            for h in hooks:
                h.remove()
        return {layer.name: acc[layer.name] / max(count, 1) for layer in layers}


@CRITERIA.register()
class TaylorFeatureMap(_FeatureMapCriterion):
    """|mean over space of activation * gradient| per channel and image, averaged (Molchanov 2017)."""

    name = "taylor_feature_map"
    data_driven = True
    needs_grad = True

    def _channel_stat(self, fmap: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        prod = fmap * grad
        if prod.dim() > 2:
            prod = prod.flatten(2).mean(2)
        return prod.abs()


@CRITERIA.register()
class FeatureMapRank(_FeatureMapCriterion):
    """HRank (Lin et al. 2020): average matrix rank of each output feature map over images."""

    name = "feature_map_rank"
    data_driven = True

    def _channel_stat(self, fmap: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        if fmap.dim() != 4:
            return fmap.abs().reshape(fmap.shape[0], fmap.shape[1], -1).mean(2)
        rank = torch.linalg.matrix_rank(F.relu(fmap).float()).double()
        # Ties (equal ranks) are common; a tiny mean-activation term breaks them deterministically.
        return rank + 1e-6 * F.relu(fmap).flatten(2).mean(2).double()
