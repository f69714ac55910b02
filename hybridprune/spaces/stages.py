"""The per-stage hybrid space: channel ratio x blocks removed from each stage x criterion x order.

A block's latency and its criterion score's scale differ by stage (a ResNet's first stage runs at
4x the resolution of its last), so one global count ranked by the criterion lets the search choose
how many blocks go but not where. Here each stage's count is its own parameter
(``blocks_stage1`` .. ``blocks_stageN``); the criterion ranks blocks within each stage only.
"""

from __future__ import annotations

from typing import Any, Mapping

from hybridprune.errors import ConfigError
from hybridprune.spaces.base import (
    REF_BASELINE,
    BaseSpace,
    Param,
    make_config,
    parse_param,
)
from hybridprune.spaces.registry import SPACES

MAX_STAGES = 8


def stage_key(i: int) -> str:
    """The parameter (and study-file key) of stage ``i`` (0-based): ``blocks_stage1`` for the first."""
    return f"blocks_stage{i + 1}"


@SPACES.register()
class StagesSpace(BaseSpace):
    """The hybrid space with one removed-block count per stage.

    Study-file keys under ``[space]`` (each a range table, a list of choices, or a fixed value):

    * ``channel_ratio``: share of channels removed per layer, default ``{low=0, high=0.8, step=0.05}``.
    * ``blocks_stage1`` .. ``blocks_stageN``: blocks removed from that stage, default
      ``{low=0, high=<the stage's removable blocks>}``.
    * ``criterion``: importance criteria, default every registered criterion.
    * ``order``: ``channel_first`` / ``layer_first``, default both.
    * ``round_to``: kept channels rounded to a multiple of this, searched as in ``hybrid``.

    Its only reference point is the unpruned baseline: the paper's settings rank blocks over the
    whole network, which no per-stage point reproduces; a ``hybrid`` study records them.
    """

    name = "hybrid_stages"
    options = ("channel_ratio", "criterion", "order", "round_to") + tuple(stage_key(i) for i in range(MAX_STAGES))

    def _parse(self, options: dict[str, Any]) -> dict[str, Param]:
        sizes = self.stage_sizes
        if len(sizes) > MAX_STAGES:
            raise ConfigError(f"the hybrid_stages space takes at most {MAX_STAGES} stages; the model has {len(sizes)}")
        keys = [stage_key(i) for i in range(len(sizes))]
        extra = sorted(k for k in options if k.startswith("blocks_stage") and k not in keys)
        if extra:
            raise ConfigError(f"{extra} in [space]: the model has {len(sizes)} stage(s) with removable blocks, "
                              f"so the keys are {keys}")
        params: dict[str, Param] = {"channel_ratio": self._channel_ratio(options)}
        for key, size in zip(keys, sizes):
            params[key] = parse_param(options.get(key, {"low": 0, "high": size}), f"space.{key}", int,
                                      bounds=(0, size))
        params["criterion"] = self._criterion(options)
        params["order"] = self._order(options)
        return {**params, **self._round_to(options)}

    def to_config(self, params: Mapping[str, Any]):
        """See :meth:`BaseSpace.to_config`."""
        value = self._values(params)
        counts = tuple(int(value[stage_key(i)]) for i in range(len(self.stage_sizes)))
        return make_config(value["channel_ratio"], sum(counts), value["criterion"], value["order"],
                           {**self._fixed_with(value), "stage_blocks": counts})

    def _lines(self) -> list:
        """See :meth:`BaseSpace._lines`: channel-only, block-only (every stage at the same fraction
        of its own range), then both at once."""
        from hybridprune.spaces.warm import at, mildest, searched

        ratio = self.params["channel_ratio"]
        stages = {stage_key(i): self.params[stage_key(i)] for i in range(len(self.stage_sizes))}
        any_stage = any(searched(p) for p in stages.values())
        lines = []
        if searched(ratio):
            lines.append(lambda f: {"channel_ratio": at(ratio, f), **{k: mildest(p) for k, p in stages.items()}})
        if any_stage:
            lines.append(lambda f: {"channel_ratio": mildest(ratio), **{k: at(p, f) for k, p in stages.items()}})
        if searched(ratio) and any_stage:
            lines.append(lambda f: {"channel_ratio": at(ratio, f), **{k: at(p, f) for k, p in stages.items()}})
        return lines

    def labelled_references(self) -> list[tuple[str, dict[str, Any]]]:
        """See :meth:`BaseSpace.labelled_references`: the unpruned baseline only."""
        point = {"channel_ratio": 0.0, **{stage_key(i): 0 for i in range(len(self.stage_sizes))},
                 "criterion": self._first("criterion"), "order": self._first("order"),
                 **({"round_to": self._first("round_to")} if "round_to" in self.params else {})}
        return self._labelled([(REF_BASELINE, point)])
