"""What must be pruned together: Torch-Pruning's dependency graph, plus our option-A shortcut.

Torch-Pruning traces the model with autograd and groups every layer whose channels are coupled
(a conv's output channels, its BatchNorm, the next conv's input channels, every branch of a
residual add). It does not know :class:`~hybridprune.models.resnet_cifar.ZeroPadShortcut`: traced
as plain slicing/padding ops it is mistaken for an element-wise op, which couples a 16-channel
input to a 32-channel output and breaks shapes. :class:`ZeroPadPruner` is the custom pruner that
makes it a proper graph node with independent input and output channels.

When an output channel of the shortcut that carries an input channel is pruned, that input
channel is dropped from the shortcut's ``route`` while the layers upstream still produce it.

:class:`ChannelTracker` follows every pruning operation so that the kept channels of each layer
are known by their original indices; that is what the pruning record stores.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

from hybridprune.errors import ConfigError
from hybridprune.models.resnet_cifar import ZeroPadShortcut


def _keep(n: int, idxs: Sequence[int]) -> list[int]:
    drop = set(int(i) for i in idxs)
    return [i for i in range(n) if i not in drop]


class ZeroPadPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning pruner for :class:`ZeroPadShortcut` (no intra-layer coupling)."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer: ZeroPadShortcut, idxs: Sequence[int]) -> nn.Module:
        removed = sorted(set(int(i) for i in idxs))
        pos = layer.positions.tolist()
        keep_j = [j for j, p in enumerate(pos) if p not in set(removed)]
        shift = torch.tensor([sum(r < pos[j] for r in removed) for j in keep_j], dtype=torch.long)
        device = layer.positions.device
        layer.positions = (torch.tensor([pos[j] for j in keep_j], dtype=torch.long) - shift).to(device)
        layer.route = layer.route[torch.tensor(keep_j, dtype=torch.long, device=device)]
        layer.out_channels = layer.out_channels - len(removed)
        return layer

    def prune_in_channels(self, layer: ZeroPadShortcut, idxs: Sequence[int]) -> nn.Module:
        removed = sorted(set(int(i) for i in idxs))
        route = layer.route.tolist()
        keep_j = [j for j, r in enumerate(route) if r not in set(removed)]
        device = layer.positions.device
        new_route = [route[j] - sum(r < route[j] for r in removed) for j in keep_j]
        layer.route = torch.tensor(new_route, dtype=torch.long, device=device)
        layer.positions = layer.positions[torch.tensor(keep_j, dtype=torch.long, device=device)]
        layer.n_in = layer.n_in - len(removed)
        return layer

    def get_out_channels(self, layer: ZeroPadShortcut) -> int:
        return int(layer.out_channels)

    def get_in_channels(self, layer: ZeroPadShortcut) -> int:
        return int(layer.n_in)


def build_graph(model: nn.Module, example_inputs: torch.Tensor) -> tp.DependencyGraph:
    """Trace ``model`` into a Torch-Pruning dependency graph with our custom pruners.

    Args:
        model: The model.
        example_inputs: A batch of inputs of the right shape.

    Returns:
        The dependency graph.
    """
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model,
            example_inputs=example_inputs,
            customized_pruners={ZeroPadShortcut: ZeroPadPruner()},
            verbose=False,
        )


def is_depthwise(m: nn.Module) -> bool:
    """True for a depthwise convolution (one input channel per group)."""
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def channel_counts(m: nn.Module) -> dict[str, int] | None:
    """Current (out, in) channel counts of a layer the record can describe, else ``None``."""
    if isinstance(m, nn.Conv2d):
        return {"out": m.out_channels, "in": m.in_channels}
    if isinstance(m, nn.Linear):
        return {"out": m.out_features, "in": m.in_features}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return {"out": m.num_features}
    if isinstance(m, ZeroPadShortcut):
        return {"out": m.out_channels, "in": m.in_channels}
    return None


class ChannelTracker:
    """Follows pruning groups and keeps each layer's surviving channels by original index.

    Args:
        model: The model about to be pruned (already deep-copied).
    """

    def __init__(self, model: nn.Module) -> None:
        self.names = {m: n for n, m in model.named_modules()}
        self.params = {p: n for n, p in model.named_parameters()}
        self.kept: dict[str, dict[str, list[int]]] = {}
        for name, m in model.named_modules():
            counts = channel_counts(m)
            if counts is not None:
                self.kept[name] = {k: list(range(v)) for k, v in counts.items()}

    def prune(self, graph: tp.DependencyGraph, group) -> None:
        """Record what ``group`` removes, then prune it.

        Raises:
            ConfigError: if the group would prune a layer type the record cannot describe.
            RuntimeError: if a layer's channel count afterwards disagrees with the bookkeeping
                (a layer type the record cannot describe was pruned).
        """
        done: set[tuple[str, str]] = set()
        touched = []
        for dep, idxs in group:
            module = dep.target.module
            name = self.names.get(module)
            if name is None:
                if isinstance(module, nn.Parameter) and module in self.params:
                    raise ConfigError(
                        f"parameter {self.params[module]} (a bare nn.Parameter used in forward) would be pruned, but "
                        f"pruning records support Conv2d, Linear, BatchNorm and option-A shortcut layers only; "
                        f"use scope='internal' or wrap it in a layer"
                    )
                continue  # traced functional ops (add, slicing) own no tensors
            if name not in self.kept:
                if isinstance(module, nn.Module) and any(True for _ in module.parameters(recurse=False)):
                    raise ConfigError(
                        f"layer {name} ({type(module).__name__}) would be pruned, but pruning records support "
                        f"Conv2d, Linear, BatchNorm and option-A shortcut layers only"
                    )
                continue
            dim = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
            if isinstance(module, nn.modules.batchnorm._BatchNorm) or is_depthwise(module):
                dim = "out"  # one channel dimension
            if (name, dim) in done:
                continue
            done.add((name, dim))
            cur = self.kept[name][dim]
            self.kept[name][dim] = [cur[i] for i in _keep(len(cur), idxs)]
            touched.append((name, module))
        group.prune()
        for name, module in touched:
            kept = self.kept[name]
            if is_depthwise(module):
                kept["in"] = list(kept["out"])
            counts = channel_counts(module)
            for dim, n in (counts or {}).items():
                if len(kept[dim]) != n:
                    raise RuntimeError(f"pruning bookkeeping of {name}.{dim}: {len(kept[dim])} != {n}")

    def changed(self, original: dict[str, dict[str, int]]) -> dict[str, dict[str, list[int]]]:
        """Layers whose channels differ from ``original`` counts: name -> {"out"/"in": kept}."""
        out = {}
        for name, kept in self.kept.items():
            diff = {d: v for d, v in kept.items() if len(v) != original[name][d]}
            if diff:
                out[name] = diff
        return out


def all_groups(graph: tp.DependencyGraph, ignored: Iterable[nn.Module] = ()) -> list:
    """Every prunable group rooted at a conv/linear layer or a shortcut, full index lists."""
    return list(
        graph.get_all_groups(
            ignored_layers=list(ignored),
            root_module_types=(nn.Conv2d, nn.Linear, ZeroPadShortcut),
        )
    )
