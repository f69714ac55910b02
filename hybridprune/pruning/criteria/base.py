"""Which channels: the criterion interface and its registry.

A criterion scores the output channels of a set of layers at once (data-driven criteria need one
pass over the calibration batches for all of them). Each scored layer is a producing module
(a conv or linear layer) and the module whose output is its feature map (the BatchNorm after
it, or the layer itself). Higher score = more important.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn as nn

from hybridprune.errors import ConfigError
from hybridprune.registry import Registry


@dataclass(frozen=True)
class ScoredLayer:
    """One layer whose output channels get scores.

    Attributes:
        name: Qualified module name of the producer.
        producer: The conv/linear module producing the channels.
        norm: The BatchNorm normalising them, or ``None``.
    """

    name: str
    producer: nn.Module
    norm: nn.Module | None = None

    @property
    def feature_module(self) -> nn.Module:
        """The module whose output is the channel's feature map."""
        return self.norm if self.norm is not None else self.producer


class BaseCriterion(abc.ABC):
    """Scores output channels of layers; subclasses register with ``@CRITERIA.register()`` (under ``name``).

    Args:
        **options: Criterion options (see each subclass); unknown ones raise ConfigError.
    """

    name: ClassVar[str] = ""
    data_driven: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(f"criterion {self.name!r} has no option(s) {unknown}; allowed: {allowed}")
        self.opts = {**self.options, **options}

    def score(
        self,
        model: nn.Module,
        layers: Sequence[ScoredLayer],
        calib: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score every output channel of ``layers``.

        Args:
            model: The model (not modified; gradients it accumulates are cleared).
            layers: Layers to score.
            calib: Calibration batches (normalised inputs, labels); needed when ``data_driven``.

        Returns:
            Layer name -> float tensor with one non-negative score per output channel.

        Raises:
            ConfigError: if a data-driven criterion gets no calibration batches.
        """
        if self.data_driven and not calib:
            raise ConfigError(
                f"criterion {self.name!r} is data-driven and needs calibration batches "
                f"(pass calib=... / --calib-dir); data-free criteria: {', '.join(data_free_criteria())}"
            )
        scores = self._score(model, list(layers), list(calib or []))
        return {k: v.detach().double().cpu() for k, v in scores.items()}

    @abc.abstractmethod
    def _score(self, model: nn.Module, layers: list[ScoredLayer], calib: list) -> dict[str, torch.Tensor]:
        """Subclasses compute the scores."""


CRITERIA: Registry[type[BaseCriterion]] = Registry("criterion")


def list_criteria() -> list[str]:
    """Registered criterion names, sorted."""
    return CRITERIA.names()


def data_free_criteria() -> list[str]:
    """Names of criteria that need no calibration data."""
    return [n for n in CRITERIA.names() if not CRITERIA.get(n).data_driven]


def get_criterion(name: str, **options: Any) -> BaseCriterion:
    """Instantiate a registered criterion.

    Raises:
        UnknownNameError: listing the registered names.
        ConfigError: for unknown options.
    """
    return CRITERIA.get(name)(**options)


def producer_weight(layer: ScoredLayer) -> torch.Tensor:
    """The producer's weight with output channels first, flattened per channel."""
    w = layer.producer.weight
    if isinstance(layer.producer, nn.ConvTranspose2d):
        w = w.transpose(0, 1)
    return w.reshape(w.shape[0], -1)
