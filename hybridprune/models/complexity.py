"""Model complexity: parameters and multiply-accumulates (fvcore), and a readable architecture.

fvcore's ``FlopCountAnalysis`` counts one unit per multiply-add of convolutions, linear layers and
matrix products, i.e. MACs. As in the pruning literature (ResNet-56: 125.5M MACs), element-wise
work (BatchNorm, pooling, additions) and ops without arithmetic (the option-A shortcut's padding
and index copy) are not counted.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn

from hybridprune.errors import ConfigError
from hybridprune.models.blocks import residual_blocks

# fvcore handles these by default; they are element-wise, not multiply-accumulates.
ELEMENTWISE_OPS = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)


@dataclass(frozen=True)
class Complexity:
    """Size of a model.

    Attributes:
        params: Number of parameters.
        macs: Multiply-accumulates of one forward pass of one image.
    """

    params: int
    macs: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def complexity(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32)) -> Complexity:
    """Parameters and MACs of ``model`` for one input of ``input_size``.

    Args:
        model: Any module (run once in eval mode on zeros; its mode is restored).
        input_size: (C, H, W).

    Returns:
        A :class:`Complexity`.

    Raises:
        ConfigError: if ``input_size`` is not three positive integers.
    """
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    if len(tuple(input_size)) != 3 or any(int(v) <= 0 for v in input_size):
        raise ConfigError(f"input_size must be (C, H, W) with positive sizes, got {tuple(input_size)}")
    param = next(iter(model.parameters()), None)
    x = torch.zeros(1, *[int(v) for v in input_size], device=param.device if param is not None else "cpu")
    was = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            flops = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            handles = {op: h for op, h in _DEFAULT_SUPPORTED_OPS.items() if op not in ELEMENTWISE_OPS}
            flops.clear_op_handles().set_op_handle(**handles)
            macs = int(flops.total())
    finally:
        model.train(was)
    return Complexity(params=count_params(model), macs=macs)


def describe_architecture(model: nn.Module) -> dict[str, Any]:
    """Blocks kept per stage and per-stage widths.

    For models with residual blocks (CIFAR or torchvision ResNets) each stage is the container
    holding blocks (``layer1``...): ``blocks`` kept / ``total`` (removed ones are identities),
    ``stream`` (residual-stream width: output channels of the stage's last conv-producing block),
    and ``internal`` (output widths of each kept block's first conv). Other models get
    ``{"stages": {}, "convs": [...out channels of each conv]}``.

    Args:
        model: Any module.

    Returns:
        ``{"stages": {stage: {"blocks", "total", "stream", "internal"}}, "blocks": int,
        "convs": list[int]}``.
    """
    stages: dict[str, dict[str, Any]] = {}
    containers = {}
    for name, block in residual_blocks(model):
        parent = name.rpartition(".")[0]
        containers[parent] = model.get_submodule(parent) if parent else model
        st = stages.setdefault(parent, {"blocks": 0, "total": 0, "stream": None, "internal": []})
        st["blocks"] += 1
        st["internal"].append(int(block.conv1.out_channels))
        last = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)][-1]
        st["stream"] = int(last.num_features)
    for parent, container in containers.items():
        stages[parent]["total"] = len(list(container.children()))  # removed blocks are identities
    convs = [int(m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    return {"stages": stages, "blocks": sum(s["blocks"] for s in stages.values()), "convs": convs}
