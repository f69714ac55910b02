"""CLI commands ``hybridprune train`` and ``hybridprune evaluate``.

A checkpoint written by ``train`` records the data split it was trained with in
``metrics["split"]`` (a :class:`~hybridprune.records.SplitRecord`); ``train --checkpoint`` and
``evaluate`` reuse it unless ``--val-size``/``--seed``/``--val-from`` are given, so fine-tuning
never trains on the images a study (or an earlier run) held out for validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from hybridprune.commands import trust_model_code_option

DEFAULT_VAL_SIZE = 0.1
DEFAULT_SEED = 0


# (default, help) of the options ``train`` and ``evaluate`` share
SHARED_OPTIONS = {
    "dataset": (..., "Dataset: cifar10, cifar100, image_folder or digits."),
    "data_dir": (None, "Dataset directory (not needed for digits)."),
    "val_size": (None, "Validation part of the training set: fraction < 1 or count (default: the checkpoint's "
                       "split, else 0.1)."),
    "val_from": (None, "Where validation comes from: train (held out of the training set) or test (the first "
                       "--val-size of each test class by sorted file name; the rest stays test) or folder (an image "
                       "folder's val/). Default: the checkpoint's split, else train."),
    "cache_dir": (None, "Decoded-dataset cache directory."),
    "image_size": (None, "Resize images to this square size."),
    "device": (None, "cpu, cuda, cuda:1 ... (default: cuda if available)."),
    "precision": ("auto", "auto (bf16 where the hardware has it natively), bf16 or fp32."),
}


def _shared(name: str):
    """A fresh ``typer.Option`` for one of :data:`SHARED_OPTIONS`."""
    default, text = SHARED_OPTIONS[name]
    return typer.Option(default, help=text)


def _val_size(value: float) -> float | int:
    return int(value) if value >= 1 and float(value).is_integer() else value


def _split_of(ck, path: Path, dataset: str):
    """The :class:`~hybridprune.records.SplitRecord` in a checkpoint's metrics, if it is for ``dataset``."""
    from hybridprune.records import SplitRecord

    split = SplitRecord.from_metrics(ck.metrics, path)
    return split if split is not None and split.dataset == dataset else None


def _resolve_split(saved: Any, path: Optional[Path], val_size: Optional[float],
                   seed: Optional[int], val_from: Optional[str] = None) -> tuple[float | int, int, str]:
    """``--val-size``/``--seed``/``--val-from`` if given (warning when they differ from ``saved``), else
    ``saved``'s, else defaults."""
    from hybridprune.data.splits import VAL_FROM
    from hybridprune.errors import ConfigError

    if val_from is not None and val_from not in VAL_FROM:
        raise ConfigError(f"--val-from must be one of {', '.join(VAL_FROM)}, got {val_from!r}")
    if saved is None:
        return (_val_size(DEFAULT_VAL_SIZE if val_size is None else val_size),
                DEFAULT_SEED if seed is None else seed, val_from or "train")
    for flag, given, key in (("--val-size", val_size, "val_size"), ("--seed", seed, "seed"),
                             ("--val-from", val_from, "val_from")):
        if given is not None and given != getattr(saved, key):
            typer.echo(
                f"warning: {flag} {_val_size(given)} differs from the {key} {getattr(saved, key)} of the split "
                f"checkpoint {path} was trained with; the validation images may overlap its training images",
                err=True,
            )
    return (_val_size(saved.val_size if val_size is None else val_size), saved.seed if seed is None else seed,
            val_from or saved.val_from)


def _load_data(dataset: str, data_dir: Optional[Path], val_size: float | int, seed: int, cache_dir: Optional[Path],
               image_size: Optional[int], val_from: str = "train"):
    from hybridprune.data import load_dataset

    return load_dataset(dataset, data_dir, val_size=val_size, seed=seed, cache_dir=cache_dir, image_size=image_size,
                        val_from=val_from)


def _check_classes(data, num_classes: int, source: str) -> None:
    from hybridprune.errors import DataError

    if data.num_classes != num_classes:
        raise DataError(f"{source} has {num_classes} output classes but dataset {data.name!r} has "
                        f"{data.num_classes}; use a checkpoint trained on this dataset")


def _load_teacher(path: Path, data, student_input: tuple, student_norm, trust_model_code: bool = False):
    """The teacher checkpoint as a module taking the student's normalised inputs (one-line errors on misfit)."""
    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.errors import DataError

    tck = load_checkpoint(path, trust_model_code=trust_model_code)
    _check_classes(data, tck.num_classes, f"teacher {path}")  # the student's classes are the dataset's
    for what, size in ((f"dataset {data.name!r} has images of size", tuple(data.image_size)),
                       ("the student takes", tuple(student_input))):
        if tuple(tck.input_size) != size:
            raise DataError(f"teacher {path} takes inputs of size {list(tck.input_size)} but {what} {list(size)}; "
                            f"distil from a teacher trained at the same size")
    return _renormalized(tck.model, student_norm, tck.normalization)


def _renormalized(net, source, target):
    """``net``, trained on inputs normalised with ``target``, as a module taking ``source``-normalised inputs."""
    if source == target:
        return net
    import torch

    class Renormalized(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            src_std, src_mean = torch.tensor(source.std), torch.tensor(source.mean)
            tgt_std, tgt_mean = torch.tensor(target.std), torch.tensor(target.mean)
            self.register_buffer("scale", (src_std / tgt_std).view(1, -1, 1, 1))
            self.register_buffer("shift", ((src_mean - tgt_mean) / tgt_std).view(1, -1, 1, 1))

        def forward(self, x):
            return self.net(x * self.scale + self.shift)

    return Renormalized()


def _fmt(result) -> str:
    top5 = f", top-5 {result.top5:.2%}" if result.top5 is not None else ""
    return f"top-1 {result.top1:.2%}{top5}, loss {result.loss:.4f} on {result.n} images"


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


def train_cmd(
    dataset: str = _shared("dataset"),
    out: Path = typer.Option(..., help="Checkpoint file to write."),
    model: Optional[str] = typer.Option(None, help="Architecture to train from scratch (e.g. resnet56)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint to start from (fine-tune)."),
    teacher: Optional[Path] = typer.Option(None, help="Checkpoint to distil from (knowledge distillation)."),
    data_dir: Optional[Path] = _shared("data_dir"),
    epochs: Optional[float] = typer.Option(None, help="Training epochs (fractions allowed)."),
    steps: Optional[int] = typer.Option(None, help="Training steps instead of epochs."),
    lr: Optional[float] = typer.Option(
        None, help="Peak learning rate (default: 0.1 from scratch, 0.01 from a checkpoint)."
    ),
    batch_size: int = typer.Option(128, help="Batch size."),
    seed: Optional[int] = typer.Option(
        None,
        help="Seed of the split, weights, shuffling and augmentation "
        "(default: the checkpoint's split seed, else 0).",
    ),
    val_size: Optional[float] = _shared("val_size"),
    val_from: Optional[str] = _shared("val_from"),
    cache_dir: Optional[Path] = _shared("cache_dir"),
    image_size: Optional[int] = _shared("image_size"),
    device: Optional[str] = _shared("device"),
    compile: bool = typer.Option(False, "--compile", help="Use torch.compile."),
    precision: str = _shared("precision"),
    trust_model_code: bool = trust_model_code_option(),
) -> None:
    """Train a model from scratch, or fine-tune a checkpoint, and save it with its metrics."""
    import torch
    from rich.console import Console

    from hybridprune.accuracy import evaluate
    from hybridprune.checkpoints import load_checkpoint, save_checkpoint
    from hybridprune.cli import printable
    from hybridprune.devices import resolve_precision, seed_everything
    from hybridprune.errors import ConfigError
    from hybridprune.models import create_model, get_model_spec
    from hybridprune.recipe import Recipe
    from hybridprune.records import Metrics as M
    from hybridprune.records import SplitRecord
    from hybridprune.training import finetune, train

    prec = resolve_precision(precision, device)
    if (model is None) == (checkpoint is None):
        raise ConfigError("pass exactly one of --model (train from scratch) or --checkpoint (start from it)")
    recipe = Recipe(epochs=epochs, steps=steps, lr=lr, batch_size=batch_size, precision=prec)
    from hybridprune.io import check_writable

    check_writable(out, "--out", directory=False)  # before training, not after
    ck = load_checkpoint(checkpoint, trust_model_code=trust_model_code) if checkpoint is not None else None
    val_size, seed, val_from = _resolve_split(_split_of(ck, checkpoint, dataset) if ck else None, checkpoint,
                                              val_size, seed, val_from)
    data = _load_data(dataset, data_dir, val_size, seed, cache_dir, image_size, val_from)
    if ck is not None:
        _check_classes(data, ck.num_classes, f"checkpoint {checkpoint}")
        net, norm, name, kwargs, record = ck.model, ck.normalization, ck.model_name, ck.model_kwargs, ck.record
        input_size, fit = tuple(ck.input_size), finetune
    else:
        spec = get_model_spec(model)
        seed_everything(seed)  # the initial weights are the first thing drawn
        net = create_model(model, num_classes=data.num_classes)
        norm, name, kwargs, record, fit = spec.normalization, model, net.hp_model_kwargs, None, train
        input_size = tuple(data.image_size)
    options = recipe.train_kwargs()
    if teacher is not None:
        options["teacher"] = _load_teacher(teacher, data, input_size, norm, trust_model_code)
    console = Console(stderr=True)
    with _progress(console) as (progress, task):
        def on_step(s) -> None:
            progress.update(task, total=s.total_steps, completed=s.step)
            if s.step % 10 and s.step != s.total_steps:
                return  # reading loss/accuracy waits for the device; every 10th step is enough for a bar
            stats = f"loss {s.loss:.3f}  acc {s.accuracy:.1%}  {s.images_per_second:.0f} img/s"
            progress.update(task, stats=stats)
            if not console.is_terminal and (
                s.step % max(10, s.total_steps // 200 * 10) == 0 or s.step == s.total_steps
            ):
                console.print(f"step {s.step}/{s.total_steps}  {stats}")  # a log file gets lines, not a bar

        result = fit(net, data, recipe.budget, norm, seed=seed, device=device, compile=compile, progress=on_step,
                     **options)
    test = evaluate(net, data.test, norm, device=device, precision=prec)
    metrics = {M.DATASET: dataset, M.TRAIN: result.to_dict(), M.TEST: test.to_dict(),
               M.VAL: result.val.to_dict() if result.val else None,
               M.SPLIT: SplitRecord(dataset, val_size, seed, val_from).to_dict()}
    if teacher is not None:
        metrics[M.TEACHER] = teacher.name
    net.to("cpu", memory_format=torch.contiguous_format)
    save_checkpoint(out, net, norm, model_name=name, model_kwargs=kwargs, record=record, metrics=metrics,
                    input_size=input_size)
    typer.echo(f"trained {printable(name)} for {result.steps} steps ({result.epochs:.2f} epochs) "
               f"in {result.seconds:.1f}s, "
               f"{result.images_per_second:.0f} images/s, {result.precision}")
    if result.val:
        typer.echo(f"val:  {_fmt(result.val)}")
    typer.echo(f"test: {_fmt(test)}")
    typer.echo(f"saved {out}")

def evaluate_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (hybridprune or classic CIFAR ResNet .th)."),
    dataset: str = _shared("dataset"),
    data_dir: Optional[Path] = _shared("data_dir"),
    split: str = typer.Option("test", help="test or val."),
    batch_size: int = typer.Option(256, help="Batch size."),
    seed: Optional[int] = typer.Option(
        None, help="Seed of the validation split (default: the checkpoint's, else 0)."
    ),
    val_size: Optional[float] = _shared("val_size"),
    val_from: Optional[str] = _shared("val_from"),
    cache_dir: Optional[Path] = _shared("cache_dir"),
    image_size: Optional[int] = _shared("image_size"),
    device: Optional[str] = _shared("device"),
    precision: str = _shared("precision"),
    trust_model_code: bool = trust_model_code_option(),
) -> None:
    """Report top-1 (and top-5) accuracy of a checkpoint on a dataset split."""
    from hybridprune.accuracy import evaluate
    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.cli import printable
    from hybridprune.devices import resolve_precision
    from hybridprune.errors import ConfigError

    prec = resolve_precision(precision, device)
    if split not in ("test", "val"):
        raise ConfigError(f"--split must be test or val, got {split!r}")
    ck = load_checkpoint(checkpoint, trust_model_code=trust_model_code)
    val_size, seed, val_from = _resolve_split(_split_of(ck, checkpoint, dataset), checkpoint, val_size, seed,
                                              val_from)
    data = _load_data(dataset, data_dir, val_size, seed, cache_dir, image_size, val_from)
    _check_classes(data, ck.num_classes, f"checkpoint {checkpoint}")
    part = getattr(data, split)
    if len(part) == 0:
        raise ConfigError(f"the {split} split is empty (--val-size 0?)")
    result = evaluate(ck.model, part, ck.normalization, batch_size=batch_size, device=device, precision=prec)
    where = f", validation from the test folder (val_size {val_size:g})" if val_from == "test" else ""
    typer.echo(f"{printable(ck.model_name)} on {dataset} {split} ({prec}{where}): {_fmt(result)}")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to ``app``."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
