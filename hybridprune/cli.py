"""The ``hybridprune`` command line.

Each command group lives in ``hybridprune/commands/<group>.py`` with a ``register(app)`` function;
heavy imports happen inside the commands so ``hybridprune --help`` stays fast. Every
:class:`~hybridprune.errors.HybridPruneError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from hybridprune.errors import HybridPruneError

COMMAND_GROUPS = ("prune", "train", "latency", "search")

app = typer.Typer(
    name="hybridprune",
    help="Find the best channel+block pruned CNN for a latency budget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, highlight=False)


@app.command("version")
def version() -> None:
    """Print the hybridprune version."""
    from hybridprune import __version__

    typer.echo(__version__)


for _group in COMMAND_GROUPS:
    importlib.import_module(f"hybridprune.commands.{_group}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit code: 0 on success, 2 for bad input, 1 for an unexpected failure.
    """
    try:
        # In non-standalone mode click returns typer.Exit's code instead of raising it.
        rc = app(args=argv, standalone_mode=False)
    except HybridPruneError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except Exception as exc:  # click usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        if code is not None and hasattr(exc, "show"):
            exc.show()
            return code
        raise
    return rc if isinstance(rc, int) else 0


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
