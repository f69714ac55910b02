"""Exception hierarchy.

Every error a user can cause derives from :class:`HybridPruneError`; its message is one line that
says what was wrong and what is allowed. The CLI prints it as ``error: <message>`` and exits 2.
"""

from __future__ import annotations


class HybridPruneError(Exception):
    """Base class of all user-facing errors (bad config, file, flag, request)."""


class ConfigError(HybridPruneError, ValueError):
    """A configuration value (study file key, CLI flag, pruning config) is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup used a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(HybridPruneError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


class DataError(HybridPruneError):
    """A dataset directory or file is missing, malformed or inconsistent."""


class TrainingDiverged(HybridPruneError, ArithmeticError):
    """The training loss became NaN or infinite; the trial that hit it is recorded as failed."""


class OutputError(HybridPruneError, OSError):
    """An output file or folder cannot be written (full disk, read-only, a name too long)."""


class LatencyError(HybridPruneError):
    """A latency measurement could not be made (backend missing, agent unreachable, bad reply)."""


class MissingDependencyError(HybridPruneError, ImportError):
    """An optional dependency (ray, tensorrt, torchvision) is needed but not importable."""


class ModelReferenceError(ConfigError):
    """A ``path/to/file.py:callable`` or ``package.module:callable`` model reference is unusable."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, for one-line error messages; its type name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
