"""EfficientNet's compound scaling run backwards: one coefficient ``phi`` shrinks depth and width.

Depth keeps ``alpha ** -phi`` of the removable blocks and width keeps ``beta ** -phi`` of the
channels, so ``pruned_blocks = round(removable * (1 - alpha ** -phi))`` and
``channel_ratio = 1 - beta ** -phi``. Defaults are EfficientNet's ``alpha = 1.2``, ``beta = 1.1``
(Tan & Le, 2019), ``phi`` in ``[0, 4]`` step 0.25.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from hybridprune.errors import ConfigError
from hybridprune.spaces.base import (
    PAPER_CHANNEL_RATIO,
    REF_BASELINE,
    REF_PAPER,
    BaseSpace,
    Fixed,
    FloatRange,
    Param,
    make_config,
    parse_param,
)
from hybridprune.spaces.registry import SPACES

MAX_CHANNEL_RATIO = 0.95


@SPACES.register()
class CompoundSpace(BaseSpace):
    """One compound coefficient ``phi`` plus the criterion (and order).

    Study-file keys under ``[space]``: ``phi`` (range, default ``{low=0, high=4, step=0.25}``),
    ``alpha`` (> 1, default 1.2), ``beta`` (> 1, default 1.1), ``criterion``, ``order``.
    """

    name = "compound"
    options = ("phi", "alpha", "beta", "criterion", "order")

    def _parse(self, options: dict[str, Any]) -> dict[str, Param]:
        for key, default in (("alpha", 1.2), ("beta", 1.1)):
            value = options.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 1.0:
                raise ConfigError(f"space.{key} must be a number > 1, got {value!r}")
            setattr(self, key, float(value))
        return {
            "phi": parse_param(
                options.get("phi", {"low": 0.0, "high": 4.0, "step": 0.25}), "space.phi", float, bounds=(0.0, 50.0)
            ),
            "criterion": self._criterion(options),
            "order": self._order(options, default="channel_first"),
        }

    def scale(self, phi: float) -> tuple[float, int]:
        """Map ``phi`` to ``(channel_ratio, pruned_blocks)``."""
        ratio = min(MAX_CHANNEL_RATIO, 1.0 - self.beta ** -float(phi))
        blocks = int(round(self.removable_blocks * (1.0 - self.alpha ** -float(phi))))
        return round(ratio, 4), min(self.removable_blocks, blocks)

    def to_config(self, params: Mapping[str, Any]):
        """See :meth:`BaseSpace.to_config`."""
        value = {k: params.get(k, getattr(p, "value", None)) for k, p in self.params.items()}
        if value["phi"] is None:
            raise ConfigError("compound space parameter 'phi' missing")
        ratio, blocks = self.scale(value["phi"])
        return make_config(ratio, blocks, value["criterion"], value["order"], self.fixed)

    def _lines(self) -> list:
        """See :meth:`BaseSpace._lines`: ``phi`` is the compound line itself."""
        from hybridprune.spaces.warm import at, searched

        phi = self.params["phi"]
        return [lambda f: {"phi": at(phi, f)}] if searched(phi) else []

    def labelled_references(self) -> list[tuple[str, dict[str, Any]]]:
        """See :meth:`BaseSpace.labelled_references`."""
        phi = self.params["phi"]
        criterion, order = self._first("criterion"), self._first("order")
        paper = math.log(1.0 / (1.0 - PAPER_CHANNEL_RATIO)) / math.log(self.beta)
        if isinstance(phi, FloatRange) and phi.step:
            paper = phi.low + round((paper - phi.low) / phi.step) * phi.step
        raw = []
        for label, value in ((REF_BASELINE, 0.0), (REF_PAPER, round(paper, 6))):
            if isinstance(phi, Fixed):
                value = phi.value
            raw.append((label, {"phi": value, "criterion": criterion, "order": order}))
        return self._labelled(raw)
