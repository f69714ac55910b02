"""The registry of search-space classes (``hybrid``, ``compound``)."""

from __future__ import annotations

from hybridprune.registry import Registry

SPACES: Registry = Registry("search space")
