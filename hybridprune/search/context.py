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
from hybridprune.search.latency_cache import ISOLATED_BACKENDS, IsolatedTimer

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
        backend: The latency backend.
        lock_path: File locked while measuring locally (``None`` for remote agents, which queue).
        device: Torch device for fine-tuning and evaluation.
        baseline_metrics: Metrics stored with the baseline checkpoint.
        timer: An :class:`IsolatedTimer` when latency is timed in a child process, else ``None``.
        heartbeat: Whether the study's storage runs Optuna heartbeats.
    """

    cfg: StudyConfig
    data: Any
    model: torch.nn.Module
    normalization: Any
    input_size: tuple[int, int, int]
    space: Any
    backend: Any
    lock_path: Path | None
    device: str = "cpu"
    baseline_metrics: dict = field(default_factory=dict)
    timer: Any = None
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

    def measure_lock(self):
        """Context manager serialising local latency measurements across workers."""
        return device_lock(self.lock_path)

    def precision_kwargs(self) -> dict[str, Any]:
        """Keyword arguments selecting the fine-tune/evaluation precision of ``[finetune]``."""
        return {"precision": self.cfg.finetune.precision}

    def measure(self, study: Any, model: torch.nn.Module, onnx_path: Path) -> tuple[Any, bool, str]:
        """Latency of a trial's model: from the study's cache, or measured (and cached).

        The cache is checked and filled under the measurement lock, so local workers never time
        one architecture twice.

        Returns:
            ``(LatencyResult, from_cache, cache_key)``.
        """
        from hybridprune.evaluators import LatencyResult
        from hybridprune.search.latency_cache import LatencyCache, architecture_key, settings_key

        lat_cfg = self.cfg.latency
        key = settings_key(architecture_key(onnx_path), lat_cfg.backend, lat_cfg.options, lat_cfg.batch_size,
                           lat_cfg.precision, self.input_size)
        cache = LatencyCache(study) if lat_cfg.cache else None
        shape = dict(input_shape=self.input_size, batch_size=lat_cfg.batch_size, precision=lat_cfg.precision)
        with self.measure_lock():
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                return LatencyResult.from_dict(hit), True, key
            if self.timer is not None:
                result = self.timer.measure(onnx_path, **shape)
            else:
                result = self.backend.measure(model if self.backend.takes == "module" else onnx_path, **shape)
            if cache is not None:
                cache.put(key, result.to_dict())
        return result, False, key


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
                        cache_dir=d.cache_dir, image_size=d.image_size)
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


def split_record(cfg: StudyConfig) -> dict[str, Any]:
    """The data split of the study, stored with its checkpoints (``train``/``evaluate`` reuse it)."""
    return {"dataset": cfg.data.dataset, "val_size": cfg.data.val_size, "seed": cfg.study.seed}


def _baseline_progress(every_s: float = 10.0):
    """A ``train`` progress callback printing a line at most every ``every_s`` seconds."""
    import time

    state = {"last": time.monotonic()}

    def report(info: Any) -> None:
        now = time.monotonic()
        if now - state["last"] >= every_s or info.step == info.total_steps:
            state["last"] = now
            print(f"baseline: step {info.step}/{info.total_steps}, loss {info.loss:.3f}, "
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
    lock = None if backend.queues_itself else cfg.run_dir / "latency.lock"
    timer = None
    if cfg.latency.isolate and cfg.latency.backend in ISOLATED_BACKENDS:
        timer = IsolatedTimer(cfg.latency.backend, cfg.latency.options)
    return WorkerContext(cfg=cfg, data=data, model=model.to(device).eval(), normalization=norm, input_size=size,
                        space=space, backend=backend, lock_path=lock, device=device, baseline_metrics=metrics,
                        timer=timer)
