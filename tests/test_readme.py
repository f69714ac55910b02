"""The README is a front page: every CLI command is in its Commands table, every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands() -> list[str]:
    """Every command path of the CLI (``run``, ``agent serve``, ...), from the typer app itself."""
    import typer.main

    from hybridprune.cli import app

    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        if name.startswith("_"):  # commands other tests add to the app for themselves
            continue
        subs = getattr(cmd, "commands", None)
        out += [f"{name} {sub}" for sub in subs] if subs else [name]
    return out


def test_every_command_is_in_the_commands_table():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Commands"):]
    table = table[:table.index("\n## ")]
    missing = [c for c in commands() if f"`hybridprune {c}" not in table]
    assert not missing, f"commands missing from the README's Commands table: {missing}"
    assert "publish" in commands() and "agent bundle" in commands()


def _anchors(path: Path) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def test_every_relative_link_resolves():
    bad = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_bytes()) < 14_000
    readme = (ROOT / "README.md").read_text()
    assert "<!-- main-command -->" in readme and "<!-- test-command -->" in readme
