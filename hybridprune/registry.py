"""A small string registry, in the style of timm's ``register_model`` / ``create_model``.

Each family (models, criteria, latency backends, datasets, search spaces, samplers) owns one
:class:`Registry`. The class families register with one idiom, a class decorator that files the
class under its ``name`` attribute::

    @CRITERIA.register()
    class WeightMagnitude(BaseCriterion):
        name = "weight_magnitude"

Models are instances (a ``ModelSpec`` per architecture), so they keep timm's
``register_model(spec)`` / ``create_model`` / ``list_models``. The registered names are also the
categorical choices of the search.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

from hybridprune.errors import MissingDependencyError, UnknownNameError, first_line

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factories) of one family.

    Args:
        kind: Human name of the family, used in error messages (e.g. ``"criterion"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` (default: its ``name`` attribute).

        Raises:
            ValueError: if the name is already taken.
        """

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or getattr(obj, "__name__")
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            UnknownNameError: naming the valid choices.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def lazy_import(module: str, extra: str, purpose: str):
    """Import an optional heavy dependency, or raise a one-line error saying how to get it.

    Args:
        module: Module to import, e.g. ``"torchvision.models"``.
        extra: The pip extra that provides it, e.g. ``"torchvision"``.
        purpose: What needs it, for the message.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: if the import fails for any reason.
    """
    try:
        return importlib.import_module(module)
    except Exception as exc:  # torchvision built for CUDA fails with RuntimeError/OSError
        raise MissingDependencyError(
            f"{purpose} needs {module.split('.')[0]}, which failed to import ({first_line(exc)}); "
            f"install it with: pip install 'hybridprune[{extra}]'"
        ) from exc
