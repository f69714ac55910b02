"""Training, fine-tuning (optionally distilled) and evaluation: one flat, fast loop.

The data never leaves the device (:class:`~hybridprune.data.DeviceLoader`); on CUDA the loop runs
channels_last under bf16 autocast with cudnn.benchmark. SGD with Nesterov momentum, label
smoothing, and a warmup + cosine (or one-cycle) schedule stepped per batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridprune.data import DataSplits, DeviceLoader, Split
from hybridprune.errors import ConfigError, DataError, TrainingDiverged
from hybridprune.models import Normalization

SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True)
class Budget:
    """How long to train: ``epochs`` (may be fractional) or ``steps``, exactly one of them."""

    epochs: float | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ConfigError(f"a budget needs exactly one of epochs or steps, got epochs={self.epochs} steps={self.steps}")
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"budget epochs must be a positive number, got {self.epochs!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise ConfigError(f"budget steps must be a positive integer, got {self.steps!r}")

    def total_steps(self, steps_per_epoch: int) -> int:
        """Number of optimiser steps for an epoch of ``steps_per_epoch`` batches."""
        return self.steps if self.steps is not None else max(1, round(self.epochs * steps_per_epoch))


@dataclass(frozen=True)
class EvalResult:
    """Top-1/top-5 accuracy as fractions (top5 is None for <= 10 classes), mean loss, sample count."""

    top1: float
    top5: float | None
    loss: float
    n: int

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "loss": self.loss, "n": self.n}


@dataclass(frozen=True)
class StepInfo:
    """Progress of one training step, handed to the ``progress`` callback."""

    step: int
    total_steps: int
    loss: float
    accuracy: float
    images_per_second: float
    lr: float


@dataclass(frozen=True)
class TrainResult:
    """What a training run did. ``val`` is the validation evaluation at the end (None if no val split)."""

    steps: int
    epochs: float
    train_loss: float
    train_accuracy: float
    images_per_second: float
    seconds: float
    val: EvalResult | None = None

    def to_dict(self) -> dict:
        return {"steps": self.steps, "epochs": self.epochs, "train_loss": self.train_loss,
                "train_accuracy": self.train_accuracy, "images_per_second": self.images_per_second,
                "seconds": self.seconds, "val": self.val.to_dict() if self.val else None}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def _lr_factor(schedule: str, warmup_steps: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        t = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else max(0.0, 1.0 - t)

    return factor


def _check_classes(model: nn.Module, x: torch.Tensor, num_classes: int | None, labels: torch.Tensor) -> None:
    with torch.no_grad():
        out = model(x[:1]).shape[-1]
    wanted = num_classes if num_classes is not None else int(labels.max()) + 1
    if (num_classes is not None and out != num_classes) or wanted > out:
        raise DataError(f"the model outputs {out} classes but the dataset has {wanted}; use a model built for {wanted} classes")


def train(model: nn.Module, data: DataSplits | Split, budget: Budget, normalization: Normalization, *,
          lr: float = 0.1, batch_size: int = 128, seed: int = 0, device: str | torch.device | None = None,
          momentum: float = 0.9, weight_decay: float = 5e-4, label_smoothing: float = 0.1,
          schedule: str = "onecycle", warmup: float = 0.1, teacher: nn.Module | None = None,
          temperature: float = 4.0, distill_weight: float = 0.5, compile: bool = False,
          channels_last: bool | None = None, evaluate_val: bool = True,
          progress: Callable[[StepInfo], None] | None = None) -> TrainResult:
    """Train ``model`` in place with SGD (Nesterov) on ``data``.

    Args:
        model: The network; moved to ``device`` and left in eval mode there.
        data: A :class:`DataSplits` (trains on ``train``, evaluates ``val`` at the end) or a :class:`Split`.
        budget: Epochs or steps.
        normalization: Mean/std the model expects.
        lr: Peak learning rate.
        batch_size: Batch size.
        seed: Seeds shuffling, augmentation and anything random in the model; same seed, same numbers on CPU.
        device: Training device (default CUDA if available).
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 weight decay.
        label_smoothing: Cross-entropy label smoothing.
        schedule: ``onecycle`` (linear warmup, linear decay), ``cosine`` (warmup, cosine decay) or ``constant``.
        warmup: Fraction of the steps spent warming up.
        teacher: If given, also distil from its softened outputs (knowledge distillation).
        temperature: Distillation temperature.
        distill_weight: Weight of the distillation loss; the hard-label loss gets ``1 - distill_weight``.
        compile: Run the step through ``torch.compile``.
        channels_last: Use channels_last tensors (default: on CUDA only).
        evaluate_val: Evaluate the validation split at the end (when ``data`` has one).
        progress: Called after every step with a :class:`StepInfo`.

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDiverged: as soon as the loss is NaN or infinite.
        ConfigError: bad hyper-parameters. DataError: dataset classes do not match the model.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if not (lr > 0 and 0 <= warmup < 1 and 0 <= distill_weight <= 1 and temperature > 0 and 0 <= label_smoothing < 1):
        raise ConfigError("need lr > 0, 0 <= warmup < 1, 0 <= distill_weight <= 1, temperature > 0, 0 <= label_smoothing < 1")
    splits = data if isinstance(data, DataSplits) else None
    train_split = splits.train if splits else data
    dev = resolve_device(device)
    channels_last = dev.type == "cuda" if channels_last is None else channels_last
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)

    loader = DeviceLoader(train_split, batch_size, normalization, device=dev, train=True, seed=seed,
                          drop_last=True, channels_last=channels_last)
    total = budget.total_steps(len(loader))
    model.to(dev, memory_format=fmt)
    if teacher is not None:
        teacher.to(dev, memory_format=fmt).eval()
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=lr, momentum=momentum, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(schedule, round(warmup * total), total))
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def step_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _autocast(dev):
            logits = model(x)
            loss = criterion(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    soft = F.log_softmax(teacher(x).float() / temperature, dim=1)
                kd = F.kl_div(F.log_softmax(logits.float() / temperature, dim=1), soft, reduction="batchmean", log_target=True)
                loss = (1 - distill_weight) * loss + distill_weight * temperature**2 * kd
        return loss, logits

    step = torch.compile(step_fn) if compile else step_fn
    checked = False
    done = 0
    loss_sum = correct = seen = 0.0
    start = timed_from = time.perf_counter()
    timed_images = 0
    model.train()
    try:
        while done < total:
            for x, y in loader:
                if not checked:
                    model.eval()
                    _check_classes(model, x, splits.num_classes if splits else None, train_split.labels)
                    model.train()
                    checked = True
                loss, logits = step(x, y)
                loss_val = loss.item()
                if not math.isfinite(loss_val):
                    raise TrainingDiverged(f"training loss became {loss_val} at step {done + 1} of {total} (lr {scheduler.get_last_lr()[0]:.4g}); lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                done += 1
                hits = (logits.argmax(1) == y).sum().item()
                loss_sum += loss_val * len(y)
                correct += hits
                seen += len(y)
                now = time.perf_counter()
                if done == 1:
                    timed_from = now  # the first step pays for warm-up (allocations, cudnn search, compile)
                else:
                    timed_images += len(y)
                if progress is not None:
                    progress(StepInfo(done, total, loss_val, hits / len(y), timed_images / max(now - timed_from, 1e-9),
                                      scheduler.get_last_lr()[0]))
                if done >= total:
                    break
    finally:
        model.eval()
    loop_end = time.perf_counter()
    val = None
    if evaluate_val and splits is not None and len(splits.val):
        val = evaluate(model, splits.val, normalization, device=dev)
    ips = timed_images / max(loop_end - timed_from, 1e-9) if timed_images else seen / max(loop_end - start, 1e-9)
    return TrainResult(steps=done, epochs=done / len(loader), train_loss=loss_sum / max(seen, 1),
                       train_accuracy=correct / max(seen, 1), images_per_second=ips, seconds=loop_end - start, val=val)


def finetune(model: nn.Module, data: DataSplits | Split, budget: Budget, normalization: Normalization, *,
             teacher: nn.Module | None = None, temperature: float = 4.0, distill_weight: float = 0.5,
             lr: float = 0.01, schedule: str = "cosine", warmup: float = 0.0, label_smoothing: float = 0.0,
             **kwargs) -> TrainResult:
    """Briefly fine-tune a (pruned) model, optionally distilling from ``teacher`` (the unpruned model).

    Args:
        model: The network, trained in place.
        data: Splits or a split, as for :func:`train`.
        budget: Epochs or steps.
        normalization: Mean/std the model expects.
        teacher: Unpruned model to distil from, or None for plain fine-tuning.
        temperature: Distillation temperature.
        distill_weight: Weight of the distillation term.
        lr: Peak learning rate (smaller than from-scratch training).
        schedule: LR schedule (default cosine decay, no warmup).
        warmup: Warmup fraction.
        label_smoothing: Label smoothing of the hard-label loss.
        **kwargs: Anything else :func:`train` takes (batch_size, seed, device, ...).

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDiverged, ConfigError, DataError: as :func:`train`.
    """
    return train(model, data, budget, normalization, teacher=teacher, temperature=temperature,
                 distill_weight=distill_weight if teacher is not None else 0.0, lr=lr, schedule=schedule,
                 warmup=warmup, label_smoothing=label_smoothing, **kwargs)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, normalization: Normalization, *, batch_size: int = 256,
             device: str | torch.device | None = None, channels_last: bool | None = None) -> EvalResult:
    """Top-1 (and top-5 for > 10 classes) accuracy and mean cross-entropy of ``model`` on ``split``.

    Args:
        model: The network (evaluated in eval mode; its previous mode is restored).
        split: The data.
        normalization: Mean/std the model expects.
        batch_size: Batch size.
        device: Device (default CUDA if available).
        channels_last: channels_last tensors (default: on CUDA only).

    Returns:
        :class:`EvalResult`.

    Raises:
        DataError: empty split, or labels beyond the model's outputs.
    """
    dev = resolve_device(device)
    channels_last = dev.type == "cuda" if channels_last is None else channels_last
    was_training = model.training
    model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format).eval()
    loader = DeviceLoader(split, batch_size, normalization, device=dev, channels_last=channels_last)
    top1 = top5 = 0
    loss = 0.0
    try:
        for x, y in loader:
            with _autocast(dev):
                logits = model(x).float()
            if int(y.max()) >= logits.shape[1]:
                raise DataError(f"the split has label {int(y.max())} but the model outputs only {logits.shape[1]} classes")
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            top1 += (logits.argmax(1) == y).sum().item()
            if logits.shape[1] > 10:
                top5 += (logits.topk(5, dim=1).indices == y[:, None]).any(1).sum().item()
    finally:
        model.train(was_training)
    n = len(split)
    return EvalResult(top1=top1 / n, top5=top5 / n if logits.shape[1] > 10 else None, loss=loss / n, n=n)
