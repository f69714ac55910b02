"""Hybrid pruning: physical channel removal (Torch-Pruning) plus residual block removal.

- :mod:`~hybridprune.pruning.criteria`: which channels (registered criteria).
- :mod:`~hybridprune.pruning.graph`: what is pruned together (dependency graph, option-A pruner).
- :mod:`~hybridprune.pruning.channel`: how much (scope, allocation, rounding).
- :mod:`~hybridprune.pruning.blocks`: removable residual blocks, found by structure (``y = x + f(x)``).
- :mod:`~hybridprune.pruning.hybrid`: :func:`prune_model`.
- :mod:`~hybridprune.pruning.record`: :class:`PruningRecord` and :func:`apply_record`.
"""

from hybridprune.pruning.blocks import ResidualBlock, find_blocks, removable_blocks
from hybridprune.pruning.config import ALLOCATIONS, ORDERS, SCOPES, HybridConfig
from hybridprune.pruning.criteria import CRITERIA, BaseCriterion, get_criterion, list_criteria
from hybridprune.pruning.hybrid import PruneResult, prune_model
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
    "ResidualBlock",
    "apply_record",
    "find_blocks",
    "get_criterion",
    "list_criteria",
    "prune_model",
    "removable_blocks",
]
