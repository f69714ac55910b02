"""The ``hybridprune`` command line.

Each command group lives in ``hybridprune/commands/<group>.py`` with a ``register(app)`` function;
heavy imports happen inside the commands so ``hybridprune --help`` stays fast. Every
:class:`~hybridprune.errors.HybridPruneError` and every click usage error (unknown option, missing
argument, bad value) becomes one line ``error: ...`` on stderr and exit code 2; a command that
fails for another reason says so the same way through :func:`fail`. Text that comes from files or
arguments is printed literally, control characters escaped (:func:`printable`).
"""

from __future__ import annotations

import importlib
import sys
import unicodedata
from typing import NoReturn

import click
import typer
from rich.console import Console
from rich.text import Text

from hybridprune.errors import HybridPruneError

COMMAND_GROUPS = ("prune", "train", "latency", "search")

try:  # typer >= 0.20 vendors its own click; commands raise its exception classes
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - older typer uses click itself
    _typer_click = click.exceptions
CLICK_ERRORS = tuple({click.ClickException, _typer_click.ClickException})
NO_ARGS_IS_HELP = tuple(
    {click.exceptions.NoArgsIsHelpError, getattr(_typer_click, "NoArgsIsHelpError", click.exceptions.NoArgsIsHelpError)}
)
USAGE_ERRORS = tuple({click.UsageError, _typer_click.UsageError})

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


def printable(text: object) -> str:
    """``str(text)`` on one line with control and format characters escaped.

    ESC becomes the four characters ``\\x1b``, a newline ``\\n``, a bidi override ``\\u202e``:
    whatever a file or argument holds cannot drive the terminal or spoof other output. Print the
    result as :class:`rich.text.Text` (or with ``markup=False``) so ``[bold]`` stays literal too.

    Args:
        text: Anything; converted with ``str``.

    Returns:
        The escaped string.
    """
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in str(text)
    )


def print_error(message: object) -> None:
    """Print ``error: <message>`` on stderr, on one line, the message escaped by :func:`printable`."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", printable(message)), soft_wrap=True)


def fail(message: object, code: int = 1) -> NoReturn:
    """End a command that failed for a reason other than bad input: ``error: <message>`` and exit ``code``.

    Bad input raises a :class:`~hybridprune.errors.HybridPruneError` instead (:func:`main` prints it
    the same way and exits 2).

    Raises:
        typer.Exit: always, with ``code``.
    """
    print_error(message)
    raise typer.Exit(code)


def _usage_message(exc: Exception) -> str:
    """click's message, lower-cased first letter, with the command to ask for help."""
    msg = " ".join(exc.format_message().split())
    msg = msg[:1].lower() + msg[1:].rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, USAGE_ERRORS) and ctx is not None:
        msg += f" (see: {ctx.command_path} --help)"
    return msg


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
        from hybridprune.search.interrupts import signals_held

        with signals_held():  # Ctrl+C / SIGTERM never land inside a storage call (search/interrupts.py)
            rc = app(args=argv, prog_name="hybridprune", standalone_mode=False)
    except HybridPruneError as exc:
        print_error(exc)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except NO_ARGS_IS_HELP as exc:  # bare ``hybridprune`` / ``hybridprune agent``
        exc.show()
        return 2
    except CLICK_ERRORS as exc:  # unknown option, missing argument, bad value, ...
        print_error(_usage_message(exc))
        return 2
    return rc if isinstance(rc, int) else 0


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
