"""Layering: no module imports a module of a higher layer, lazily (inside a function) or not.

models, speed < data, pruning < checkpoints < evaluators, training < spaces < search < commands, cli.
``errors``, ``registry``, ``io`` and ``recipe`` are the base every layer (and each other) may use.
Within one layer a package imports only itself (``data`` and ``pruning`` do not know each other,
nor do ``evaluators`` and ``training``), except the CLI pair: ``cli`` registers the command
modules and they import its helpers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hybridprune"

LAYERS = [
    {"__init__", "errors", "registry", "io", "recipe", "records"},
    {"models", "speed", "devices"},
    {"data", "pruning"},
    {"checkpoints", "accuracy"},
    {"evaluators", "training", "distill"},
    {"spaces"},
    {"search"},
    {"commands", "cli"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
PEERS = [LAYERS[0], {"commands", "cli"}]

# (importing module, imported unit): upward imports kept on purpose, each with its reason.
ALLOWED: set[tuple[str, str]] = set()


def unit_of(module: str) -> str:
    """``hybridprune.pruning.blocks`` -> ``pruning``; ``hybridprune`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """Every ``hybridprune`` module that ``path`` imports (absolute or relative), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "hybridprune":  # from hybridprune import checkpoints
                found += [(f"hybridprune.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return [(name, line) for name, line in found if name == "hybridprune" or name.startswith("hybridprune.")]


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        src = unit_of(importer)
        for target, line in imports(path):
            dst = unit_of(target)
            if dst == src or (importer, dst) in ALLOWED or dst not in RANK:
                continue
            if RANK[dst] < RANK[src] or any({src, dst} <= peers for peers in PEERS):
                continue
            rel = path.relative_to(PACKAGE.parent)
            out.append(f"{rel}:{line}: {src} (layer {RANK[src]}) imports {target} ({dst}, layer {RANK[dst]})")
    return out


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - set(RANK) == set()


def test_no_module_imports_a_higher_layer():
    assert violations() == []


def test_the_check_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "hybridprune"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text(
        "from . import b\n\n"
        "def f():\n    from hybridprune.search import study\n    from hybridprune import checkpoints\n"
    )
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    found = violations()
    assert [v.split(": ", 1)[1] for v in found] == [
        "models (layer 1) imports hybridprune.search (search, layer 6)",
        "models (layer 1) imports hybridprune.checkpoints (checkpoints, layer 3)",
    ]
