"""The hybrid space: channel ratio x number of pruned blocks x criterion x order."""

from __future__ import annotations

from typing import Any, Mapping

from hybridprune.errors import ConfigError
from hybridprune.spaces.base import (
    PAPER_CHANNEL_RATIO,
    BaseSpace,
    Choice,
    Fixed,
    Param,
    make_config,
    parse_param,
    pruning_orders,
)
from hybridprune.spaces.registry import SPACES

PAPER_BLOCKS = (1, 2)


@SPACES.register()
class HybridSpace(BaseSpace):
    """Searches the paper's hybrid pruning directly.

    Study-file keys under ``[space]`` (each a range table, a list of choices, or a fixed value):

    * ``channel_ratio``: share of channels removed per layer, default ``{low=0, high=0.8, step=0.05}``.
    * ``pruned_blocks``: residual blocks removed, default ``{low=0, high=<removable blocks>}``.
    * ``criterion``: importance criteria, default every registered criterion.
    * ``order``: ``channel_first`` / ``layer_first``, default both.
    """

    name = "hybrid"
    options = ("channel_ratio", "pruned_blocks", "criterion", "order")

    def _parse(self, options: dict[str, Any]) -> dict[str, Param]:
        n = self.removable_blocks
        orders = list(pruning_orders())
        return {
            "channel_ratio": parse_param(
                options.get("channel_ratio", {"low": 0.0, "high": 0.8, "step": 0.05}),
                "space.channel_ratio", float, bounds=(0.0, 0.95),
            ),
            "pruned_blocks": parse_param(
                options.get("pruned_blocks", {"low": 0, "high": n}),
                "space.pruned_blocks", int, bounds=(0, n),
            ),
            "criterion": parse_param(
                options.get("criterion", list(self.criteria)), "space.criterion", str, choices=self.criteria
            ),
            "order": parse_param(options.get("order", orders), "space.order", str, choices=orders),
        }

    def to_config(self, params: Mapping[str, Any]):
        """See :meth:`BaseSpace.to_config`."""
        missing = [k for k in self.params if k not in params and not isinstance(self.params[k], Fixed)]
        if missing:
            raise ConfigError(f"hybrid space parameters missing: {missing}")
        value = {k: params.get(k, getattr(p, "value", None)) for k, p in self.params.items()}
        return make_config(
            value["channel_ratio"], value["pruned_blocks"], value["criterion"], value["order"], self.fixed
        )

    def _first(self, name: str) -> Any:
        p = self.params[name]
        return p.choices[0] if isinstance(p, Choice) else getattr(p, "value", None)

    def labelled_references(self) -> list[tuple[str, dict[str, Any]]]:
        """See :meth:`BaseSpace.labelled_references`."""
        criterion = self._first("criterion")
        orders = (
            list(self.params["order"].choices) if isinstance(self.params["order"], Choice) else [self._first("order")]
        )
        raw = [("baseline", {"channel_ratio": 0.0, "pruned_blocks": 0, "criterion": criterion, "order": orders[0]})]
        for blocks in PAPER_BLOCKS:
            for order in orders:
                raw.append(("paper", {"channel_ratio": PAPER_CHANNEL_RATIO, "pruned_blocks": blocks,
                                      "criterion": criterion, "order": order}))
        return self._labelled(raw)
