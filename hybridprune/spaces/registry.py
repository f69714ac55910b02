"""The registry of search-space classes (``hybrid``, ``hybrid_stages``, ``compound``)."""

from __future__ import annotations

from hybridprune.registry import Registry

SPACES: Registry = Registry("search space")
