"""Bring your own model: ``path/to/file.py:callable`` and ``package.module:callable`` references.

Everywhere a model name is accepted (``create_model``, ``get_model_spec``, study files, the CLI),
a reference to a factory works too. The factory is called as ``factory(num_classes=N, **kwargs)``
and must return an :class:`torch.nn.Module`. Optional attributes of the factory describe the
model, as a registry entry would::

    def make(num_classes=10, width=16): ...
    make.input_size = (3, 32, 32)                                  # default (3, 32, 32)
    make.normalization = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))     # default: CIFAR statistics

File references are canonicalised to an absolute path, which is what checkpoints record; a file
is imported once per process (as module ``hybridprune_user_<hash>``), with its folder on
``sys.path`` while it imports, so it may import modules beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from hybridprune.errors import HybridPruneError, ModelReferenceError

_CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_LOADED: dict[str, Any] = {}


def is_reference(name: object) -> bool:
    """True when ``name`` looks like ``file.py:callable`` or ``package.module:callable``."""
    return isinstance(name, str) and ":" in name and not name.startswith(":")


def is_file_reference(name: str) -> bool:
    """True for a ``path/to/file.py:callable`` reference (as opposed to ``package.module:callable``)."""
    target = name.rpartition(":")[0]
    return target.endswith(".py") or "/" in target or "\\" in target


def split_reference(name: str) -> tuple[str, str]:
    """``(target, callable)`` of a reference, syntax checked.

    Raises:
        ModelReferenceError: for a malformed reference.
    """
    target, _, attr = name.rpartition(":")
    if not target or not _CALLABLE.match(attr) or (not is_file_reference(name) and not _MODULE.match(target)):
        raise ModelReferenceError(
            f"model reference {name!r} is malformed; expected path/to/file.py:callable or package.module:callable"
        )
    return target, attr


def canonical_reference(name: str, base: str | Path | None = None) -> str:
    """The reference with its file made absolute (against ``base``, default the working directory).

    Module references and registry names are returned unchanged.
    """
    if not is_reference(name) or not is_file_reference(name):
        return name
    target, attr = split_reference(name)
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = Path(base or Path.cwd()) / path
    return f"{path.resolve()}:{attr}"


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelReferenceError(f"model file {path} does not exist")
    key = str(path)
    if key in _LOADED:
        return _LOADED[key]
    mod_name = "hybridprune_user_" + hashlib.sha1(key.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ModelReferenceError(f"model file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up
    sys.path.insert(0, str(path.parent))  # like running the file: its sibling modules import
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # sys.exit() at import must not end the command as a success
        sys.modules.pop(mod_name, None)
        raise ModelReferenceError(f"importing model file {path} failed: {_describe(exc)}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path.parent))
    _LOADED[key] = module
    return module


def _import_module(target: str) -> Any:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ModelReferenceError(
            f"model module {target!r} cannot be imported ({exc}); for a file write path/to/file.py:callable"
        ) from None
    except (Exception, SystemExit) as exc:
        raise ModelReferenceError(f"importing model module {target!r} failed: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) while being imported"
    return f"{type(exc).__name__}: {exc}"


def load_factory(name: str) -> Callable[..., Any]:
    """Import the callable a reference names.

    Args:
        name: ``path/to/file.py:callable`` (relative to the working directory unless absolute) or
            ``package.module:callable``.

    Returns:
        The callable.

    Raises:
        ModelReferenceError: if the file/module is missing or fails to import, or has no such
            callable (the message lists the callables it has).
    """
    target, attr = split_reference(name)
    module = (
        _import_file(Path(canonical_reference(name).rpartition(":")[0]))
        if is_file_reference(name)
        else _import_module(target)
    )
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    if obj is None or not callable(obj):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        what = "no callable" if obj is None else "a non-callable"
        raise ModelReferenceError(
            f"{target} has {what} {attr!r}; callables defined there: "
            f"{', '.join(found[:12]) + (', ...' if len(found) > 12 else '') or 'none'}"
        )
    return obj


def build_from_reference(name: str, factory: Callable[..., Any], num_classes: int, **kwargs: Any) -> nn.Module:
    """Call a user factory and check that it returned a module.

    Raises:
        ModelReferenceError: if the factory raises or returns something other than an ``nn.Module``.
    """
    try:
        model = factory(num_classes=num_classes, **kwargs)
    except HybridPruneError:
        raise
    except (Exception, SystemExit) as exc:
        raise ModelReferenceError(
            f"model factory {name} raised {_describe(exc)} (called with num_classes={num_classes}"
            f"{''.join(f', {k}={v!r}' for k, v in kwargs.items())})"
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelReferenceError(f"model factory {name} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
