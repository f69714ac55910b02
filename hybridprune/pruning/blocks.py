"""Block (layer) pruning: score removable residual blocks and replace the chosen ones by identity.

Which blocks are removable is a property of the model's structure and is found by
:func:`hybridprune.models.blocks.find_blocks`; this module decides which of them to remove.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from hybridprune.errors import ConfigError
from hybridprune.models.blocks import removable_blocks
from hybridprune.pruning.criteria.base import ScoredLayer


def check_block_count(model: nn.Module, k: int, example_inputs: torch.Tensor | None = None) -> list[str]:
    """Return the removable blocks, or raise if ``k`` of them cannot be removed.

    Raises:
        ConfigError: naming the allowed range.
    """
    names = removable_blocks(model, example_inputs)
    if k > len(names):
        raise ConfigError(
            f"pruned_blocks={k} is out of range: this model has {len(names)} removable residual blocks, "
            f"allowed 0..{len(names)}"
        )
    return names


def block_layers(model: nn.Module, names: list[str]) -> list[ScoredLayer]:
    """The layers whose scores rate each block: its first conv (+ the BatchNorm after it), named by block.

    Raises:
        ConfigError: for a block without a convolution (nothing to score).
    """
    out = []
    for n in names:
        block = model.get_submodule(n)
        mods = list(block.modules())
        conv = next((m for m in mods if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        if conv is None:
            raise ConfigError(f"residual block {n} has no conv or linear layer to score it by")
        width = conv.out_channels if isinstance(conv, nn.Conv2d) else conv.out_features
        after = mods[mods.index(conv) + 1:]
        norm = next(
            (m for m in after if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_features == width), None
        )
        out.append(ScoredLayer(name=n, producer=conv, norm=norm))
    return out


def choose_blocks(scores: dict[str, torch.Tensor], k: int) -> list[str]:
    """The ``k`` blocks with the lowest mean channel score (ties: earlier block first).

    Args:
        scores: Block name -> per-channel scores of its first conv.
        k: How many to remove.

    Returns:
        Names, in model order.
    """
    order = list(scores)
    means = {n: float(scores[n].double().mean()) for n in order}
    ranked = sorted(order, key=lambda n: (means[n], order.index(n)))
    chosen = set(ranked[:k])
    return [n for n in order if n in chosen]


def block_stages(names: list[str]) -> list[list[str]]:
    """Removable blocks grouped by parent module (a ResNet's stages), in model order."""
    stages: dict[str, list[str]] = {}
    for n in names:
        stages.setdefault(n.rpartition(".")[0], []).append(n)
    return list(stages.values())


def check_stage_counts(names: list[str], counts: tuple[int, ...]) -> list[list[str]]:
    """Return the stages of ``names``, or raise if ``counts`` does not fit them.

    Raises:
        ConfigError: naming the stages and how many blocks each can lose.
    """
    stages = block_stages(names)
    sizes = ", ".join(f"{s[0].rpartition('.')[0] or '<top>'}: 0..{len(s)}" for s in stages)
    if len(counts) != len(stages) or any(c > len(s) for c, s in zip(counts, stages)):
        raise ConfigError(f"stage_blocks={list(counts)} does not fit this model: it has {len(stages)} stage(s) "
                          f"of removable residual blocks, allowed {sizes}")
    return stages


def choose_stage_blocks(scores: dict[str, torch.Tensor], stages: list[list[str]],
                        counts: tuple[int, ...]) -> list[str]:
    """``counts[i]`` blocks of stage ``i`` with the lowest mean channel score, each stage ranked
    on its own (a block's latency and its score's scale differ by stage); names in model order."""
    chosen = set()
    for stage, k in zip(stages, counts):
        chosen.update(choose_blocks({n: scores[n] for n in stage}, k))
    return [n for n in scores if n in chosen]


def remove_blocks(model: nn.Module, names: list[str], example_inputs: torch.Tensor | None = None) -> None:
    """Replace the named blocks by :class:`nn.Identity`, in place.

    Raises:
        ConfigError: if a name is not a removable block of ``model``.
    """
    if not names:
        return
    allowed = set(removable_blocks(model, example_inputs))
    for name in names:
        if name not in allowed:
            raise ConfigError(
                f"block {name!r} is not a removable residual block of this model; removable: "
                f"{', '.join(sorted(allowed)) or 'none'}"
            )
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
