"""The CLI shell: every group registered, exit codes passed through."""

import subprocess
import sys

import typer

from hybridprune import __version__
from hybridprune.cli import app, main
from hybridprune.errors import ConfigError

EXPECTED = {"prune", "info", "train", "evaluate", "latency", "agent", "run", "status", "pareto", "select", "dashboard"}


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "hybridprune.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in EXPECTED:
        assert name in out.stdout


def test_version(capsys):
    assert main(["version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_exit_codes_pass_through(capsys):
    @app.command("_exit3", hidden=True)
    def _exit3() -> None:
        raise typer.Exit(3)

    @app.command("_bad", hidden=True)
    def _bad() -> None:
        raise ConfigError("ratio must be in [0, 1), got [1.5]")

    assert main(["_exit3"]) == 3
    assert main(["_bad"]) == 2
    err = capsys.readouterr().err
    assert "error: ratio must be in [0, 1), got [1.5]" in err  # rich markup escaped
    assert main(["no-such-command"]) == 2
