"""The hybrid space: channel ratio x number of pruned blocks x criterion x order."""

from __future__ import annotations

from typing import Any, Mapping

from hybridprune.errors import ConfigError
from hybridprune.spaces.base import (
    PAPER_CHANNEL_RATIO,
    REF_BASELINE,
    REF_PAPER,
    BaseSpace,
    Choice,
    Param,
    make_config,
    parse_param,
)
from hybridprune.spaces.registry import SPACES

PAPER_BLOCKS = (1, 2)
REFERENCE_SETS = ("paper", "paper_grid")


@SPACES.register()
class HybridSpace(BaseSpace):
    """Searches the paper's hybrid pruning directly.

    Study-file keys under ``[space]`` (each a range table, a list of choices, or a fixed value):

    * ``channel_ratio``: share of channels removed per layer, default ``{low=0, high=0.8, step=0.05}``.
    * ``pruned_blocks``: residual blocks removed, default ``{low=0, high=<removable blocks>}``.
    * ``criterion``: importance criteria, default every registered criterion.
    * ``order``: ``channel_first`` / ``layer_first``, default both.
    * ``round_to``: kept channels rounded to a multiple of this, e.g. ``[1, 4, 8]`` to let the
      search pick the widths a runtime likes (default: not searched; ``[pruning] round_to``).
    * ``references``: the reference points enqueued first: ``paper`` (default: the unpruned
      baseline and 30% of channels with 1 and 2 blocks, both orders, first criterion) or
      ``paper_grid`` (the same for every criterion of the space: the paper's 20 settings with its
      5 criteria).
    """

    name = "hybrid"
    options = ("channel_ratio", "pruned_blocks", "criterion", "order", "round_to", "references")

    def _parse(self, options: dict[str, Any]) -> dict[str, Param]:
        n = self.removable_blocks
        self.reference_set = options.get("references", "paper")
        if self.reference_set not in REFERENCE_SETS:
            raise ConfigError(f"space.references must be one of {list(REFERENCE_SETS)}, got {self.reference_set!r}")
        extra = self._round_to(options)
        return {
            "channel_ratio": self._channel_ratio(options),
            "pruned_blocks": parse_param(options.get("pruned_blocks", {"low": 0, "high": n}),
                                         "space.pruned_blocks", int, bounds=(0, n)),
            "criterion": self._criterion(options),
            "order": self._order(options),
            **extra,
        }

    def to_config(self, params: Mapping[str, Any]):
        """See :meth:`BaseSpace.to_config`."""
        value = self._values(params)
        return make_config(value["channel_ratio"], value["pruned_blocks"], value["criterion"], value["order"],
                           self._fixed_with(value))

    def _lines(self) -> list:
        """See :meth:`BaseSpace._lines`: channel-only, block-only, then both at once."""
        from hybridprune.spaces.warm import at, mildest, searched

        ratio, blocks = self.params["channel_ratio"], self.params["pruned_blocks"]
        lines = []
        if searched(ratio):
            lines.append(lambda f: {"channel_ratio": at(ratio, f), "pruned_blocks": mildest(blocks)})
        if searched(blocks):
            lines.append(lambda f: {"channel_ratio": mildest(ratio), "pruned_blocks": at(blocks, f)})
        if searched(ratio) and searched(blocks):
            lines.append(lambda f: {"channel_ratio": at(ratio, f), "pruned_blocks": at(blocks, f)})
        return lines

    def labelled_references(self) -> list[tuple[str, dict[str, Any]]]:
        """See :meth:`BaseSpace.labelled_references`."""
        crit = self.params["criterion"]
        criteria = [self._first("criterion")]
        if self.reference_set == "paper_grid" and isinstance(crit, Choice):
            criteria = list(crit.choices)
        orders = (
            list(self.params["order"].choices) if isinstance(self.params["order"], Choice) else [self._first("order")]
        )
        common = {"round_to": self._first("round_to")} if "round_to" in self.params else {}
        raw = [(REF_BASELINE, {"channel_ratio": 0.0, "pruned_blocks": 0, "criterion": criteria[0], "order": orders[0],
                             **common})]
        for criterion in criteria:
            for blocks in PAPER_BLOCKS:
                for order in orders:
                    raw.append((REF_PAPER, {"channel_ratio": PAPER_CHANNEL_RATIO, "pruned_blocks": blocks,
                                          "criterion": criterion, "order": order, **common}))
        return self._labelled(raw)
