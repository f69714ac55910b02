"""The training recipe shared by ``hybridprune train``, a study's ``[baseline]`` and its ``[finetune]``.

A recipe says how long to train (a :class:`Budget`: ``epochs`` or ``steps``, exactly one, the rule
of :func:`check_budget`), how fast (peak ``lr``, ``batch_size``) and in which compute precision.
The module imports no torch, so study files validate without it; :mod:`hybridprune.training`
runs a recipe (``train(model, data, recipe.budget, norm, **recipe.train_kwargs())``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from hybridprune.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")
# Bounds of every budget: past them a run never ends or torch fails in C++ (an int64 overflow).
MAX_EPOCHS = 10_000
MAX_STEPS = 100_000_000
MAX_LR = 10.0  # peak SGD learning rate; above it every loss diverges
MAX_BATCH = 4096  # every batch size (training, latency): beyond, one input is gigabytes and torch fails in C++


def check_lr(lr: Any, name: str) -> None:
    """A learning rate is a finite number in (0, :data:`MAX_LR`].

    Raises:
        ConfigError: naming the field.
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and 0 < lr <= MAX_LR):
        raise ConfigError(f"{name} must be a number in (0, {MAX_LR:g}], got {lr!r}")


def check_budget(epochs: Any, steps: Any, where: str = "a budget",
                 key: Callable[[str], str] = "budget {}".format) -> None:
    """The one rule of a training budget: ``epochs`` (a positive number, fractions allowed, at most
    :data:`MAX_EPOCHS`) or ``steps`` (a positive whole number, at most :data:`MAX_STEPS`), exactly
    one of them.

    Args:
        epochs: Epochs, or None.
        steps: Optimiser steps, or None.
        where: What takes the budget, for the message (``[finetune]``, ``hybridprune train``).
        key: How the message names a field (``finetune.epochs``, ``--epochs``).

    Raises:
        ConfigError: a one-line message naming the field.
    """
    if (epochs is None) == (steps is None):
        raise ConfigError(f"{where} needs exactly one of epochs or steps, got epochs={epochs} steps={steps}")
    if epochs is not None and not (isinstance(epochs, (int, float)) and not isinstance(epochs, bool)
                                   and math.isfinite(epochs) and epochs > 0):
        raise ConfigError(f"need {key('epochs')} > 0, got {epochs!r}")
    if epochs is not None and epochs > MAX_EPOCHS:
        raise ConfigError(f"{key('epochs')} must be at most {MAX_EPOCHS:,}, got {epochs:g}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
        raise ConfigError(f"{key('steps')} must be a whole number, got {steps!r}")
    if steps is not None and steps < 1:
        raise ConfigError(f"need {key('steps')} > 0, got {steps!r}")
    if steps is not None and steps > MAX_STEPS:
        raise ConfigError(f"{key('steps')} must be at most {MAX_STEPS:,}, got {steps}")


@dataclass(frozen=True)
class Budget:
    """How long to train: ``epochs`` (may be fractional) or ``steps``, exactly one of them."""

    epochs: float | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        check_budget(self.epochs, self.steps)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Number of optimiser steps for an epoch of ``steps_per_epoch`` batches."""
        return self.steps if self.steps is not None else max(1, round(self.epochs * steps_per_epoch))

    def __str__(self) -> str:
        return f"{self.epochs:g} epochs" if self.steps is None else f"{self.steps} steps"


SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True)
class TrainRecipe:
    """How one training run optimises, whatever its length: the argument of
    :func:`hybridprune.training.train` (:data:`FROM_SCRATCH`) and ``finetune`` (:data:`FINETUNE`).

    Attributes:
        lr: Peak learning rate of SGD (Nesterov).
        batch_size: Images per step.
        momentum: SGD momentum.
        weight_decay: L2 weight decay of the weights (not of biases and norm scales).
        label_smoothing: Cross-entropy label smoothing.
        schedule: ``onecycle`` (linear warm-up, linear decay), ``cosine`` (warm-up, cosine decay) or
            ``constant``.
        warmup: Fraction of the steps spent warming up.
        temperature: Distillation temperature (with a teacher).
        distill_weight: Weight of the distillation loss; the hard-label loss gets ``1 - distill_weight``.
        precision: ``auto`` (measured: see :mod:`hybridprune.speed`), ``bf16`` or ``fp32``.
    """

    lr: float = 0.1
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "onecycle"
    warmup: float = 0.1
    temperature: float = 4.0
    distill_weight: float = 0.5
    precision: str = "auto"

    def check(self) -> "TrainRecipe":
        """Return itself when every value is usable.

        Raises:
            ConfigError: naming the bad value and what is allowed.
        """
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and 0 <= self.distill_weight <= 1 and self.temperature > 0
                and 0 <= self.label_smoothing < 1):
            raise ConfigError(
                "need lr > 0, 0 <= warmup < 1, 0 <= distill_weight <= 1, temperature > 0, 0 <= label_smoothing < 1"
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        return self

    def with_(self, **changes: Any) -> "TrainRecipe":
        """A copy with some fields changed (``lr=0.01``); an unknown name is a TypeError listing the fields."""
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown training setting(s) {unknown}; a TrainRecipe has "
                            f"{list(self.__dataclass_fields__)}")
        return dataclasses.replace(self, **changes) if changes else self


#: Training from scratch: lr 0.1, one-cycle schedule with 10% warm-up, label smoothing 0.1.
FROM_SCRATCH = TrainRecipe()
#: A brief fine-tune of a trained (pruned) model: lr 0.01, cosine decay, no warm-up, no smoothing.
FINETUNE = TrainRecipe(lr=0.01, schedule="cosine", warmup=0.0, label_smoothing=0.0)
#: ``refine``'s distillation weight (the hard labels get the rest), chosen on evidence: with the
#: adapted ResNet-56 as teacher, 0.25 matched or beat a plain fine-tune of the same budget where
#: 0.5 did not (benchmarks/RESULTS.md, "Distillation from the adapted teacher vs a plain fine-tune").
REFINE_DISTILL_WEIGHT = 0.25


@dataclass(frozen=True)
class Recipe:
    """How to train: a budget (``epochs`` xor ``steps``), peak ``lr``, ``batch_size``, ``precision``.

    The base class is the ``train`` command's recipe (messages name its flags, ``--lr``; ``lr``
    None leaves the default of ``train()`` or ``finetune()``). The study tables subclass it: their
    ``section`` names the keys (``finetune.lr``), ``default_epochs`` fills a budget given neither
    way and ``max_batch`` bounds the batch size.

    Raises:
        ConfigError: a one-line message naming the field, from :func:`check_budget` or a bound.
    """

    epochs: float | None = None
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 128
    precision: str = "auto"

    section: ClassVar[str] = ""
    default_epochs: ClassVar[float | None] = None
    max_batch: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        if self.epochs is None and self.steps is None and self.default_epochs is not None:
            object.__setattr__(self, "epochs", self.default_epochs)
        check_budget(self.epochs, self.steps, f"[{self.section}]" if self.section else "hybridprune train", self.key)
        if self.lr is not None:
            check_lr(self.lr, self.key("lr"))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ConfigError(f"{self.key('batch_size')} must be a whole number, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ConfigError(f"need {self.key('batch_size')} > 0, got {self.batch_size}")
        if self.max_batch is not None and self.batch_size > self.max_batch:
            raise ConfigError(f"{self.key('batch_size')} must be at most {self.max_batch}, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{self.key('precision')} must be one of {list(PRECISIONS)}, got {self.precision!r}")

    def key(self, name: str) -> str:
        """How messages name field ``name``: ``finetune.lr`` in a study table, ``--lr`` on the command line."""
        return f"{self.section}.{name}" if self.section else "--" + name.replace("_", "-")

    @property
    def budget(self) -> Budget:
        """The :class:`Budget` of this recipe."""
        return Budget(epochs=self.epochs, steps=self.steps)

    def train_kwargs(self) -> dict[str, Any]:
        """``lr`` (when set), ``batch_size`` and ``precision`` as keyword arguments of ``train()``/``finetune()``."""
        out: dict[str, Any] = {"batch_size": self.batch_size, "precision": self.precision}
        return {"lr": self.lr, **out} if self.lr is not None else out
