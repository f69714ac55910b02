"""How to prune: :class:`HybridConfig`, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hybridprune.errors import ConfigError
from hybridprune.pruning.criteria import get_criterion

ORDERS = ("channel_first", "layer_first")
SCOPES = ("internal", "all")
ALLOCATIONS = ("uniform", "global")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")


@dataclass(frozen=True)
class HybridConfig:
    """One hybrid (channel + residual block) pruning configuration.

    Attributes:
        channel_ratio: Fraction of prunable channels removed, in [0, 1).
        pruned_blocks: Number of residual blocks removed (checked against the model later).
        criterion: Registered criterion name (see ``list_criteria()``).
        order: ``channel_first`` (prune channels, then blocks) or ``layer_first``.
        scope: ``internal`` (channels inside residual blocks only, the paper) or ``all``
            (the residual stream too).
        allocation: ``uniform`` (same ratio in every layer group) or ``global`` (one threshold
            over max-normalised scores of all groups).
        round_to: Kept channels per group are rounded to a multiple of this (>= 1).
        calib_batches: Calibration batches used by data-driven criteria (>= 1).
        criterion_options: Options of the criterion (``{"p": 2}`` for weight_magnitude).
        seed: Seed of the random criterion (when no seed option is given).
        stage_blocks: Blocks removed from each stage (the removable blocks grouped by parent
            module, in model order: ``layer1``, ``layer2``, ... of a ResNet), chosen by the
            criterion within each stage; their sum is ``pruned_blocks``. ``None``: one global
            ranking over all removable blocks (the paper).

    Raises:
        ConfigError: for any out-of-range value, naming what is allowed.
        UnknownNameError: for an unknown criterion, listing the registered ones.
    """

    channel_ratio: float
    pruned_blocks: int
    criterion: str
    order: str = "channel_first"
    scope: str = "internal"
    allocation: str = "uniform"
    round_to: int = 1
    calib_batches: int = 4
    criterion_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    stage_blocks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        r = self.channel_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 <= float(r) < 1.0):
            raise ConfigError(f"channel_ratio must be a number in [0, 1); got {r!r}")
        object.__setattr__(self, "channel_ratio", float(r))
        _int("pruned_blocks", self.pruned_blocks, 0)
        _choice("order", self.order, ORDERS)
        _choice("scope", self.scope, SCOPES)
        _choice("allocation", self.allocation, ALLOCATIONS)
        _int("round_to", self.round_to, 1)
        _int("calib_batches", self.calib_batches, 1)
        _int("seed", self.seed, 0)
        if not isinstance(self.criterion_options, dict):
            raise ConfigError(f"criterion_options must be a dict; got {self.criterion_options!r}")
        object.__setattr__(self, "criterion_options", dict(self.criterion_options))
        if self.stage_blocks is not None:
            if not isinstance(self.stage_blocks, (list, tuple)):
                raise ConfigError(f"stage_blocks must be a list of integers >= 0, one per stage; got "
                                  f"{self.stage_blocks!r}")
            for n in self.stage_blocks:
                _int("each stage_blocks entry", n, 0)
            object.__setattr__(self, "stage_blocks", tuple(self.stage_blocks))
            if sum(self.stage_blocks) != self.pruned_blocks:
                raise ConfigError(f"pruned_blocks must be the sum of stage_blocks {list(self.stage_blocks)} "
                                  f"({sum(self.stage_blocks)}); got {self.pruned_blocks}")
        self.make_criterion()  # unknown criterion or option -> error now, not mid-pruning

    def make_criterion(self):
        """Instantiate the configured criterion (``random`` gets ``seed`` unless given)."""
        opts = dict(self.criterion_options)
        if self.criterion == "random":
            opts.setdefault("seed", self.seed)
        return get_criterion(self.criterion, **opts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields (``stage_blocks`` only when set, so that the records of
        globally ranked configurations read as they always have)."""
        out = asdict(self)
        if self.stage_blocks is None:
            del out["stage_blocks"]
        else:
            out["stage_blocks"] = list(self.stage_blocks)
        return out
