"""A small validator for TOML configuration files: typed dataclass tables with clear errors.

:func:`load_toml` reads a file (UTF-8, at most :data:`MAX_DEPTH` levels of nesting);
:func:`build` turns one table into a dataclass, rejecting unknown keys with the list of allowed
ones and checking every value against the field's type hint (:func:`check_type`);
:func:`positive`, :func:`at_most` and :func:`choice` are the value checks dataclasses run in
``__post_init__``. Every error is a :class:`~hybridprune.errors.ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from hybridprune.errors import ConfigError, MissingDependencyError

MAX_DEPTH = 32  # nesting of arrays / tables in a file


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable, non-UTF-8, invalid or too deeply nested file is a
    one-line ConfigError."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise MissingDependencyError(
                "reading study files on Python 3.10 needs tomli; install it with: pip install tomli"
            ) from None
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read study file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"study file {path} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                          f"TOML files must be UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"study file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"study file {path} nests arrays or tables too deeply; at most {MAX_DEPTH} levels "
                          f"are allowed") from None
    check_depth(data, path)
    return data


def check_depth(data: Any, path: Path) -> None:
    """Refuse values nested more than :data:`MAX_DEPTH` levels (iteratively: no recursion limit)."""
    stack = [(data, 0, "")]
    while stack:
        value, depth, key = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"study file {path}: {key or 'a value'} nests arrays or tables more than "
                              f"{MAX_DEPTH} levels deep")
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1, f"{key}.{k}" if key else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{key}[{i}]") for i, v in enumerate(value))


def check_type(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a (simple) type hint; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        inner = typing.get_args(hint)[0]
        return tuple(check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is Any:
        return value
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {type(value).__name__} {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type hint {hint!r}")  # programming error


def build(cls: type, raw: Any, section: str, **extra: Any) -> Any:
    """Instantiate dataclass ``cls`` from table ``raw``, rejecting unknown keys and bad types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in extra]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{section}]; allowed: {allowed}")
    kwargs = {k: check_type(v, hints[k], f"{section}.{k}") for k, v in raw.items()}
    return cls(**kwargs, **extra)


def positive(value: float | int | None, key: str, allow_zero: bool = False) -> None:
    """Raise ConfigError naming ``key`` unless ``value`` (when given) is > 0 (or >= 0)."""
    if value is not None and not (value > 0 or (allow_zero and value == 0)):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def at_most(value: float | int | None, key: str, limit: float | int, why: str = "") -> None:
    """Raise ConfigError naming ``key`` when ``value`` (when given) exceeds ``limit``."""
    if value is not None and value > limit:
        raise ConfigError(f"{key} must be at most {limit}{why}, got {value}")


def choice(value: str, key: str, allowed: tuple[str, ...] | list[str]) -> None:
    """Raise ConfigError naming ``key`` and listing ``allowed`` unless ``value`` is one of them."""
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
