"""The pruning record: enough to rebuild a pruned architecture from its base model.

A record lists the removed residual blocks and, for every layer whose channels changed, the
original indices of the channels it kept (``out`` and/or ``in``). Option-A shortcuts also store
their resulting routing for readability; it is re-derived from the base model and checked.
Applying the record to a fresh base model and then loading the pruned state_dict strictly
reproduces the pruned model exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from hybridprune.errors import CheckpointError, ConfigError
from hybridprune.models.resnet_cifar import ZeroPadShortcut
from hybridprune.pruning.graph import channel_counts, is_depthwise

RECORD_VERSION = 1


@dataclass
class PruningRecord:
    """What was pruned, JSON-serialisable through :meth:`to_dict`.

    Attributes:
        removed_blocks: Qualified names of residual blocks replaced by identity.
        channels: Layer name -> ``{"out": kept indices, "in": kept indices}`` (original indices;
            only changed dimensions; shortcuts also carry ``positions`` and ``route``).
        config: The :class:`HybridConfig` as a dict, for reference.
        base_model: Registry name of the base architecture, when known.
    """

    removed_blocks: list[str] = field(default_factory=list)
    channels: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    base_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists/ints/strings (JSON- and ``weights_only``-safe)."""
        return {
            "version": RECORD_VERSION,
            "base_model": self.base_model,
            "removed_blocks": list(self.removed_blocks),
            "channels": {k: {d: [int(i) for i in v] for d, v in dims.items()} for k, dims in self.channels.items()},
            "config": dict(self.config) if self.config is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruningRecord":
        """Parse a dict written by :meth:`to_dict`.

        Raises:
            CheckpointError: if it is not a pruning record of a known version.
        """
        if not isinstance(d, dict) or d.get("version") != RECORD_VERSION:
            raise CheckpointError(
                f"pruning record must be a dict with version {RECORD_VERSION}; got "
                f"{d.get('version') if isinstance(d, dict) else type(d).__name__!r}"
            )
        blocks, channels = d.get("removed_blocks", []), d.get("channels", {})
        if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
            raise CheckpointError("pruning record: removed_blocks must be a list of block names")
        if not isinstance(channels, dict) or not all(
            isinstance(v, dict) and all(isinstance(x, list) for x in v.values()) for v in channels.values()
        ):
            raise CheckpointError("pruning record: channels must map layer names to {'out'/'in': [indices]}")
        return cls(
            list(blocks),
            {k: {dd: list(x) for dd, x in v.items()} for k, v in channels.items()},
            d.get("config"),
            d.get("base_model"),
        )

    def summary(self) -> str:
        """One line: removed blocks and number of layers with pruned channels."""
        blocks = ", ".join(self.removed_blocks) or "none"
        return f"removed blocks: {blocks}; layers with pruned channels: {len(self.channels)}"


def shortcut_routing(base_positions: list[int], kept_in: list[int], kept_out: list[int]) -> tuple[list[int], list[int]]:
    """Route and positions of a pruned option-A shortcut.

    Args:
        base_positions: Unpruned mapping, input channel i -> output channel.
        kept_in: Kept input channels (original indices).
        kept_out: Kept output channels (original indices).

    Returns:
        ``(route, positions)``: current input channels that still land somewhere, and where.
    """
    where = {o: j for j, o in enumerate(kept_out)}
    route, positions = [], []
    for j, i in enumerate(kept_in):
        if base_positions[i] in where:
            route.append(j)
            positions.append(where[base_positions[i]])
    return route, positions


def _index(kept: list[int], n: int, name: str, dim: str) -> torch.Tensor:
    if (
        not kept
        or any(isinstance(i, bool) or not isinstance(i, int) for i in kept)
        or sorted(set(kept)) != kept
        or kept[0] < 0
        or kept[-1] >= n
    ):
        raise CheckpointError(
            f"pruning record does not fit the model: {name}.{dim} must be increasing indices in [0, {n}), "
            f"got {kept[:8]}"
        )
    return torch.tensor(kept, dtype=torch.long)


def _slice_param(module: nn.Module, attr: str, idx: torch.Tensor, dim: int) -> None:
    t = getattr(module, attr, None)
    if t is None:
        return
    new = torch.index_select(t.data, dim, idx.to(t.device)).clone()
    if isinstance(t, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=t.requires_grad))
    else:
        setattr(module, attr, new)


def _slice_io(m: nn.Module, out: torch.Tensor | None, inp: torch.Tensor | None, out_attr: str, in_attr: str) -> None:
    """Keep output rows / input columns of a conv or linear layer (groups == 1)."""
    if out is not None:
        _slice_param(m, "weight", out, 0)
        _slice_param(m, "bias", out, 0)
        setattr(m, out_attr, len(out))
    if inp is not None:
        _slice_param(m, "weight", inp, 1)
        setattr(m, in_attr, len(inp))


def _apply_layer(name: str, m: nn.Module, dims: dict[str, list[int]]) -> None:
    counts = channel_counts(m)
    if counts is None:
        raise CheckpointError(f"pruning record names {name}, a {type(m).__name__}, which has no prunable channels")
    extra = set(dims) - set(counts) - ({"positions", "route"} if isinstance(m, ZeroPadShortcut) else set())
    if extra:
        raise CheckpointError(f"pruning record: {name} ({type(m).__name__}) has no dimension(s) {sorted(extra)}")
    out = _index(dims["out"], counts["out"], name, "out") if "out" in dims else None
    inp = _index(dims["in"], counts["in"], name, "in") if "in" in dims else None
    if isinstance(m, ZeroPadShortcut):
        kept_in = dims.get("in", list(range(m.n_in)))
        kept_out = dims.get("out", list(range(m.out_channels)))
        route, positions = shortcut_routing(m.positions.tolist(), kept_in, kept_out)
        for key, val in (("route", route), ("positions", positions)):
            if key in dims and dims[key] != val:
                raise CheckpointError(f"pruning record: {name}.{key} {dims[key][:8]} does not match the base model")
        dev = m.positions.device
        m.route = torch.tensor(route, dtype=torch.long, device=dev)
        m.positions = torch.tensor(positions, dtype=torch.long, device=dev)
        m.n_in, m.out_channels = len(kept_in), len(kept_out)
    elif isinstance(m, nn.Conv2d):
        if is_depthwise(m) or m.groups > 1:
            if not is_depthwise(m) or (out is not None and inp is not None and not torch.equal(out, inp)):
                raise CheckpointError(
                    f"pruning record: grouped conv {name} can only be pruned as depthwise (in == out)"
                )
            idx = out if out is not None else inp
            _slice_param(m, "weight", idx, 0)
            _slice_param(m, "bias", idx, 0)
            m.out_channels = m.in_channels = m.groups = len(idx)
            return
        _slice_io(m, out, inp, "out_channels", "in_channels")
    elif isinstance(m, nn.Linear):
        _slice_io(m, out, inp, "out_features", "in_features")
    else:  # BatchNorm
        for attr in ("weight", "bias", "running_mean", "running_var"):
            _slice_param(m, attr, out, 0)
        m.num_features = len(out)


def apply_record(model: nn.Module, record: dict[str, Any] | PruningRecord) -> nn.Module:
    """Rebuild a pruned architecture from its fresh base model, in place.

    Args:
        model: A fresh (unpruned) instance of the base architecture.
        record: ``PruningRecord.to_dict()`` output (or the record itself).

    Returns:
        ``model``, pruned (weights of kept channels are the base model's; load the pruned
        state_dict afterwards).

    Raises:
        CheckpointError: if the record is malformed or does not fit the model.
    """
    from hybridprune.pruning.blocks import remove_blocks

    rec = record if isinstance(record, PruningRecord) else PruningRecord.from_dict(record)
    try:
        remove_blocks(model, rec.removed_blocks)
    except ConfigError as exc:
        raise CheckpointError(f"pruning record does not fit the model: {exc}") from None
    modules = dict(model.named_modules())
    for name, dims in rec.channels.items():
        if name not in modules:
            raise CheckpointError(f"pruning record names layer {name!r}, which the model does not have")
        _apply_layer(name, modules[name], dims)
    return model


def record_channels(
    model: nn.Module, kept: dict[str, dict[str, list[int]]], removed_blocks: list[str]
) -> dict[str, dict[str, list[int]]]:
    """Record entries for a pruned model: kept indices, minus layers in removed blocks, plus routing."""
    gone = tuple(b + "." for b in removed_blocks)
    modules = dict(model.named_modules())
    out = {}
    for name, dims in kept.items():
        if name.startswith(gone) or name in removed_blocks:
            continue
        entry = {d: list(v) for d, v in dims.items()}
        m = modules.get(name)
        if isinstance(m, ZeroPadShortcut):
            entry["route"] = m.route.tolist()
            entry["positions"] = m.positions.tolist()
        out[name] = entry
    return out
