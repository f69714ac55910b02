"""Compatibility alias: complexity moved to :mod:`hybridprune.models.complexity`.

Kept only because ``hybridprune/search/objective.py`` still imports it from here; import
:mod:`hybridprune.models.complexity` in new code. Remove once that import is updated.
"""

from hybridprune.models.complexity import Complexity, complexity, count_params, describe_architecture

__all__ = ["Complexity", "complexity", "count_params", "describe_architecture"]
