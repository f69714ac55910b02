"""CLI commands of the prune group (filled in by the issue that owns it)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
