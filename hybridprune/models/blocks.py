"""Residual block detection: which submodules of a model are removable residual blocks.

A *removable block* is a submodule whose output is its own input plus a branch of the same shape,
``y = x + f(x)``, optionally followed by an element-wise activation (``y = relu(x + f(x))``).
Replacing it by ``x -> x`` keeps every shape downstream valid, so the network still runs and a
short fine-tune recovers the accuracy. Blocks are found by structure, not by class name: one
forward pass with autograd records, for every submodule, the graph node of its input and of its
output; a submodule is a block when walking back from its output through element-wise
activations reaches an addition one of whose operands *is* the submodule's input (the identity
shortcut) and whose other operand, of the same shape, is computed from that input by layers of
the submodule (the branch). That covers CIFAR ResNet and torchvision BasicBlock/Bottleneck blocks
with an identity shortcut, MobileNetV2 stride-1 inverted residuals and user-written blocks alike.
Blocks whose shortcut projects, pads or subsamples (stride or width changes) are not removable:
their input and output differ.

The trace needs an example input: ``example_inputs``, else ``model.hp_input_size`` (set by
:func:`~hybridprune.models.create_model` and checkpoint loading), else 3x32x32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from hybridprune.errors import ConfigError
from hybridprune.models.resnet_cifar import BasicBlock as CifarBasicBlock

TORCHVISION_BLOCKS = ("BasicBlock", "Bottleneck")
# Element-wise activations allowed between the residual addition and the block's output.
ACTIVATIONS = (
    "ReluBackward", "HardtanhBackward", "LeakyReluBackward", "GeluBackward", "SiluBackward", "EluBackward",
    "HardswishBackward", "SigmoidBackward", "TanhBackward", "MishBackward", "PreluKernelBackward",
)
_ADDS = {torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__radd__,
         torch.Tensor.__iadd__}


@dataclass(frozen=True)
class ResidualBlock:
    """A removable residual block found by :func:`find_blocks`.

    Attributes:
        name: Qualified module name (``layer1.3``, ``features.5``).
        channels: Channels of its input and output (the residual stream).
        convs: ``(name, out_channels)`` of every conv inside it, in module order.
    """

    name: str
    channels: int
    convs: tuple[tuple[str, int], ...]


class _AddShapes(TorchFunctionMode):
    """Records the operand shapes of every addition, keyed by the autograd node it creates."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[object, list[tuple[int, ...]]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _ADDS and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            self.shapes[out.grad_fn] = [tuple(a.shape) for a in args[:2] if isinstance(a, torch.Tensor)]
        return out


def _example(model: nn.Module, example_inputs: torch.Tensor | None) -> torch.Tensor:
    if example_inputs is not None:
        return example_inputs[:1]
    size = getattr(model, "hp_input_size", None)
    if size is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        size = (first.in_channels if first is not None else 3, 32, 32)
    p = next(model.parameters(), None)
    return torch.zeros(1, *size, device=p.device if p is not None else "cpu")


def _reaches(node, target, limit: int = 100_000) -> bool:
    """Whether ``target`` is an ancestor of (or is) ``node`` in the autograd graph."""
    seen, stack = set(), [node]
    while stack and len(seen) < limit:
        n = stack.pop()
        if n is target:
            return True
        if n is None or n in seen:
            continue
        seen.add(n)
        stack.extend(nxt for nxt, _ in n.next_functions)
    return False


def _is_residual(in_node, out_node, shapes: dict) -> bool:
    node = out_node
    while node is not None and type(node).__name__.rstrip("0123456789") in ACTIVATIONS:
        parents = [n for n, _ in node.next_functions if n is not None]
        if len(parents) != 1:
            return False
        node = parents[0]
    if node is None or type(node).__name__ != "AddBackward0" or node not in shapes:
        return False
    arms = [n for n, _ in node.next_functions]
    operand_shapes = shapes[node]
    if len(arms) != 2 or len(operand_shapes) != 2 or operand_shapes[0] != operand_shapes[1]:
        return False
    for i in (0, 1):
        if arms[i] is in_node and arms[1 - i] is not in_node and arms[1 - i] is not None:
            return _reaches(arms[1 - i], in_node)
    return False


def find_blocks(model: nn.Module, example_inputs: torch.Tensor | None = None) -> list[ResidualBlock]:
    """All removable residual blocks of ``model``, in module order (see the module docstring).

    Args:
        model: Any module (it is run once, in eval mode, on one example; its mode is restored).
        example_inputs: An input batch of the right shape (only the first sample is used).

    Returns:
        The blocks; a block nested in another block-shaped module of the same input and output
        (``nn.Sequential(block)``) is reported once, as the innermost.

    Raises:
        ConfigError: if the model cannot run on the example input.
    """
    x = _example(model, example_inputs).detach().clone().requires_grad_(True)
    seen_in: dict[nn.Module, object] = {}
    seen_out: dict[nn.Module, tuple[object, tuple[int, ...]]] = {}

    def pre(module, args):
        if module not in seen_in and len(args) == 1 and isinstance(args[0], torch.Tensor):
            seen_in[module] = (args[0].grad_fn, tuple(args[0].shape))

    def post(module, args, output):
        if module not in seen_out and isinstance(output, torch.Tensor):
            seen_out[module] = (output.grad_fn, tuple(output.shape))

    names = {m: n for n, m in model.named_modules()}
    handles = []
    for m in names:
        if m is not model and any(True for _ in m.parameters()):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    was_training = model.training
    mode = _AddShapes()
    try:
        model.eval()
        with torch.enable_grad(), mode:
            model(x * 1.0)
    except Exception as exc:
        raise ConfigError(
            f"cannot trace the model to find residual blocks on a {tuple(x.shape)} input: "
            f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        ) from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    found: dict[tuple[object, object], str] = {}
    for m, name in names.items():
        if m not in seen_in or m not in seen_out:
            continue
        (in_node, in_shape), (out_node, out_shape) = seen_in[m], seen_out[m]
        if in_shape == out_shape and in_node is not None and _is_residual(in_node, out_node, mode.shapes):
            found[(in_node, out_node)] = name  # named_modules is outer-first: the innermost wins
    blocks = []
    for (_, _), name in sorted(found.items(), key=lambda kv: list(names.values()).index(kv[1])):
        block = model.get_submodule(name)
        convs = tuple(
            (f"{name}.{n}", int(c.out_channels)) for n, c in block.named_modules() if isinstance(c, nn.Conv2d)
        )
        blocks.append(ResidualBlock(name, int(seen_in[block][1][1]) if len(seen_in[block][1]) > 1 else 0, convs))
    return blocks


def removable_blocks(model: nn.Module, example_inputs: torch.Tensor | None = None) -> list[str]:
    """Qualified names of the residual blocks that can be removed (e.g. ``"layer1.3"``).

    Args:
        model: Any module; models without residual blocks give ``[]``.
        example_inputs: An input batch (default: from ``model.hp_input_size``, else 3x32x32).

    Returns:
        Names in module order.
    """
    return [b.name for b in find_blocks(model, example_inputs)]


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Residual blocks by class (CIFAR/torchvision BasicBlock, Bottleneck), removable or not.

    Used for the per-stage architecture summary of ResNets; pruning uses :func:`find_blocks`.
    """
    out = []
    for name, m in model.named_modules():
        if isinstance(m, CifarBasicBlock):
            out.append((name, m))
        elif type(m).__name__ in TORCHVISION_BLOCKS and hasattr(m, "downsample") and hasattr(m, "conv1"):
            out.append((name, m))
    return out
