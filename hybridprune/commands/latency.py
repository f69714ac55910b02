"""CLI: ``hybridprune latency MODEL`` and ``hybridprune agent serve``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from hybridprune.commands import trust_model_code_option
from hybridprune.evaluators.base import DEFAULT_BACKEND

agent_app = typer.Typer(help="The device latency agent (stdlib-only; copy agent.pyz to a Jetson).",
                        no_args_is_help=True)


# CLI flag -> the backend option it sets; a flag applies to the backends whose option_names() list it
FLAG_OPTIONS = {"--url": "url", "--token": "token", "--threads": "threads", "--device": "device"}


def _backends_with(option: str) -> list[str]:
    """Registered latency backends accepting constructor option ``option``."""
    from hybridprune.evaluators.base import LATENCY_BACKENDS
    from hybridprune.evaluators.registry import list_latency_backends

    return [n for n in list_latency_backends() if option in LATENCY_BACKENDS.get(n).option_names()]


def _flag_help(text: str, option: str) -> str:
    return f"{text} (--backend {', '.join(_backends_with(option))})."


def _backend_help() -> str:
    from hybridprune.evaluators.base import LATENCY_BACKENDS
    from hybridprune.evaluators.registry import list_latency_backends

    parts = []
    for name in list_latency_backends():
        cls = LATENCY_BACKENDS.get(name)
        parts.append(f"{name} ({'/'.join(cls.precisions)}{', default' if name == DEFAULT_BACKEND else ''})")
    return "Latency backend: " + ", ".join(parts) + "."


def latency_cmd(
    model: Path = typer.Argument(..., help="An .onnx file or a hybridprune/classic checkpoint (.pt/.th)."),
    backend: str = typer.Option(DEFAULT_BACKEND, "--backend", "-b", help=_backend_help()),
    url: Optional[str] = typer.Option(None, help=_flag_help("Agent URL", "url")),
    token: Optional[str] = typer.Option(None, envvar="HYBRIDPRUNE_AGENT_TOKEN",
                                        help=_flag_help("Agent token", "token")),
    batch: int = typer.Option(1, help="Batch size."),
    precision: str = typer.Option("fp32", help="fp32, or what --backend lists (fp16, ...)."),
    threads: Optional[int] = typer.Option(None, help=_flag_help("CPU threads", "threads")),
    device: Optional[str] = typer.Option(None, help=_flag_help("cpu or cuda", "device")),
    max_time: float = typer.Option(10.0, help="Time cap of the timed runs (seconds)."),
    rel_ci: float = typer.Option(0.01, help="Stop when the median's CI half-width/median <= this."),
    input_size: Optional[str] = typer.Option(None, help="C,H,W (default: from the checkpoint)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON here."),
    trust_model_code: bool = trust_model_code_option(),
) -> None:
    """Measure a model's latency and print a statistics table."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hybridprune.cli import printable
    from hybridprune.errors import ConfigError
    from hybridprune.evaluators import get_latency_backend
    from hybridprune.evaluators.base import LATENCY_BACKENDS
    from hybridprune.io import check_writable

    if json_out is not None:
        check_writable(json_out, "--json", directory=False)
    accepted = LATENCY_BACKENDS.get(backend).option_names()  # unknown name: error listing the valid ones
    options: dict = {"max_time_s": max_time, "rel_ci": rel_ci}
    given = {"--url": url, "--token": token, "--threads": threads, "--device": device}
    for flag, value in given.items():
        option = FLAG_OPTIONS[flag]
        if value is None:
            continue
        if option in accepted:
            options[option] = value
        elif flag != "--token":  # a token may come from $HYBRIDPRUNE_AGENT_TOKEN: ignored where unused
            raise ConfigError(f"{flag} is only used with --backend {' or '.join(_backends_with(option))}")
    if "url" in accepted and not url:
        raise ConfigError(f"--backend {backend} needs --url http://HOST:PORT of a running agent")
    evaluator = get_latency_backend(backend, **options)
    target, shape = _load(model, input_size, trust_model_code)
    result = evaluator.measure(target, input_shape=shape, batch_size=batch, precision=precision)

    # the file name and the device's self-description are printed literally (no Rich markup)
    table = Table(title=Text(printable(f"latency of {model.name} ({result.backend}, batch {result.batch_size}, "
                                       f"{result.precision})")))
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for label, value in [("median", result.median_ms), ("mean", result.mean_ms), ("p90", result.p90_ms),
                         ("p99", result.p99_ms), ("std", result.std_ms), ("min", result.min_ms),
                         ("max", result.max_ms), ("median CI low", result.ci_low_ms),
                         ("median CI high", result.ci_high_ms)]:
        table.add_row(f"{label} (ms)", "-" if math.isnan(value) else f"{value:.4f}")
    table.add_row("per sample (ms)", f"{result.per_sample_ms:.4f}")
    table.add_row("runs", str(result.runs))
    table.add_row("stable (CI within target)", "yes" if result.stable else "no (time cap)")
    table.add_row("device", Text(printable(result.device)))
    table.add_row("versions", Text(printable(", ".join(f"{k} {v}" for k, v in sorted(result.versions.items())))))
    if "threads" in result.extra:
        table.add_row("threads", str(result.extra["threads"]))
    Console(highlight=False).print(table)
    if json_out is not None:
        import json

        from hybridprune.io import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))


def _load(model: Path, input_size: str | None, trust_model_code: bool = False) -> tuple[object, tuple[int, ...]]:
    """Return (module or ONNX path, per-sample input shape)."""
    from hybridprune.errors import CheckpointError, ConfigError

    shape: tuple[int, ...] | None = None
    if input_size:
        try:
            shape = tuple(int(p) for p in input_size.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"--input-size must be C,H,W positive integers, got {input_size!r}")
    if not model.exists():
        raise CheckpointError(f"model file {model} does not exist")
    if model.suffix == ".onnx":
        return model, shape or (3, 32, 32)
    from hybridprune.checkpoints import load_checkpoint

    loaded = load_checkpoint(model, trust_model_code=trust_model_code)
    return loaded.model, shape or tuple(loaded.input_size)


def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8470, help="Port (0 = any free port)."),
    token: Optional[str] = typer.Option(None, envvar="HYBRIDPRUNE_AGENT_TOKEN", help="Require this token."),
    backend: str = typer.Option("auto", help="auto (trtexec where installed), trtexec or onnxruntime."),
    max_bytes: int = typer.Option(256 * 1024 * 1024, help="Largest model upload (bytes)."),
    threads: int = typer.Option(1, help="onnxruntime intra-op threads."),
) -> None:
    """Run the device agent here (the same agent.py a Jetson runs)."""
    from hybridprune.errors import ConfigError
    from hybridprune.evaluators import agent

    argv = ["--host", host, "--port", str(port), "--backend", backend, "--max-bytes", str(max_bytes),
            "--threads", str(threads)] + (["--token", token] if token else [])
    if backend not in agent.AGENT_BACKENDS:
        choices = ", ".join(agent.AGENT_BACKENDS[:-1]) + " or " + agent.AGENT_BACKENDS[-1]
        raise ConfigError(f"--backend must be {choices}, got {backend!r}")
    code = agent.main(argv)
    if code:
        raise typer.Exit(code)


def bundle_cmd(
    output: Path = typer.Option(Path("agent.pyz"), "--output", "-o", help="The .pyz file to write."),
) -> None:
    """Pack the agent (agent.py, timing.py, trtexec.py) into one zipapp for the device (python3 agent.pyz)."""
    from hybridprune.evaluators.bundle import build_agent_bundle

    path = build_agent_bundle(output)
    typer.echo(f"wrote {path} ({path.stat().st_size} bytes); on the device: python3 {path.name} --help")


def register(app: typer.Typer) -> None:
    """Add ``latency`` and the ``agent`` sub-app (``agent serve``, ``agent bundle``) to ``app``."""
    app.command("latency")(latency_cmd)
    agent_app.command("serve")(serve_cmd)
    agent_app.command("bundle")(bundle_cmd)
    app.add_typer(agent_app, name="agent")
