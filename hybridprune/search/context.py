"""Everything a worker loads once and reuses for all its trials: data, baseline, space, backend.

``build_context`` is also the study's pre-flight check: a bad dataset, checkpoint, space bound or
latency option fails here, before any trial runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybridprune.errors import ConfigError, DataError
from hybridprune.io import device_lock
from hybridprune.search.config import StudyConfig
from hybridprune.search.latency import StudyLatency

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What one worker needs to run trials.

    Attributes:
        cfg: The study config.
        data: Dataset splits (subsets applied).
        model: The unpruned baseline model (eval mode, CPU).
        normalization: Its input normalisation.
        input_size: (C, H, W).
        space: The search space.
        latency: The study's one latency step (backend, lock, isolated child, cache, rounds).
        device: Torch device for fine-tuning and evaluation.
        baseline_metrics: Metrics stored with the baseline checkpoint.
        heartbeat: Whether the study's storage runs Optuna heartbeats.
    """

    cfg: StudyConfig
    data: Any
    model: torch.nn.Module
    normalization: Any
    input_size: tuple[int, int, int]
    space: Any
    latency: StudyLatency
    device: str = "cpu"
    baseline_metrics: dict = field(default_factory=dict)
    heartbeat: bool = False  # set by the worker from its storage
    _calib: list | None = None

    def calibration(self, n_batches: int) -> list:
        """Calibration batches for data-driven criteria (computed once)."""
        if self._calib is None or len(self._calib) < n_batches:
            from hybridprune.data import calibration_batches

            self._calib = calibration_batches(
                self.data.train,
                self.normalization,
                n_batches,
                batch_size=64,
                seed=self.cfg.study.seed,
                device=self.device,
            )
        return self._calib[:n_batches]

    def example_inputs(self) -> torch.Tensor:
        """A zero batch of one input, on the context's device (for tracing the pruner's graph)."""
        return torch.zeros(1, *self.input_size, device=self.device)

    def precision_kwargs(self) -> dict[str, Any]:
        """Keyword arguments selecting the fine-tune/evaluation precision of ``[finetune]``."""
        return {"precision": self.cfg.finetune.precision}

    def close(self) -> None:
        """Release what the context started (the latency step's child process and files)."""
        self.latency.close()


def _subset(split: Any, n: int | None, seed: int) -> Any:
    if n is None or n >= len(split):
        return split
    from hybridprune.data import Split

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    return Split(split.images[idx].contiguous(), split.labels[idx].contiguous())


def load_data(cfg: StudyConfig) -> Any:
    """Load the study's dataset with its split and subsets.

    Raises:
        DataError: for missing or malformed data. ConfigError: for bad options.
    """
    import dataclasses

    from hybridprune.data import load_dataset

    d = cfg.data
    data = load_dataset(d.dataset, d.root, val_size=d.val_size, seed=cfg.study.seed,
                        cache_dir=d.cache_dir, image_size=d.image_size, val_from=d.val_from,
                        say=lambda line: print(line, flush=True))
    if len(data.val) == 0:
        raise DataError(f"dataset {d.dataset!r} has an empty validation split; set data.val_size > 0")
    return dataclasses.replace(
        data,
        train=_subset(data.train, d.train_subset, cfg.study.seed),
        val=_subset(data.val, d.val_subset, cfg.study.seed + 1),
    )


def load_baseline(cfg: StudyConfig, data: Any, *, train_if_missing: bool = True) -> tuple[Any, Any, dict]:
    """The unpruned model: ``model.checkpoint`` or the baseline trained once and cached.

    The cache is ``<run_dir>/baseline.pt``; training holds a file lock so parallel workers train it
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
    from hybridprune.checkpoints import load_checkpoint, save_checkpoint
    from hybridprune.models import create_model, get_model_spec

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
    with device_lock(cfg.run_dir / "baseline.lock"):
        if not path.is_file():
            if not train_if_missing:
                raise ConfigError(f"no model.checkpoint and no trained baseline at {path}")
            from hybridprune.training import evaluate, seed_everything, train

            b = cfg.baseline
            seed_everything(cfg.study.seed)  # the initial weights too: the same study trains the same baseline
            model = create_model(cfg.model.name, num_classes=data.num_classes, **cfg.model.kwargs)
            norm = get_model_spec(cfg.model.name).normalization
            log.info("training the baseline %s for %s", cfg.model.name, b.budget)
            result = train(model, data, b.budget, norm, **b.train_kwargs(), seed=cfg.study.seed, device="cpu",
                           progress=_baseline_progress())
            acc = evaluate(model, data.val, norm, device="cpu", precision=b.precision).top1
            save_checkpoint(path, model.cpu(), norm, metrics={"val_top1": acc, "train": result.to_dict(),
                                                              "split": split_record(cfg)})
        loaded = load_checkpoint(path, cfg.model.name)
    check(loaded.model, f"cached baseline {path}")
    return loaded.model, loaded.normalization, dict(loaded.metrics)


def adapted_path(cfg: StudyConfig) -> Path:
    """Where the adapted baseline (``[baseline] adapt_epochs``) is cached."""
    return cfg.run_dir / "adapted.pt"


def _adaptation(cfg: StudyConfig) -> dict[str, Any]:
    """What the cached adapted baseline must have been made from (a mismatch adapts again)."""
    import hashlib

    digest = hashlib.sha256(Path(cfg.model.checkpoint).read_bytes()).hexdigest()
    b = cfg.baseline
    return {"checkpoint_sha256": digest, "epochs": b.adapt_epochs, "lr": b.adapt_lr, "batch_size": b.batch_size,
            "split": split_record(cfg), "train_subset": cfg.data.train_subset}


def adapt_baseline(cfg: StudyConfig, data: Any, loaded: Any, *, train_if_missing: bool = True) -> tuple[Any, Any, dict]:
    """``model.checkpoint`` fine-tuned ``adapt_epochs`` on the train split, once, cached in ``run_dir``.

    Its validation and test top-1 are recorded in the checkpoint's metrics and printed.

    Returns:
        ``(model, normalization, metrics)`` of the adapted model.
    """
    from hybridprune.checkpoints import load_checkpoint, save_checkpoint
    from hybridprune.recipe import Budget
    from hybridprune.training import evaluate, finetune, seed_everything

    path, want = adapted_path(cfg), _adaptation(cfg)
    with device_lock(cfg.run_dir / "baseline.lock"):
        cached = load_checkpoint(path, cfg.model.name) if path.is_file() else None
        if cached is None or cached.metrics.get("adapted_from") != want:
            if not train_if_missing:
                raise ConfigError(f"the adapted baseline {path} is missing or was made from other settings; "
                                  f"run the study first: hybridprune run {cfg.path}")
            b = cfg.baseline
            print(f"adapting model.checkpoint to {cfg.data.dataset}: {b.adapt_epochs:g} epoch(s), lr {b.adapt_lr:g}; "
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
            print(f"adapted baseline: validation top-1 {100 * before:.2f}% -> {100 * val:.2f}%, test top-1 "
                  f"{100 * test:.2f}% ({describe_split(cfg, 'val', len(data.val))}; "
                  f"{describe_split(cfg, 'test', len(data.test))})", flush=True)
            save_checkpoint(path, model.cpu(), norm, record=loaded.record, input_size=tuple(data.image_size),
                            metrics={**{k: v for k, v in loaded.metrics.items() if k != "train"},
                                     "val_top1": float(val), "test_top1": float(test),
                                     "val_top1_before": float(before), "train": result.to_dict(),
                                     "split": split_record(cfg), "adapted_from": want})
            cached = load_checkpoint(path, cfg.model.name)
    return cached.model, cached.normalization, dict(cached.metrics)


def split_record(cfg: StudyConfig) -> dict[str, Any]:
    """The data split of the study, stored with its checkpoints (``train``/``evaluate`` reuse it)."""
    return {"dataset": cfg.data.dataset, "val_size": cfg.data.val_size, "seed": cfg.study.seed,
            "val_from": cfg.data.val_from}


def describe_split(cfg: StudyConfig, split: str, images: int | None = None) -> str:
    """Which images a ``"val"`` or ``"test"`` accuracy of the study was measured on, in words."""
    d = cfg.data
    n = f"{images:,} images" if images is not None else "images"
    if d.val_from == "test":
        half = "first" if split == "val" else "rest"
        return (f"{split}: {n} of the {d.dataset} test folder, the {half} of each class by sorted file name "
                f"(val_size {d.val_size:g})")
    if split == "val":
        return f"val: {n} held out of the {d.dataset} training set (val_size {d.val_size:g}, seed {cfg.study.seed})"
    return f"test: {n}, the {d.dataset} test set"


def split_warning(cfg: StudyConfig) -> str | None:
    """Why validation is optimistic, when a foreign checkpoint meets validation from its training set."""
    if cfg.model.checkpoint and cfg.data.val_from == "train":
        return ("warning: model.checkpoint is a pretrained file and validation is held out of the training set, "
                "which such weights have usually seen: validation accuracy then measures memorisation and reads "
                "optimistic; set [data] val_from = \"test\" and val_size = 0.5 to validate on the first half of "
                "each test class")
    return None


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


def build_space(cfg: StudyConfig, model: torch.nn.Module) -> Any:
    """The study's search space for ``model`` (bounds checked against its removable blocks)."""
    from hybridprune.models.blocks import removable_blocks
    from hybridprune.pruning import list_criteria
    from hybridprune.spaces import get_space

    options = {k: v for k, v in cfg.space.items() if k != "kind"}
    return get_space(cfg.space.get("kind", "hybrid"), options, removable_blocks=len(removable_blocks(model)),
                     criteria=list_criteria(), fixed=cfg.pruning.fixed(cfg.study.seed))


def build_backend(cfg: StudyConfig) -> Any:
    """The latency backend of ``[latency]`` (unknown names/options raise ConfigError).

    ``options.token_env`` names an environment variable holding the agent's token, so tokens stay
    out of study files.
    """
    from hybridprune.evaluators import get_latency_backend

    options = dict(cfg.latency.options)
    env = options.pop("token_env", None)
    if env is not None:
        if not isinstance(env, str) or not os.environ.get(env):
            raise ConfigError(f"latency.options.token_env names the environment variable {env!r}, which is not set; "
                              f"export it with the agent's token")
        options["token"] = os.environ[env]
    return get_latency_backend(cfg.latency.backend, **options)


def build_context(cfg: StudyConfig, *, train_if_missing: bool = True, device: str | None = None) -> WorkerContext:
    """Load data, baseline, space and backend (the pre-flight check of a study).

    Args:
        cfg: The study.
        train_if_missing: Train the baseline when it is not cached yet.
        device: Torch device (default: CUDA when available, else CPU).

    Returns:
        A :class:`WorkerContext`.

    Raises:
        HybridPruneError subclasses naming what is wrong.
    """
    backend = build_backend(cfg)  # cheapest check first
    data = load_data(cfg)
    model, norm, metrics = load_baseline(cfg, data, train_if_missing=train_if_missing)
    space = build_space(cfg, model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = tuple(int(s) for s in data.image_size)
    latency = StudyLatency(cfg.latency, backend, size, lock_path=cfg.run_dir / "latency.lock", baseline=model,
                           work_dir=cfg.run_dir)
    return WorkerContext(cfg=cfg, data=data, model=model.to(device).eval(), normalization=norm, input_size=size,
                        space=space, latency=latency, device=device, baseline_metrics=metrics)
