"""Search spaces: each turns an Optuna trial into the frozen ``HybridConfig`` the pruner takes.

``get_space(kind, options, removable_blocks=..., criteria=...)`` builds one from a study file's
``[space]`` table; ``list_spaces()`` names them.
"""

from __future__ import annotations

from typing import Any, Mapping

from hybridprune.spaces import compound as _compound  # noqa: F401  (registers "compound")
from hybridprune.spaces import hybrid as _hybrid  # noqa: F401  (registers "hybrid")
from hybridprune.spaces import stages as _stages  # noqa: F401  (registers "hybrid_stages")
from hybridprune.spaces.base import BaseSpace, Choice, Fixed, FloatRange, IntRange, parse_param
from hybridprune.spaces.registry import SPACES


def list_spaces() -> list[str]:
    """Registered space names."""
    return SPACES.names()


def get_space(
    kind: str,
    options: Mapping[str, Any] | None = None,
    *,
    removable_blocks: int,
    criteria: list[str],
    fixed: Mapping[str, Any] | None = None,
    stage_sizes: tuple[int, ...] | list[int] | None = None,
) -> BaseSpace:
    """Build a search space.

    Args:
        kind: Registered space name (``hybrid``, ``hybrid_stages``, ``compound``).
        options: The study file's ``[space]`` table without ``kind``.
        removable_blocks: Number of residual blocks the model can lose.
        criteria: Valid pruning-criterion names.
        fixed: HybridConfig fields fixed by the study (``[pruning]`` table).
        stage_sizes: Removable blocks per stage, in model order (default: one stage of all).

    Returns:
        The space.

    Raises:
        UnknownNameError: for an unknown kind.
        ConfigError: for bad options.
    """
    return SPACES.get(kind)(options or {}, removable_blocks=removable_blocks, criteria=criteria, fixed=fixed,
                            stage_sizes=stage_sizes)


__all__ = [
    "BaseSpace",
    "Choice",
    "Fixed",
    "FloatRange",
    "IntRange",
    "SPACES",
    "get_space",
    "list_spaces",
    "parse_param",
]
