"""Hybrid pruning: physical channel removal (Torch-Pruning) plus residual block removal.

- :mod:`~hybridprune.pruning.criteria`: which channels (registered criteria).
- :mod:`~hybridprune.pruning.graph`: what is pruned together (dependency graph, option-A pruner).
- :mod:`~hybridprune.pruning.channel`: how much (scope, allocation, rounding).
- :mod:`~hybridprune.pruning.blocks`: which removable residual blocks go (found by
  :mod:`hybridprune.models.blocks`).
- :mod:`~hybridprune.pruning.hybrid`: :func:`prune_model`.
- :mod:`~hybridprune.pruning.record`: :class:`PruningRecord` and :func:`apply_record`.
"""

from hybridprune.pruning.config import ALLOCATIONS, ORDERS, SCOPES, HybridConfig
from hybridprune.pruning.criteria import CRITERIA, BaseCriterion, get_criterion, list_criteria
from hybridprune.pruning.hybrid import PruneResult, ScoreMemo, prune_model
from hybridprune.pruning.record import PruningRecord, apply_record

__all__ = [
    "ALLOCATIONS",
    "CRITERIA",
    "ORDERS",
    "SCOPES",
    "BaseCriterion",
    "HybridConfig",
    "PruneResult",
    "PruningRecord",
    "ScoreMemo",
    "apply_record",
    "get_criterion",
    "list_criteria",
    "prune_model",
]
