"""Channel-importance criteria, one registered class each (see :data:`CRITERIA`)."""

from hybridprune.pruning.criteria import data_driven as _data_driven  # noqa: F401  (registers)
from hybridprune.pruning.criteria import magnitude as _magnitude  # noqa: F401  (registers)
from hybridprune.pruning.criteria.base import (
    CRITERIA,
    BaseCriterion,
    ScoredLayer,
    data_free_criteria,
    get_criterion,
    list_criteria,
)

__all__ = [
    "CRITERIA",
    "BaseCriterion",
    "ScoredLayer",
    "data_free_criteria",
    "get_criterion",
    "list_criteria",
]
