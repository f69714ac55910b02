"""Hybrid pruning: channels and residual blocks, in either order, on a copy of the model."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn as nn

from hybridprune.errors import ConfigError
from hybridprune.pruning.blocks import (
    block_layers,
    check_block_count,
    check_stage_counts,
    choose_blocks,
    choose_stage_blocks,
    remove_blocks,
)
from hybridprune.pruning.channel import prune_channels
from hybridprune.pruning.config import HybridConfig
from hybridprune.pruning.graph import ChannelTracker, channel_counts
from hybridprune.pruning.record import PruningRecord, record_channels


@dataclass
class PruneResult:
    """Outcome of :func:`prune_model`.

    Attributes:
        model: The new, physically pruned model (the input is untouched).
        record: How to rebuild it from the base architecture.
        removed_blocks: Names of the residual blocks that went.
        block_scores: Mean criterion score of each candidate block when blocks were chosen.
        removed_channels: Root layer name -> channels removed from its group.
    """

    model: nn.Module
    record: PruningRecord
    removed_blocks: list[str] = field(default_factory=list)
    block_scores: dict[str, float] = field(default_factory=dict)
    removed_channels: dict[str, int] = field(default_factory=dict)


class ScoreMemo:
    """Criterion scores of one unpruned model, kept across prunings of it (:func:`prune_model`'s ``memo``).

    Every trial of a study prunes the same baseline, and whichever step comes first (channels or
    blocks) scores the baseline itself: for a data-driven criterion a forward (and backward) pass
    over the calibration batches, 1-2.5 s of a ResNet-56 prune on a 2-vCPU CPU and the same for
    every trial. The memo keeps those scores by criterion, options, a fingerprint of the
    calibration batches (shapes and sums) and layer names; a step after the model was changed is
    scored afresh. Only for one model: the caller keeps one memo per baseline.
    """

    def __init__(self) -> None:
        self._scores: dict[tuple, dict[str, torch.Tensor]] = {}

    def score(self, criterion: Any, model: nn.Module, layers: list, calib: list | None) -> dict[str, torch.Tensor]:
        """``criterion.score(model, layers, calib)`` of the unpruned ``model``, computed once."""
        batches = tuple((tuple(x.shape), float(x.double().sum()), float(torch.as_tensor(y).double().sum()))
                        for x, y in calib or [])  # a fingerprint: other batches are never read from these
        key = (criterion.name, json.dumps(criterion.opts, sort_keys=True, default=str), batches,
               tuple(layer.name for layer in layers))
        if key not in self._scores:
            self._scores[key] = criterion.score(model, layers, calib)
        return {name: s.clone() for name, s in self._scores[key].items()}


class _Memoised:
    """A criterion whose :meth:`score` reads a :class:`ScoreMemo` (everything else is the criterion's)."""

    def __init__(self, criterion: Any, memo: ScoreMemo) -> None:
        self._criterion, self._memo = criterion, memo

    def __getattr__(self, name: str) -> Any:
        return getattr(self._criterion, name)

    def score(self, model: nn.Module, layers: Any, calib: Any = None) -> dict[str, torch.Tensor]:
        return self._memo.score(self._criterion, model, list(layers), calib)


def _take(calib: Iterable | None, n: int) -> list | None:
    if calib is None:
        return None
    batches = []
    for batch in calib:
        if len(batches) == n:
            break
        batches.append(batch)
    return batches


def prune_model(
    model: nn.Module,
    config: HybridConfig,
    example_inputs: torch.Tensor,
    calib: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    memo: ScoreMemo | None = None,
) -> PruneResult:
    """Prune channels and residual blocks of a copy of ``model``.

    Deterministic for a given model, config and calibration data.

    Args:
        model: The model (not modified).
        config: What to prune.
        example_inputs: A batch of inputs of the right shape (for tracing).
        calib: (normalised inputs, labels) batches; the first ``config.calib_batches`` are used.
            Required by data-driven criteria.
        memo: Scores of ``model`` kept from earlier prunings of it (:class:`ScoreMemo`): the first
            step that scores, on the still unchanged copy, reads and fills it. Same result either way.

    Returns:
        A :class:`PruneResult`.

    Raises:
        ConfigError: if more blocks are asked for than the model (or a stage of it, with
            ``stage_blocks``) can lose, or a data-driven
            criterion gets no calibration data.
    """
    criterion = config.make_criterion()
    batches = _take(calib, config.calib_batches)
    if criterion.data_driven and not batches:
        raise ConfigError(
            f"criterion {config.criterion!r} is data-driven and needs calibration batches (calib=...)"
        )
    names = check_block_count(model, config.pruned_blocks, example_inputs)
    if config.stage_blocks is not None:
        check_stage_counts(names, config.stage_blocks)
    was_training = model.training
    new = copy.deepcopy(model)
    tracker = ChannelTracker(new)
    original = {n: channel_counts(m) for n, m in new.named_modules() if channel_counts(m) is not None}
    result = PruneResult(model=new, record=PruningRecord())

    def channels(criterion: Any) -> None:
        if config.channel_ratio > 0:
            result.removed_channels = prune_channels(
                new,
                example_inputs,
                criterion,
                tracker,
                ratio=config.channel_ratio,
                scope=config.scope,
                allocation=config.allocation,
                round_to=config.round_to,
                calib=batches,
            )

    def blocks(criterion: Any) -> None:
        if config.pruned_blocks > 0:
            names = check_block_count(new, config.pruned_blocks, example_inputs)
            scores = criterion.score(new, block_layers(new, names), batches)
            result.block_scores = {n: float(s.mean()) for n, s in scores.items()}
            if config.stage_blocks is None:
                result.removed_blocks = choose_blocks(scores, config.pruned_blocks)
            else:
                stages = check_stage_counts(names, config.stage_blocks)
                result.removed_blocks = choose_stage_blocks(scores, stages, config.stage_blocks)
            remove_blocks(new, result.removed_blocks, example_inputs)

    steps = (channels, blocks) if config.order == "channel_first" else (blocks, channels)
    unchanged = _Memoised(criterion, memo) if memo is not None else criterion
    for step in steps:
        before = (len(result.removed_channels), len(result.removed_blocks))
        step(unchanged)
        if (len(result.removed_channels), len(result.removed_blocks)) != before:  # the copy changed
            unchanged = criterion
    new.train(was_training)
    new.zero_grad(set_to_none=True)
    result.record = PruningRecord(
        removed_blocks=list(result.removed_blocks),
        channels=record_channels(new, tracker.changed(original), result.removed_blocks),
        config=config.to_dict(),
        base_model=getattr(model, "hp_model_name", None),
    )
    return result
