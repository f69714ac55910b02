"""Accuracy of a model on a split, and adaptive batch-norm re-estimation (the cheap first rung)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridprune.data import DeviceLoader, Split
from hybridprune.devices import autocast, resolve_device, resolve_precision
from hybridprune.errors import ConfigError, DataError
from hybridprune.models import Normalization


@dataclass(frozen=True)
class EvalResult:
    """Top-1/top-5 accuracy as fractions (top5 is None for <= 10 classes), mean loss, sample count."""

    top1: float
    top5: float | None
    loss: float
    n: int

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "loss": self.loss, "n": self.n}


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, normalization: Normalization, *, batch_size: int = 256,
             device: str | torch.device | None = None, precision: str = "auto",
             channels_last: bool | None = None) -> EvalResult:
    """Top-1 (and top-5 for > 10 classes) accuracy and mean cross-entropy of ``model`` on ``split``.

    Args:
        model: The network (evaluated in eval mode; its previous mode and contiguous weights are restored).
        split: The data.
        normalization: Mean/std the model expects.
        batch_size: Batch size.
        device: Device (default CUDA if available).
        precision: ``auto``, ``bf16`` or ``fp32`` as for :func:`train`; loss and argmax are computed
            on fp32 logits either way.
        channels_last: channels_last tensors (default: on CUDA, and whenever bf16 is on).

    Returns:
        :class:`EvalResult`.

    Raises:
        DataError: empty split, or labels beyond the model's outputs. ConfigError: bad precision.
    """
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    channels_last = (dev.type == "cuda" or prec == "bf16") if channels_last is None else channels_last
    was_training = model.training
    model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format).eval()
    loader = DeviceLoader(split, batch_size, normalization, device=dev, channels_last=channels_last)
    top1 = torch.zeros((), dtype=torch.long, device=dev)
    top5 = torch.zeros((), dtype=torch.long, device=dev)
    loss = torch.zeros((), device=dev)
    label_max = int(split.labels.max())
    try:
        for x, y in loader:
            with autocast(dev, prec):
                logits = model(x).float()
            if label_max >= logits.shape[1]:
                raise DataError(f"the split has label {label_max} but the model outputs only {logits.shape[1]} classes")
            loss += F.cross_entropy(logits, y, reduction="sum")
            top1 += (logits.argmax(1) == y).sum()
            if logits.shape[1] > 10:
                top5 += (logits.topk(5, dim=1).indices == y[:, None]).any(1).sum()
    finally:
        model.train(was_training)
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
    n = len(split)
    return EvalResult(
        top1=top1.item() / n, top5=top5.item() / n if logits.shape[1] > 10 else None, loss=loss.item() / n, n=n
    )


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, split: Split, normalization: Normalization, *, batches: int,
                    batch_size: int = 128, seed: int = 0, device: str | torch.device | None = None) -> int:
    """Re-estimate every BatchNorm's running statistics on ``batches`` training batches, nothing else.

    Adaptive batch-norm evaluation (Li et al., "EagleEye", ECCV 2020): after pruning, the stored
    statistics no longer match the thinner layers' activations; re-estimating them (forward passes
    only, no gradients, no optimizer) makes validation accuracy a seconds-cheap proxy of how well
    the pruned model will fine-tune. The running averages are reset and recomputed as a plain mean
    over the batches (``momentum=None``); weights and biases are untouched.

    Returns:
        The number of images seen.
    """
    from hybridprune.data import calibration_batches

    if not isinstance(batches, int) or batches < 1:
        raise ConfigError(f"batch-norm adaptation needs batches >= 1, got {batches!r}")
    dev = resolve_device(device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    seen = 0
    was_training = model.training
    model.to(dev).train()
    try:
        for x, _ in calibration_batches(split, normalization, batches, batch_size=batch_size, seed=seed, device=dev):
            model(x)
            seen += len(x)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return seen
