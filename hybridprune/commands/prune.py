"""CLI: ``hybridprune prune`` (hybrid channel + block pruning) and ``hybridprune info [FILE] [--model REF]``.

Everything that comes from a file (names, kwargs, metrics, record entries) is printed literally,
through :func:`hybridprune.cli.printable` and :class:`rich.text.Text`, never as Rich markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from hybridprune.commands import trust_model_code_option


def _load(model: Optional[str], checkpoint: Optional[Path], trust_model_code: bool = False):
    """(model, name, kwargs, normalization, input_size, record, metrics) from a file or the registry."""
    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.errors import ConfigError
    from hybridprune.models import create_model, get_model_spec

    if checkpoint is not None:
        ck = load_checkpoint(checkpoint, model_name=model, trust_model_code=trust_model_code)
        return ck.model, ck.model_name, ck.model_kwargs, ck.normalization, ck.input_size, ck.record, ck.metrics
    if model is None:
        raise ConfigError("give --checkpoint FILE (a hybridprune or classic checkpoint) and/or --model NAME")
    spec = get_model_spec(model)
    m = create_model(model)
    return m, spec.name, m.hp_model_kwargs, spec.normalization, spec.input_size, None, {}


def _calibration(calib_dir: Optional[Path], dataset: str, n_batches: int, batch_size: int, normalization, seed: int):
    from hybridprune.data import calibration_batches, load_dataset

    splits = load_dataset(dataset, calib_dir, val_size=0, seed=seed)
    return calibration_batches(splits.train, normalization, n_batches, batch_size=batch_size, seed=seed)


def _options(items: list[str]) -> dict[str, Any]:
    """Parse KEY=VALUE pairs; values are JSON when they parse as JSON (numbers), else strings."""
    import json

    from hybridprune.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--criterion-option must look like KEY=VALUE (e.g. p=2), got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _widths(arch: dict[str, Any]) -> str:
    parts = []
    for stage, s in arch["stages"].items():
        internal = s["internal"]
        inner = f"{min(internal)}-{max(internal)}" if internal and min(internal) != max(internal) else (
            str(internal[0]) if internal else "-"
        )
        parts.append(f"{stage}: {s['stream']} / {inner}")
    return "; ".join(parts) or "-"


def _blocks(arch: dict[str, Any]) -> str:
    if not arch["stages"]:
        return "-"
    per = "+".join(str(s["blocks"]) for s in arch["stages"].values())
    return f"{arch['blocks']} ({per})"


def prune_cmd(
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", "-c", help="Checkpoint to prune (hybridprune or classic .th)."
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Registry name, path/to/file.py:callable or package.module:callable "
        "(inferred from classic files; needed for a plain state_dict).",
    ),
    ratio: float = typer.Option(0.0, help="Fraction of channels to remove, in [0, 1)."),
    blocks: int = typer.Option(0, help="Number of residual blocks to remove."),
    criterion: str = typer.Option(
        "weight_magnitude",
        help="Channel/block criterion, e.g. weight_magnitude, taylor_feature_map (an unknown name lists all).",
    ),
    criterion_option: list[str] = typer.Option(
        [], help="KEY=VALUE criterion option, e.g. p=2 (L2)."
    ),
    order: str = typer.Option("channel_first", help="channel_first or layer_first."),
    scope: str = typer.Option("internal", help="internal (inside blocks) or all (residual stream too)."),
    allocation: str = typer.Option("uniform", help="uniform or global."),
    round_to: int = typer.Option(1, help="Round kept channels to a multiple of this."),
    seed: int = typer.Option(0, help="Seed (random criterion, calibration sample)."),
    calib_dir: Optional[Path] = typer.Option(
        None, help="Calibration images (image_folder tree) for data-driven criteria."
    ),
    calib_dataset: str = typer.Option("image_folder", help="Dataset format of --calib-dir."),
    calib_batches: int = typer.Option(4, help="Calibration batches."),
    calib_batch_size: int = typer.Option(64, help="Calibration batch size."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the pruned checkpoint."),
    trust_model_code: bool = trust_model_code_option(),
) -> None:
    """Prune channels and residual blocks of a model and write the pruned checkpoint."""
    import torch
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hybridprune.checkpoints import save_checkpoint
    from hybridprune.cli import printable
    from hybridprune.errors import ConfigError
    from hybridprune.io import check_writable
    from hybridprune.models.complexity import complexity, describe_architecture
    from hybridprune.pruning import HybridConfig, prune_model
    from hybridprune.pruning.criteria import data_free_criteria
    from hybridprune.records import Metrics as M

    check_writable(out, "--out", directory=False)
    config = HybridConfig(
        channel_ratio=ratio, pruned_blocks=blocks, criterion=criterion, order=order, scope=scope,
        allocation=allocation, round_to=round_to, calib_batches=calib_batches, seed=seed,
        criterion_options=_options(criterion_option),
    )
    net, name, kwargs, norm, input_size, record, metrics = _load(model, checkpoint, trust_model_code)
    if record:
        raise ConfigError(f"{checkpoint} is already pruned; prune its unpruned base checkpoint instead")
    calib = None
    if config.make_criterion().data_driven:
        if calib_dir is None:
            raise ConfigError(
                f"criterion {criterion!r} is data-driven: pass --calib-dir DIR (train/<class>/*.jpg); "
                f"data-free criteria: {', '.join(data_free_criteria())}"
            )
        calib = _calibration(calib_dir, calib_dataset, calib_batches, calib_batch_size, norm, seed)
    example = torch.zeros(1, *input_size)
    result = prune_model(net, config, example, calib)
    before, after = complexity(net, input_size), complexity(result.model, input_size)
    arch0, arch1 = describe_architecture(net), describe_architecture(result.model)
    save_checkpoint(
        out, result.model, norm, model_name=name, model_kwargs=kwargs, record=result.record.to_dict(),
        input_size=input_size, metrics={M.PARAMS: after.params, M.MACS: after.macs},
    )

    table = Table(title=_cell(f"{name}: ratio {ratio}, {blocks} blocks, {criterion}, {order}, scope {scope}"))
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    table.add_row("parameters", f"{before.params:,}", f"{after.params:,}", f"{after.params / before.params - 1:+.1%}")
    table.add_row(
        "MACs", f"{before.macs / 1e6:.2f}M", f"{after.macs / 1e6:.2f}M", f"{after.macs / before.macs - 1:+.1%}"
    )
    change = f"{-len(result.removed_blocks):+d}" if result.removed_blocks else "0"
    if arch0["stages"]:  # ResNets: per-stage summary
        table.add_row("residual blocks", _blocks(arch0), _blocks(arch1), change)
        table.add_row("widths (stream / internal)", _cell(_widths(arch0)), _cell(_widths(arch1)), "")
    else:
        from hybridprune.models.blocks import removable_blocks

        table.add_row("removable residual blocks", str(len(removable_blocks(net, example))),
                      str(len(removable_blocks(result.model, example))), change)
    console = Console(highlight=False)
    console.print(table)
    console.print(Text(printable(f"removed blocks: {', '.join(result.removed_blocks) or 'none'}")))
    console.print(Text(printable(f"wrote {out}")))


def _cell(value: Any):
    """A table cell showing ``value`` literally (no Rich markup, control characters escaped)."""
    from rich.text import Text

    from hybridprune.cli import printable

    if isinstance(value, float):
        return Text(f"{value:.6g}")
    return Text(printable(value))


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _metric_cell(value: Any, key: str = ""):
    """A metric: accuracies as percent, a latency record as one line, other dicts as a key/value table."""
    from rich.table import Table

    if key.endswith(("top1", "top5")) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _cell(f"{100 * value:.2f}%")
    if key == "latency" and isinstance(value, dict) and "median_ms" in value:
        extra = value.get("extra") or {}
        ratio = f" ({extra['latency_ratio']:.3f} x the baseline)" if "latency_ratio" in extra else ""
        return _cell(f"median {value['median_ms']:.3f} ms{ratio}, {value.get('backend')} on {value.get('device')}, "
                     f"batch {value.get('batch_size')}, {value.get('precision')}, {value.get('runs')} runs")
    if not isinstance(value, dict) or not value:
        return _cell(value)
    grid = Table(show_header=False, box=None, pad_edge=False)
    grid.add_column("key", style="dim")
    grid.add_column("value")
    for k, v in _flatten(value):
        grid.add_row(_cell(k), _cell(v))
    return grid


def _blocks_table(model, input_size) -> Any:
    """Removable residual blocks (found by structure) with their widths."""
    import torch
    from rich.table import Table

    from hybridprune.models.blocks import find_blocks

    blocks = find_blocks(model, torch.zeros(1, *input_size))
    table = Table(title=f"removable residual blocks: {len(blocks)}")
    for col, justify in (("block", "left"), ("channels in/out", "right"), ("conv widths inside", "left")):
        table.add_column(col, justify=justify)
    for b in blocks:
        table.add_row(_cell(b.name), str(b.channels), _cell(" -> ".join(str(c) for _, c in b.convs) or "-"))
    return table


def info_cmd(
    file: Optional[Path] = typer.Argument(None, help="A hybridprune checkpoint, classic .th or plain state_dict."),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Registry name or path/to/file.py:callable / package.module:callable "
        "(describes a fresh model without FILE; names the model of a plain state_dict).",
    ),
    trust_model_code: bool = trust_model_code_option(),
) -> None:
    """Describe a checkpoint or model: classes, normalisation, pruning record, size, removable blocks, metrics."""
    from rich.console import Console
    from rich.table import Table

    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.errors import ConfigError
    from hybridprune.models import create_model, get_model_spec
    from hybridprune.models.complexity import complexity, describe_architecture
    from hybridprune.pruning import PruningRecord

    if file is None and model is None:
        raise ConfigError("give a checkpoint FILE and/or --model NAME (or --model path/to/file.py:callable)")
    if file is not None:
        ck = load_checkpoint(file, model_name=model, trust_model_code=trust_model_code)
        net, name, kwargs, norm, input_size = ck.model, ck.model_name, ck.model_kwargs, ck.normalization, ck.input_size
        fmt, record, metrics, title = ck.source_format, ck.record, ck.metrics, str(file)
    else:
        spec = get_model_spec(model)
        net = create_model(model)
        name, kwargs, norm, input_size = spec.name, net.hp_model_kwargs, spec.normalization, spec.input_size
        fmt, record, metrics, title = "fresh model (no weights)", None, {}, name
    size = complexity(net, input_size)
    arch = describe_architecture(net)
    table = Table(title=_cell(title), show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")  # long paths wrap, never end in an ellipsis
    table.add_row("model", _cell(f"{name} {kwargs}"))
    table.add_row("format", _cell(fmt))
    table.add_row("classes", _cell(kwargs.get("num_classes")))
    table.add_row("input size", _cell("x".join(str(v) for v in input_size)))
    where = "" if file is not None else " (the registry's default; a trained checkpoint records its own)"
    table.add_row("normalization", _cell(f"mean {norm.mean}, std {norm.std}{where}"))
    table.add_row("pruning", _cell(PruningRecord.from_dict(record).summary() if record else "not pruned"))
    if record and isinstance(record.get("config"), dict):
        table.add_row("pruning config", _cell(", ".join(f"{k}={v}" for k, v in record["config"].items())))
    table.add_row("parameters", f"{size.params:,}")
    table.add_row("MACs", f"{size.macs / 1e6:.2f}M")
    if arch["stages"]:  # ResNet stage summary; every model gets the removable-block table below
        table.add_row("residual blocks", _cell(_blocks(arch)))
        table.add_row("widths (stream / internal)", _cell(_widths(arch)))
    for k, v in sorted(metrics.items()):
        table.add_row(_cell(f"metric {k}"), _metric_cell(v, k))
    console = Console(highlight=False)
    console.print(table)
    console.print(_blocks_table(net, input_size))


def register(app: typer.Typer) -> None:
    """Add ``prune`` and ``info`` to ``app``."""
    app.command("prune")(prune_cmd)
    app.command("info")(info_cmd)
