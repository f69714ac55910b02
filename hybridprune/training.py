"""Training and fine-tuning (optionally distilled): one flat, fast loop.

The data never leaves the device (:class:`~hybridprune.data.DeviceLoader`). Where the hardware
computes bf16 natively (CUDA, CPUs with AVX512-BF16 or AMX) the loop runs channels_last under bf16
autocast (``precision="auto"``); cudnn.benchmark on CUDA. SGD with Nesterov momentum, label
smoothing, and a warmup + cosine (or one-cycle) schedule stepped per batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridprune.accuracy import EvalResult, evaluate
from hybridprune.data import DataSplits, DeviceLoader, Split
from hybridprune.devices import autocast, fixed_layout, resolve_device, resolve_precision
from hybridprune.errors import DataError, TrainingDiverged
from hybridprune.models import Normalization
from hybridprune.recipe import FINETUNE, FROM_SCRATCH, PRECISIONS, SCHEDULES, Budget, TrainRecipe  # noqa: F401 - SCHEDULES re-exported


class StepInfo:
    """Progress of one training step, handed to the ``progress`` callback.

    Making one costs no device sync: ``loss`` (mean over the batch) and ``accuracy`` (fraction of
    the batch) are read from the device only when asked for, so a callback that looks at them every
    few steps does not stall a GPU on the others.
    """

    __slots__ = ("step", "total_steps", "images_per_second", "lr", "_loss", "_accuracy")

    def __init__(self, step: int, total_steps: int, loss: float | torch.Tensor, accuracy: float | torch.Tensor,
                 images_per_second: float, lr: float) -> None:
        self.step, self.total_steps, self.images_per_second, self.lr = step, total_steps, images_per_second, lr
        self._loss, self._accuracy = loss, accuracy

    @property
    def loss(self) -> float:
        """Training loss of this step's batch."""
        return float(self._loss)

    @property
    def accuracy(self) -> float:
        """Training accuracy of this step's batch."""
        return float(self._accuracy)

    def __repr__(self) -> str:
        return (f"StepInfo(step={self.step}, total_steps={self.total_steps}, loss={self.loss:.4g}, "
                f"accuracy={self.accuracy:.4g}, images_per_second={self.images_per_second:.4g}, lr={self.lr:.4g})")


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
    precision: str = "fp32"
    channels_last: bool = False
    layout: dict | None = None  # how precision = auto chose: source and step times per candidate

    def to_dict(self) -> dict:
        return {"steps": self.steps, "epochs": self.epochs, "train_loss": self.train_loss,
                "train_accuracy": self.train_accuracy, "images_per_second": self.images_per_second,
                "seconds": self.seconds, "precision": self.precision, "channels_last": self.channels_last,
                "layout": self.layout, "val": self.val.to_dict() if self.val else None}


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
        raise DataError(
            f"the model outputs {out} classes but the dataset has {wanted}; use a model built for {wanted} classes"
        )


def train(model: nn.Module, data: DataSplits | Split, budget: Budget, normalization: Normalization,
          recipe: TrainRecipe | None = None, *, seed: int = 0, device: str | torch.device | None = None,
          teacher: nn.Module | None = None, compile: bool = False, channels_last: bool | None = None,
          evaluate_val: bool = True, progress: Callable[[StepInfo], None] | None = None,
          **changes: Any) -> TrainResult:
    """Train ``model`` in place with SGD (Nesterov) on ``data``.

    Args:
        model: The network; moved to ``device`` and left in eval mode there, with contiguous weights.
        data: A :class:`DataSplits` (trains on ``train``, evaluates ``val`` at the end) or a :class:`Split`.
        budget: Epochs or steps.
        normalization: Mean/std the model expects.
        recipe: How to optimise (:class:`~hybridprune.recipe.TrainRecipe`: lr, batch size, momentum,
            weight decay, label smoothing, schedule, warm-up, distillation temperature and weight,
            precision); default :data:`~hybridprune.recipe.FROM_SCRATCH`.
        seed: Seeds shuffling, augmentation and anything random in the model; same seed, same numbers on CPU.
        device: Training device (default CUDA if available).
        teacher: If given, also distil from its softened outputs (knowledge distillation).
        compile: Run the step through ``torch.compile``.
        channels_last: Use channels_last tensors (default: measured under precision ``auto``; else on
            CUDA and whenever bf16 is on).
        evaluate_val: Evaluate the validation split at the end (when ``data`` has one).
        progress: Called after every step with a :class:`StepInfo`.
        **changes: Fields of the recipe to change for this run (``lr=0.01, batch_size=64``).

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDiverged: as soon as the loss is NaN or infinite (on CPU before that step's update; on a
            GPU, where checking means waiting, within 25 steps, naming the first bad step).
        ConfigError: bad hyper-parameters or precision. DataError: dataset classes do not match the model.
        TypeError: a change that names no recipe field.
    """
    r = (recipe or FROM_SCRATCH).with_(**changes).check()
    splits = data if isinstance(data, DataSplits) else None
    train_split = splits.train if splits else data
    dev = resolve_device(device)
    prec = resolve_precision(r.precision, dev)
    layout = None
    if r.precision == "auto" and channels_last is None and not fixed_layout():  # measured (hybridprune.speed)
        from hybridprune.speed import fastest_layout

        shape = (r.batch_size, *train_split.images.shape[1:])
        layout = fastest_layout(model, shape, int(train_split.labels.max()) + 1, dev, bf16=prec == "bf16")
        prec, channels_last = layout.precision, layout.channels_last
    channels_last = (dev.type == "cuda" or prec == "bf16") if channels_last is None else channels_last
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)

    loader = DeviceLoader(train_split, r.batch_size, normalization, device=dev, train=True, seed=seed,
                          drop_last=True, channels_last=channels_last)
    total = budget.total_steps(len(loader))
    model.to(dev, memory_format=fmt)
    if teacher is not None:
        teacher.to(dev, memory_format=fmt).eval()
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    # foreach: one fused update over all tensors instead of a Python loop per parameter (not the CPU default).
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=r.lr,
        momentum=r.momentum,
        nesterov=True,
        foreach=True,
    )
    lr_at = _lr_factor(r.schedule, round(r.warmup * total), total)
    criterion = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)

    def step_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(dev, prec):
            logits = model(x).float()  # loss, softmax and argmax in fp32 whatever the compute precision
            loss = criterion(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    soft = F.log_softmax(teacher(x).float() / r.temperature, dim=1)
                kd = F.kl_div(F.log_softmax(logits / r.temperature, dim=1), soft, reduction="batchmean",
                              log_target=True)
                loss = (1 - r.distill_weight) * loss + r.distill_weight * r.temperature**2 * kd
        return loss, logits

    step = torch.compile(step_fn) if compile else step_fn
    # Per-step loss and hits stay on the device; reading them back every step would stall a GPU.
    # The CPU computes synchronously, so there checking every step costs nothing.
    losses = torch.zeros(total, device=dev)
    hits = torch.zeros(total, device=dev)
    sizes: list[int] = []
    check_every = 1 if dev.type == "cpu" else 25
    checked_to = 0

    def check_finite(upto: int) -> None:
        nonlocal checked_to
        bad = (~torch.isfinite(losses[checked_to:upto])).nonzero()
        if len(bad):
            at = checked_to + int(bad[0])
            raise TrainingDiverged(f"training loss became {float(losses[at])} at step {at + 1} of {total} "
                                   f"(lr {r.lr * lr_at(at):.4g}); lower the learning rate")
        checked_to = upto

    checked = False
    done = seen = 0
    start = timed_from = time.perf_counter()
    model.train()
    try:
        while done < total:
            for x, y in loader:
                if not checked:
                    model.eval()
                    _check_classes(model, x, splits.num_classes if splits else None, train_split.labels)
                    model.train()
                    checked = True
                step_lr = r.lr * lr_at(done)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
                loss, logits = step(x, y)
                losses[done] = loss.detach()
                hits[done] = (logits.argmax(1) == y).sum()
                sizes.append(len(y))
                seen += len(y)
                done += 1
                if done - checked_to >= check_every:
                    check_finite(done)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                now = time.perf_counter()
                if done == 1:
                    timed_from = now  # the first step pays for warm-up (allocations, cudnn search, compile)
                if progress is not None:
                    ips = (seen - sizes[0]) / (now - timed_from) if done > 1 else 0.0
                    progress(StepInfo(done, total, losses[done - 1], hits[done - 1] / len(y), ips, step_lr))
                if done >= total:
                    break
        check_finite(done)
    finally:
        model.eval()
        if channels_last:  # callers (pruning, export, copies) expect ordinary contiguous weights back
            model.to(memory_format=torch.contiguous_format)
            if teacher is not None:
                teacher.to(memory_format=torch.contiguous_format)
    loop_end = time.perf_counter()
    val = None
    if evaluate_val and splits is not None and len(splits.val):
        val = evaluate(model, splits.val, normalization, device=dev, precision=prec, channels_last=channels_last)
    ips = (seen - sizes[0]) / max(loop_end - timed_from, 1e-9) if done > 1 else seen / max(loop_end - start, 1e-9)
    train_loss = (losses.cpu() @ torch.tensor(sizes, dtype=torch.float)).item() / seen
    return TrainResult(steps=done, epochs=done / len(loader), train_loss=train_loss,
                       train_accuracy=hits.sum().item() / seen, images_per_second=ips, seconds=loop_end - start,
                       val=val, precision=prec, channels_last=bool(channels_last),
                       layout=None if layout is None else {"chosen": layout.name, "source": layout.source,
                                                           "step_ms": layout.step_ms})


def finetune(model: nn.Module, data: DataSplits | Split, budget: Budget, normalization: Normalization,
             recipe: TrainRecipe | None = None, *, teacher: nn.Module | None = None, **kwargs: Any) -> TrainResult:
    """Briefly fine-tune a (pruned) model, optionally distilling from ``teacher`` (the unpruned model).

    :func:`train` with :data:`~hybridprune.recipe.FINETUNE` (lr 0.01, cosine decay, no warm-up, no
    label smoothing) unless ``recipe`` is given.

    Args:
        model: The network, trained in place.
        data: Splits or a split, as for :func:`train`.
        budget: Epochs or steps.
        normalization: Mean/std the model expects.
        recipe: How to optimise (default :data:`~hybridprune.recipe.FINETUNE`).
        teacher: Unpruned model to distil from, or None for plain fine-tuning.
        **kwargs: Anything else :func:`train` takes (seed, device, ...) and recipe changes (lr, batch_size, ...).

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingDiverged, ConfigError, DataError: as :func:`train`.
    """
    return train(model, data, budget, normalization, recipe or FINETUNE, teacher=teacher, **kwargs)
