"""Block (layer) pruning: find removable residual blocks, score them, replace them by identity.

A *removable block* is a residual block whose input and output have the same shape, so that
``x -> x`` is a valid replacement: CIFAR ResNet BasicBlocks with an identity shortcut, torchvision
BasicBlock/Bottleneck with ``downsample is None``. Blocks that change stride or width are kept.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from hybridprune.errors import ConfigError
from hybridprune.models.resnet_cifar import BasicBlock as CifarBasicBlock
from hybridprune.pruning.criteria.base import ScoredLayer

TORCHVISION_BLOCKS = ("BasicBlock", "Bottleneck")


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All residual blocks still in ``model`` (qualified name, module), in model order."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, CifarBasicBlock):
            out.append((name, m))
        elif type(m).__name__ in TORCHVISION_BLOCKS and hasattr(m, "downsample") and hasattr(m, "conv1"):
            out.append((name, m))
    return out


def is_removable(block: nn.Module) -> bool:
    """True when the block's input and output shapes are equal (identity shortcut, stride 1)."""
    if isinstance(block, CifarBasicBlock):
        return isinstance(block.shortcut, nn.Identity) and block.conv1.stride == (1, 1)
    return getattr(block, "downsample", 1) is None and all(
        getattr(c, "stride", (1, 1)) == (1, 1) for c in block.modules() if isinstance(c, nn.Conv2d)
    )


def removable_blocks(model: nn.Module) -> list[str]:
    """Qualified names of the residual blocks that can be removed (e.g. ``"layer1.3"``).

    Args:
        model: Any module; models without residual blocks give ``[]``.

    Returns:
        Names in model order.
    """
    return [n for n, m in residual_blocks(model) if is_removable(m)]


def check_block_count(model: nn.Module, k: int) -> list[str]:
    """Return the removable blocks, or raise if ``k`` of them cannot be removed.

    Raises:
        ConfigError: naming the allowed range.
    """
    names = removable_blocks(model)
    if k > len(names):
        raise ConfigError(
            f"pruned_blocks={k} is out of range: this model has {len(names)} removable residual blocks, "
            f"allowed 0..{len(names)}"
        )
    return names


def block_layers(model: nn.Module, names: list[str]) -> list[ScoredLayer]:
    """The layers whose scores rate each block: its first conv (+ BatchNorm), named by block."""
    mods = dict(model.named_modules())
    return [ScoredLayer(name=n, producer=mods[n].conv1, norm=getattr(mods[n], "bn1", None)) for n in names]


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


def remove_blocks(model: nn.Module, names: list[str]) -> None:
    """Replace the named blocks by :class:`nn.Identity`, in place.

    Raises:
        ConfigError: if a name is not a removable block of ``model``.
    """
    allowed = set(removable_blocks(model))
    for name in names:
        if name not in allowed:
            raise ConfigError(
                f"block {name!r} is not a removable residual block of this model; removable: "
                f"{', '.join(sorted(allowed)) or 'none'}"
            )
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
