"""Everything a worker loads once and reuses for all its trials: data, baseline, space, backend.

``build_context`` is also the study's pre-flight check: a bad dataset, checkpoint, space bound or
latency option fails here, before any trial runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from hybridprune.errors import ConfigError, DataError
from hybridprune.search.baseline import load_baseline
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
    _teacher: Any = None
    _bn_val: Any = None
    _scores: Any = None

    def teacher(self) -> torch.nn.Module:
        """The distillation teacher: the baseline, each batch's outputs computed once (:mod:`~hybridprune.distill`)."""
        if self._teacher is None:
            from hybridprune.distill import MemoTeacher

            self._teacher = MemoTeacher(self.model)
        return self._teacher

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

    def rung_val(self, steps: int) -> Any:
        """The validation images that score a rung of ``steps`` fine-tune steps: the whole split, or
        for the 0-step rung the study's seeded sample of ``[fidelity] bn_val_images`` (drawn once)."""
        n = self.cfg.fidelity.bn_val_images
        if steps or n is None:
            return self.data.val
        if self._bn_val is None:
            self._bn_val = self.data.val.sample(n, self.cfg.study.seed)
        return self._bn_val

    def score_memo(self) -> Any:
        """Criterion scores of the baseline kept across this worker's trials
        (:class:`~hybridprune.pruning.hybrid.ScoreMemo`)."""
        if self._scores is None:
            from hybridprune.pruning.hybrid import ScoreMemo

            self._scores = ScoreMemo()
        return self._scores

    def example_inputs(self) -> torch.Tensor:
        """A zero batch of one input, on the context's device (for tracing the pruner's graph)."""
        return torch.zeros(1, *self.input_size, device=self.device)

    def precision_kwargs(self) -> dict[str, Any]:
        """Keyword arguments selecting the fine-tune/evaluation precision of ``[finetune]``."""
        return {"precision": self.cfg.finetune.precision}

    def close(self) -> None:
        """Release what the context started (the latency step's child process and files)."""
        self.latency.close()


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
        train=data.train.sample(d.train_subset, cfg.study.seed),
        val=data.val.sample(d.val_subset, cfg.study.seed + 1),
    )


def build_space(cfg: StudyConfig, model: torch.nn.Module) -> Any:
    """The study's search space for ``model`` (bounds checked against its removable blocks)."""
    from hybridprune.models.blocks import removable_blocks
    from hybridprune.pruning import list_criteria
    from hybridprune.pruning.blocks import block_stages
    from hybridprune.spaces import get_space

    options = {k: v for k, v in cfg.space.items() if k != "kind"}
    names = removable_blocks(model)
    return get_space(cfg.space.get("kind", "hybrid"), options, removable_blocks=len(names),
                     criteria=list_criteria(), fixed=cfg.pruning.fixed(cfg.study.seed),
                     stage_sizes=[len(s) for s in block_stages(names)])


def _architecture(cfg: StudyConfig, num_classes: int) -> torch.nn.Module:
    """The baseline's architecture without its training: the checkpoint as it is, or a fresh model."""
    if cfg.model.checkpoint:
        from hybridprune.checkpoints import load_checkpoint

        return load_checkpoint(cfg.model.checkpoint, cfg.model.name).model
    from hybridprune.models import create_model

    return create_model(cfg.model.name, num_classes=num_classes, **cfg.model.kwargs)


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
    from hybridprune.search.references import check_references

    backend = build_backend(cfg)  # cheapest check first
    data = load_data(cfg)
    check_references(cfg, data, tuple(int(s) for s in data.image_size))  # before the baseline trains
    if not cfg.model.checkpoint or cfg.baseline.adapt_epochs is not None:  # a baseline may train first:
        build_space(cfg, _architecture(cfg, data.num_classes))  # bad [space] keys fail now, not after it
    model, norm, metrics = load_baseline(cfg, data, train_if_missing=train_if_missing)
    space = build_space(cfg, model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = tuple(int(s) for s in data.image_size)
    latency = StudyLatency(cfg.latency, backend, size, lock_path=cfg.run_dir / "latency.lock", baseline=model,
                           work_dir=cfg.run_dir)
    return WorkerContext(cfg=cfg, data=data, model=model.to(device).eval(), normalization=norm, input_size=size,
                        space=space, latency=latency, device=device, baseline_metrics=metrics)
