"""CLI commands ``hybridprune train`` and ``hybridprune evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _val_size(value: float) -> float | int:
    return int(value) if value >= 1 and float(value).is_integer() else value


def _load_data(dataset: str, data_dir: Optional[Path], val_size: float, seed: int, cache_dir: Optional[Path],
               image_size: Optional[int]):
    from hybridprune.data import load_dataset

    return load_dataset(dataset, data_dir, val_size=_val_size(val_size), seed=seed, cache_dir=cache_dir,
                        image_size=image_size)


def _check_classes(data, num_classes: int, source: str) -> None:
    from hybridprune.errors import DataError

    if data.num_classes != num_classes:
        raise DataError(f"{source} has {num_classes} output classes but dataset {data.name!r} has "
                        f"{data.num_classes}; use a checkpoint trained on this dataset")


def _fmt(result) -> str:
    top5 = f", top-5 {result.top5:.2%}" if result.top5 is not None else ""
    return f"top-1 {result.top1:.2%}{top5}, loss {result.loss:.4f} on {result.n} images"


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to ``app``."""

    @app.command("train")
    def train_cmd(
        dataset: str = typer.Option(..., help="Dataset: cifar10, cifar100, image_folder or digits."),
        out: Path = typer.Option(..., help="Checkpoint file to write."),
        model: Optional[str] = typer.Option(None, help="Architecture to train from scratch (e.g. resnet56)."),
        checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint to start from (fine-tune)."),
        data_dir: Optional[Path] = typer.Option(None, help="Dataset directory (not needed for digits)."),
        epochs: Optional[float] = typer.Option(None, help="Training epochs (fractions allowed)."),
        steps: Optional[int] = typer.Option(None, help="Training steps instead of epochs."),
        lr: Optional[float] = typer.Option(None, help="Peak learning rate [default: 0.1 from scratch, 0.01 from a checkpoint]."),
        batch_size: int = typer.Option(128, help="Batch size."),
        seed: int = typer.Option(0, help="Seed of the split, shuffling and augmentation."),
        val_size: float = typer.Option(0.1, help="Validation part of the training set: fraction < 1 or count."),
        cache_dir: Optional[Path] = typer.Option(None, help="Decoded-dataset cache directory."),
        image_size: Optional[int] = typer.Option(None, help="Resize images to this square size."),
        device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... [default: cuda if available]."),
        compile: bool = typer.Option(False, "--compile", help="Use torch.compile."),
        precision: str = typer.Option("auto", help="auto (bf16 where the hardware has it natively), bf16 or fp32."),
    ) -> None:
        """Train a model from scratch, or fine-tune a checkpoint, and save it with its metrics."""
        import torch
        from rich.console import Console

        from hybridprune.errors import ConfigError
        from hybridprune.models import create_model, get_model_spec, load_checkpoint, save_checkpoint
        from hybridprune.training import Budget, evaluate, finetune, resolve_precision, train

        prec = resolve_precision(precision, device)
        if (model is None) == (checkpoint is None):
            raise ConfigError("pass exactly one of --model (train from scratch) or --checkpoint (start from it)")
        budget = Budget(epochs=epochs, steps=steps)
        if out.exists() and out.is_dir():
            raise ConfigError(f"--out {out} is a directory; expected a checkpoint file path")
        data = _load_data(dataset, data_dir, val_size, seed, cache_dir, image_size)
        if checkpoint is not None:
            ck = load_checkpoint(checkpoint)
            _check_classes(data, ck.num_classes, f"checkpoint {checkpoint}")
            net, norm, name, kwargs, record = ck.model, ck.normalization, ck.model_name, ck.model_kwargs, ck.record
            fit = finetune
        else:
            spec = get_model_spec(model)
            net = create_model(model, num_classes=data.num_classes)
            norm, name, kwargs, record, fit = spec.normalization, model, net.hp_model_kwargs, None, train
        options = {"lr": lr} if lr is not None else {}
        console = Console(stderr=True)
        with _progress(console) as (progress, task):
            def on_step(s) -> None:
                stats = f"loss {s.loss:.3f}  acc {s.accuracy:.1%}  {s.images_per_second:.0f} img/s"
                progress.update(task, total=s.total_steps, completed=s.step, stats=stats)
                if not console.is_terminal and (s.step % max(1, s.total_steps // 20) == 0 or s.step == s.total_steps):
                    console.print(f"step {s.step}/{s.total_steps}  {stats}")  # a log file gets lines, not a bar

            result = fit(net, data, budget, norm, batch_size=batch_size, seed=seed, device=device, compile=compile,
                         precision=prec, progress=on_step, **options)
        test = evaluate(net, data.test, norm, device=device, precision=prec)
        metrics = {"dataset": dataset, "train": result.to_dict(), "test": test.to_dict(),
                   "val": result.val.to_dict() if result.val else None}
        net.to("cpu", memory_format=torch.contiguous_format)
        save_checkpoint(out, net, norm, model_name=name, model_kwargs=kwargs, record=record, metrics=metrics)
        typer.echo(f"trained {name} for {result.steps} steps ({result.epochs:.2f} epochs) in {result.seconds:.1f}s, "
                   f"{result.images_per_second:.0f} images/s, {result.precision}")
        if result.val:
            typer.echo(f"val:  {_fmt(result.val)}")
        typer.echo(f"test: {_fmt(test)}")
        typer.echo(f"saved {out}")

    @app.command("evaluate")
    def evaluate_cmd(
        checkpoint: Path = typer.Argument(..., help="Checkpoint (hybridprune or classic CIFAR ResNet .th)."),
        dataset: str = typer.Option(..., help="Dataset: cifar10, cifar100, image_folder or digits."),
        data_dir: Optional[Path] = typer.Option(None, help="Dataset directory (not needed for digits)."),
        split: str = typer.Option("test", help="test or val."),
        batch_size: int = typer.Option(256, help="Batch size."),
        seed: int = typer.Option(0, help="Seed of the validation split."),
        val_size: float = typer.Option(0.1, help="Validation part of the training set: fraction < 1 or count."),
        cache_dir: Optional[Path] = typer.Option(None, help="Decoded-dataset cache directory."),
        image_size: Optional[int] = typer.Option(None, help="Resize images to this square size."),
        device: Optional[str] = typer.Option(None, help="cpu, cuda ... [default: cuda if available]."),
        precision: str = typer.Option("auto", help="auto (bf16 where the hardware has it natively), bf16 or fp32."),
    ) -> None:
        """Report top-1 (and top-5) accuracy of a checkpoint on a dataset split."""
        from hybridprune.errors import ConfigError
        from hybridprune.models import load_checkpoint
        from hybridprune.training import evaluate, resolve_precision

        prec = resolve_precision(precision, device)
        if split not in ("test", "val"):
            raise ConfigError(f"--split must be test or val, got {split!r}")
        ck = load_checkpoint(checkpoint)
        data = _load_data(dataset, data_dir, val_size, seed, cache_dir, image_size)
        _check_classes(data, ck.num_classes, f"checkpoint {checkpoint}")
        part = getattr(data, split)
        if len(part) == 0:
            raise ConfigError(f"the {split} split is empty (--val-size 0?)")
        result = evaluate(ck.model, part, ck.normalization, batch_size=batch_size, device=device, precision=prec)
        typer.echo(f"{ck.model_name} on {dataset} {split} ({prec}): {_fmt(result)}")


class _progress:
    """A rich progress bar with a free-form stats field (loss, accuracy, images/s)."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.fields[stats]}"), console=console)

    def __enter__(self):
        self.progress.__enter__()
        return self.progress, self.progress.add_task("train", total=None, stats="")

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)
