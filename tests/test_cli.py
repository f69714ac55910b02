"""The CLI shell: every group registered, exit codes passed through."""

import subprocess
import sys

import pytest
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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["prune", "--teacher", "x"], "error: no such option: --teacher"),
        (["prune", "--ratio", "abc", "--out", "x.pt"], "error: invalid value for '--ratio'"),
        (["prune", "--out"], "error: option '--out' requires an argument"),
        (["prune", "--ratio", "0.1"], "error: missing option '--out'"),
        (["info", "a", "b"], "error: got unexpected extra argument(s) (b)"),
        (["latency", "--runs", "-x"], "error: no such option"),
        (["no-such-command"], "error: no such command 'no-such-command'"),
        (["agent", "serve", "--port", "many"], "error: invalid value for '--port'"),
        (["agent", "serve", "--port", "18470000"], "error: --port must be a whole number in [0, 65535]"),
        (["agent", "serve", "--threads", "0"], "error: --threads must be a whole number in [1, 1024]"),
        (["train", "--model", "resnet8", "--dataset", "digits", "--steps", "99999999999999999999", "--out", "m.pt"],
         "error: --steps must be at most 100,000,000"),
        (["train", "--model", "resnet8", "--dataset", "digits", "--epochs", "1e300", "--out", "m.pt"],
         "error: --epochs must be at most 10,000"),
        (["train", "--model", "resnet8", "--dataset", "digits", "--steps", "1", "--lr", "inf", "--out", "m.pt"],
         "error: --lr must be a number in (0, 10]"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith(message), err
    assert len(err.splitlines()) == 1 and "╭" not in err and "Usage:" not in err
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_usage_error_echoing_control_characters_is_escaped(capsys):
    assert main(["prune", "--\x1b]8;;http://evil\x07x"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]8;;http://evil\\x07x" in err


def test_printable_escapes_control_and_bidi_characters():
    from hybridprune.cli import printable

    assert printable("a\x1b[31mb\nc\u202ed [bold]") == "a\\x1b[31mb\\nc\\u202ed [bold]"
    assert printable("naïve café 10%") == "naïve café 10%"


def test_usage_error_names_the_help_command(capsys):
    assert main(["prune", "--teacher", "x"]) == 2
    assert "(see: hybridprune prune --help)" in capsys.readouterr().err
