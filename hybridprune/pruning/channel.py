"""How much: choose prunable channel groups by scope, allocate the ratio, prune physically.

Groups come from Torch-Pruning's dependency graph (:mod:`hybridprune.pruning.graph`). A group is
*internal* when exactly one non-depthwise conv/linear layer (or shortcut) produces its channels,
e.g. ``conv1``/``bn1`` of a BasicBlock; groups of the residual stream couple several producers
through the residual additions. ``scope="internal"`` prunes internal groups only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning as tp

from hybridprune.models.resnet_cifar import ZeroPadShortcut
from hybridprune.pruning.criteria.base import BaseCriterion, ScoredLayer
from hybridprune.pruning.graph import ChannelTracker, all_groups, build_graph, is_depthwise


@dataclass
class ChannelGroup:
    """A set of coupled channels and the layers that produce them.

    Attributes:
        root: Module whose out-channel pruning roots the group.
        handler: Its out-channel pruning function.
        size: Number of channels.
        producers: Scored layers producing these channels.
        internal: Whether the group lies inside a residual block.
    """

    root: nn.Module
    handler: object
    size: int
    producers: list[ScoredLayer]
    internal: bool


def output_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    """Classifier layers that must keep their outputs (linear/conv layers sized like the output)."""
    with torch.no_grad():
        was = model.training
        n_out = model.eval()(example_inputs[:1]).shape[1]
        model.train(was)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == n_out]
    if convs and convs[-1].out_channels == n_out:  # fully convolutional classifiers (SqueezeNet)
        heads.append(convs[-1])
    return heads


def channel_groups(
    model: nn.Module, graph: tp.DependencyGraph, ignored: list[nn.Module], scope: str
) -> list[ChannelGroup]:
    """Prunable groups of ``model`` for ``scope`` (``internal`` or ``all``).

    Args:
        model: The model traced by ``graph``.
        graph: Its dependency graph.
        ignored: Layers whose outputs must not be pruned (the classifier).
        scope: ``internal`` or ``all``.

    Returns:
        Groups, in graph order.
    """
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in all_groups(graph, ignored=ignored):
        outs = [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
        producers = []
        for m in outs:
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m in names:
                node = graph.module2node[m]
                norm = next(
                    (o.module for o in node.outputs if isinstance(o.module, nn.modules.batchnorm._BatchNorm)), None
                )
                producers.append(ScoredLayer(names[m], m, norm))
        independent = [
            m for m in outs if isinstance(m, (nn.Conv2d, nn.Linear, ZeroPadShortcut)) and not is_depthwise(m)
        ]
        internal = len(independent) == 1
        if not producers or (scope == "internal" and not internal):
            continue
        root_dep = group[0].dep
        groups.append(ChannelGroup(root_dep.target.module, root_dep.handler, len(group[0].idxs), producers, internal))
    return groups


def group_scores(groups: list[ChannelGroup], layer_scores: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """One score per channel of each group: mean over its producers of max-normalised scores."""
    out = []
    for g in groups:
        parts = []
        for p in g.producers:
            s = layer_scores[p.name].double()
            parts.append(s / s.max() if float(s.max()) > 0 else s)
        out.append(torch.stack(parts).mean(0))
    return out


def _round_keep(keep: int, size: int, round_to: int) -> int:
    if round_to > 1:
        keep = int(round(keep / round_to)) * round_to
        keep = max(keep, round_to)
    return max(1, min(size, keep))


def allocate(scores: list[torch.Tensor], ratio: float, allocation: str, round_to: int) -> list[list[int]]:
    """Which channels each group loses.

    Args:
        scores: Per-group channel scores.
        ratio: Fraction of channels to remove.
        allocation: ``uniform`` (floor(ratio * size) per group) or ``global`` (lowest scores over
            all groups, each group keeping at least one channel / ``round_to``).
        round_to: Kept counts are rounded to the nearest multiple (at least one multiple).

    Returns:
        Per group, the sorted indices to prune (the lowest-scoring channels).
    """
    sizes = [len(s) for s in scores]
    if allocation == "uniform":
        keeps = [n - int(math.floor(ratio * n + 1e-9)) for n in sizes]
    else:
        flat = sorted(
            ((float(s[i]), gi, i) for gi, s in enumerate(scores) for i in range(len(s))),
            key=lambda t: (t[0], t[1], t[2]),
        )
        budget = int(math.floor(ratio * sum(sizes) + 1e-9))
        pruned = [0] * len(sizes)
        for _score, gi, _i in flat:
            if budget == 0:
                break
            if sizes[gi] - pruned[gi] > max(1, min(round_to, sizes[gi])):
                pruned[gi] += 1
                budget -= 1
        keeps = [n - p for n, p in zip(sizes, pruned)]
    result = []
    for s, n, keep in zip(scores, sizes, keeps):
        keep = _round_keep(keep, n, round_to)
        order = sorted(range(n), key=lambda i: (float(s[i]), i))
        result.append(sorted(order[: n - keep]))
    return result


def prune_channels(
    model: nn.Module,
    example_inputs: torch.Tensor,
    criterion: BaseCriterion,
    tracker: ChannelTracker,
    *,
    ratio: float,
    scope: str,
    allocation: str,
    round_to: int,
    calib: list | None,
) -> dict[str, int]:
    """Score and physically remove channels of ``model`` in place.

    Args:
        model: The (copied) model to prune.
        example_inputs: Inputs for tracing.
        criterion: Channel criterion.
        tracker: Bookkeeping of kept channels (updated).
        ratio: Fraction of channels to remove in the selected groups.
        scope: ``internal`` or ``all``.
        allocation: ``uniform`` or ``global``.
        round_to: Rounding multiple of kept channels.
        calib: Calibration batches for data-driven criteria.

    Returns:
        Root layer name -> number of channels removed.
    """
    graph = build_graph(model, example_inputs)
    groups = channel_groups(model, graph, output_layers(model, example_inputs), scope)
    layers = {p.name: p for g in groups for p in g.producers}
    scores = criterion.score(model, list(layers.values()), calib)
    plan = allocate(group_scores(groups, scores), ratio, allocation, round_to)
    names = {m: n for n, m in model.named_modules()}
    removed = {}
    for g, idxs in zip(groups, plan):
        if not idxs:
            continue
        tracker.prune(graph, graph.get_pruning_group(g.root, g.handler, idxs))
        removed[names.get(g.root, str(g.root))] = len(idxs)
    return removed
