"""Every third-party package the code imports is declared in ``pyproject.toml`` for that code path.

A module-level import runs whenever its module is imported, so its distribution must be a core
dependency; an import inside a function (a lazy import) may come from an extra instead; a
``lazy_import(module, extra, ...)`` call must name the extra that really provides ``module``.
The test runs on the installed environment's ``packages_distributions()`` so that an import name
(``PIL``, ``sklearn``) maps to its distribution (``pillow``, ``scikit-learn``).
"""

from __future__ import annotations

import ast
import re
import sys
from functools import lru_cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hybridprune"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    """``"ray[tune]>=2.9; python_version < '3.11'"`` -> ``"ray"``."""
    return canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


@lru_cache(maxsize=None)
def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(core dependency names, {extra: names}) from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {requirement_name(r) for r in project["dependencies"]}
    extras = {k: {requirement_name(r) for r in v} for k, v in project.get("optional-dependencies", {}).items()}
    return core, extras


@lru_cache(maxsize=None)
def _installed() -> dict:
    return packages_distributions()


def distribution(import_name: str) -> str:
    """The distribution an import name comes from (the name itself when it is not installed)."""
    dists = _installed().get(import_name) or [import_name]
    return canonical(dists[0])


def third_party_imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(top-level import name, line, lazy)`` for every non-stdlib, non-local import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    siblings = {p.stem for p in path.parent.glob("*.py")}  # the agent's standalone fallback imports
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("hybridprune", "__future__") or top in siblings:
                    continue
                found.append((top, child.lineno, lazy))
            visit(child, inner)

    visit(tree, False)
    return found


def lazy_import_calls(path: Path) -> list[tuple[str, str, int]]:
    """``(module, extra, line)`` of every ``lazy_import("module", "extra", ...)`` call with literal arguments."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "lazy_import"
                and len(node.args) >= 2 and all(isinstance(a, ast.Constant) for a in node.args[:2])):
            out.append((node.args[0].value, node.args[1].value, node.lineno))
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_are_declared_for_their_code_path(path):
    core, extras = declared()
    anywhere = core.union(*extras.values())
    wrong = []
    for name, line, lazy in third_party_imports(path):
        dist = distribution(name)
        if dist not in (anywhere if lazy else core):
            where = "a core dependency" if not lazy else "a dependency or an extra"
            wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({dist}), which is not {where}")
    assert not wrong, "\n".join(wrong)


def test_lazy_imports_name_the_extra_that_provides_them():
    _, extras = declared()
    wrong = []
    for path in MODULES:
        for module, extra, line in lazy_import_calls(path):
            dist = canonical(module.split(".")[0])
            if extra not in extras or dist not in extras[extra]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} says {module} comes with [{extra}]")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_what_it_must():
    # the AST walk finds module-level and lazy imports apart, and click (a direct import of the CLI)
    cli = {(name, lazy) for name, _, lazy in third_party_imports(PACKAGE / "cli.py")}
    assert ("click", False) in cli and ("typer", False) in cli
    ray = {(name, lazy) for name, _, lazy in third_party_imports(PACKAGE / "search" / "ray_runner.py")}
    assert ("ray", True) in ray and ("ray", False) not in ray
    assert requirement_name("ray[tune]>=2.9; python_version < '3.11'") == "ray"
    assert distribution("PIL") == "pillow" and distribution("sklearn") == "scikit-learn"
