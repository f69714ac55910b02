"""The unpruned baseline of a study: ``model.checkpoint`` (adapted to the data when asked) or trained once.

Both are cached in the run directory (``baseline.pt``, ``adapted.pt``) under a file lock, so
parallel workers make them once and re-runs reuse them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hybridprune.errors import ConfigError
from hybridprune.io import device_lock
from hybridprune.search.config import StudyConfig
from hybridprune.search.split import describe_split, split_record

log = logging.getLogger(__name__)


def load_baseline(cfg: StudyConfig, data: Any, *, train_if_missing: bool = True) -> tuple[Any, Any, dict]:
    """The unpruned model: ``model.checkpoint`` or the baseline trained once and cached.

    The cache is ``<cache_dir>/baseline.pt``; training holds a file lock so parallel workers train it
    once. Re-runs reuse it.

    Args:
        cfg: The study.
        data: Its data (for training and for the class count check).
        train_if_missing: Train when no checkpoint and no cache exist (else ConfigError).

    Returns:
        ``(model, normalization, metrics)``.

    Raises:
        CheckpointError: unreadable checkpoint. ConfigError: class-count mismatch.
    """
    from hybridprune.checkpoints import load_checkpoint

    def check(model: Any, where: str) -> None:
        n = int(model.hp_model_kwargs.get("num_classes", -1)) if hasattr(model, "hp_model_kwargs") else -1
        if n != data.num_classes:
            raise ConfigError(f"{where} has {n} classes but dataset {cfg.data.dataset!r} has {data.num_classes}")

    if cfg.model.checkpoint:
        loaded = load_checkpoint(cfg.model.checkpoint, cfg.model.name)
        check(loaded.model, f"model.checkpoint {cfg.model.checkpoint}")
        if cfg.baseline.adapt_epochs is not None:
            return adapt_baseline(cfg, data, loaded, train_if_missing=train_if_missing)
        return loaded.model, loaded.normalization, dict(loaded.metrics)
    path = cfg.baseline_path
    loaded = train_once(cfg, data, cfg.model.name, cfg.model.kwargs, path, train_if_missing=train_if_missing)
    check(loaded.model, f"cached baseline {path}")
    return loaded.model, loaded.normalization, dict(loaded.metrics)


def train_once(cfg: StudyConfig, data: Any, name: str, kwargs: dict, path: Path, *, train_if_missing: bool = True,
               label: str = "baseline") -> Any:
    """``name`` trained from scratch with the ``[baseline]`` recipe once, cached at ``path`` (under a lock).

    The baseline of a study without ``model.checkpoint``, and a reference model without a checkpoint.

    Returns:
        The :class:`~hybridprune.checkpoints.LoadedCheckpoint`.
    """
    from hybridprune.checkpoints import load_checkpoint, save_checkpoint
    from hybridprune.models import create_model, get_model_spec
    from hybridprune.records import Metrics as M

    want = {"model": name, "kwargs": dict(kwargs), "recipe": {"epochs": cfg.baseline.epochs,
            "steps": cfg.baseline.steps, "lr": cfg.baseline.lr, "batch_size": cfg.baseline.batch_size},
            "seed": cfg.study.seed, "split": split_record(cfg), "train_subset": cfg.data.train_subset}
    with device_lock(cfg.cache_dir / "baseline.lock"):
        cached = load_checkpoint(path, name) if path.is_file() else None
        if cached is None or cached.metrics.get(M.TRAINED_WITH, want) != want:  # another study's file: train anew
            if not train_if_missing:
                raise ConfigError(f"no {label} trained for this study at {path}; run the study first: "
                                  f"hybridprune run {cfg.path}")
            from hybridprune.accuracy import evaluate
            from hybridprune.devices import seed_everything
            from hybridprune.training import train

            b = cfg.baseline
            seed_everything(cfg.study.seed)  # the initial weights too: the same study trains the same model
            model = create_model(name, num_classes=data.num_classes, **kwargs)
            norm = get_model_spec(name).normalization
            print(f"training the unpruned {label} {name} first ({b.budget}); cached at {path} for re-runs", flush=True)
            result = train(model, data, b.budget, norm, **b.train_kwargs(), seed=cfg.study.seed, device="cpu",
                           progress=_baseline_progress(label=label))
            acc = evaluate(model, data.val, norm, device="cpu", precision=b.precision).top1
            save_checkpoint(path, model.cpu(), norm, metrics={M.VAL_TOP1: acc, M.TRAIN: result.to_dict(),
                                                              M.SPLIT: split_record(cfg), M.TRAINED_WITH: want})
            cached = load_checkpoint(path, name)
    return cached


def adapted_path(cfg: StudyConfig) -> Path:
    """Where the adapted baseline (``[baseline] adapt_epochs``) is cached: ``adapted.pt``, or
    ``adapted-train<N>.pt`` when ``[data] train_subset`` adapts it on N images only, so that a
    subset run (``benchmarks/search.py --train-subset``) sharing the cache folder does not replace
    the full-data model, which would then be adapted again (several minutes) at the next full run."""
    n = cfg.data.train_subset
    return cfg.cache_dir / ("adapted.pt" if n is None else f"adapted-train{n}.pt")


def _adaptation(cfg: StudyConfig, checkpoint: str | Path) -> dict[str, Any]:
    """What a cached adapted model must have been made from (a mismatch adapts again)."""
    import hashlib

    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    b = cfg.baseline
    return {"checkpoint_sha256": digest, "epochs": b.adapt_epochs, "lr": b.adapt_lr, "batch_size": b.batch_size,
            "split": split_record(cfg), "train_subset": cfg.data.train_subset}


def adapt_baseline(cfg: StudyConfig, data: Any, loaded: Any, *, train_if_missing: bool = True,
                   checkpoint: str | Path | None = None, model_name: str | None = None, path: Path | None = None,
                   label: str = "model.checkpoint") -> tuple[Any, Any, dict]:
    """A checkpoint fine-tuned ``[baseline] adapt_epochs`` on the train split, once, cached in
    ``cfg.cache_dir`` (``[baseline] cache_dir`` or the run directory).

    By default ``model.checkpoint`` into :func:`adapted_path`; a reference model passes its own
    ``checkpoint``, ``model_name``, cache ``path`` and ``label``. Its validation and test top-1 are
    recorded in the checkpoint's metrics and printed.

    Returns:
        ``(model, normalization, metrics)`` of the adapted model.
    """
    from hybridprune.accuracy import evaluate
    from hybridprune.checkpoints import load_checkpoint, save_checkpoint
    from hybridprune.devices import seed_everything
    from hybridprune.recipe import Budget
    from hybridprune.records import Metrics as M
    from hybridprune.training import finetune

    checkpoint = checkpoint or cfg.model.checkpoint
    model_name = model_name or cfg.model.name
    path, want = path or adapted_path(cfg), _adaptation(cfg, checkpoint)
    with device_lock(cfg.cache_dir / "baseline.lock"):
        cached = load_checkpoint(path, model_name) if path.is_file() else None
        if cached is None or cached.metrics.get(M.ADAPTED_FROM) != want:
            if not train_if_missing:
                raise ConfigError(f"the adapted baseline {path} is missing or was made from other settings; "
                                  f"run the study first: hybridprune run {cfg.path}")
            b = cfg.baseline
            print(f"adapting {label} to {cfg.data.dataset}: {b.adapt_epochs:g} epoch(s), lr {b.adapt_lr:g}; "
                  f"cached at {path}", flush=True)
            seed_everything(cfg.study.seed)
            model = loaded.model
            norm = loaded.normalization
            before = evaluate(model, data.val, norm, device="cpu", precision=b.precision).top1
            result = finetune(model, data, Budget(epochs=b.adapt_epochs), norm, lr=b.adapt_lr,
                              batch_size=b.batch_size, precision=b.precision, seed=cfg.study.seed, device="cpu",
                              evaluate_val=False, progress=_baseline_progress(label="adapt"))
            val = evaluate(model, data.val, norm, device="cpu", precision=b.precision).top1
            test = evaluate(model, data.test, norm, device="cpu", precision=b.precision).top1
            print(f"adapted {label}: validation top-1 {100 * before:.2f}% -> {100 * val:.2f}%, test top-1 "
                  f"{100 * test:.2f}% ({describe_split(cfg, 'val', len(data.val))}; "
                  f"{describe_split(cfg, 'test', len(data.test))})", flush=True)
            save_checkpoint(path, model.cpu(), norm, record=loaded.record, input_size=tuple(data.image_size),
                            metrics={**{k: v for k, v in loaded.metrics.items() if k != M.TRAIN},
                                     M.VAL_TOP1: float(val), M.TEST_TOP1: float(test),
                                     M.VAL_TOP1_BEFORE: float(before), M.TRAIN: result.to_dict(),
                                     M.SPLIT: split_record(cfg), M.ADAPTED_FROM: want})
            cached = load_checkpoint(path, model_name)
    return cached.model, cached.normalization, dict(cached.metrics)


def _baseline_progress(every_s: float = 10.0, label: str = "baseline"):
    """A ``train`` progress callback printing a line at most every ``every_s`` seconds."""
    import time

    state = {"last": time.monotonic()}

    def report(info: Any) -> None:
        now = time.monotonic()
        if now - state["last"] >= every_s or info.step == info.total_steps:
            state["last"] = now
            print(f"{label}: step {info.step}/{info.total_steps}, loss {info.loss:.3f}, "
                  f"{info.images_per_second:.0f} img/s", flush=True)

    return report
