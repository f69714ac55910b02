"""One trial: prune -> export and measure latency (cheap, first) -> fine-tune -> validation accuracy.

Every trial stores user attributes (``config``, ``params``, ``macs``, ``architecture``,
``removed_blocks``, ``latency``, ``latency_ms``, ``accuracy_before``, ``accuracy``,
``time_s`` per phase, ``record``, ``constraints``, ``artifacts``) and uploads its fine-tuned
checkpoint and ONNX file to the Optuna artifact store. Constraints are set with
``trial.set_constraint`` (feasible when <= 0). A trial that diverges, runs out of memory or
cannot be measured raises; it is recorded as FAIL with user attribute ``fail_reason``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hybridprune.errors import HybridPruneError
from hybridprune.search.context import TrialContext

log = logging.getLogger(__name__)

#: Exceptions that fail one trial but not the study.
TRIAL_ERRORS: tuple[type[BaseException], ...] = (HybridPruneError, MemoryError, torch.OutOfMemoryError)


def constraint_values(cfg: Any, accuracy: float, latency_ms: float) -> dict[str, float]:
    """Constraint values of a trial (<= 0 means satisfied), by name."""
    out: dict[str, float] = {}
    if cfg.constraints.max_latency_ms is not None:
        out["latency"] = float(latency_ms - cfg.constraints.max_latency_ms)
    if cfg.constraints.min_accuracy is not None:
        out["accuracy"] = float(cfg.constraints.min_accuracy - accuracy)
    return out


def _prune(ctx: TrialContext, config: Any) -> tuple[torch.nn.Module, dict | None, list[str]]:
    if config.channel_ratio == 0 and config.pruned_blocks == 0:
        return copy.deepcopy(ctx.model), None, []
    from hybridprune.pruning import prune_model

    calib = ctx.calibration(config.calib_batches) if config.make_criterion().data_driven else None
    result = prune_model(ctx.model, config, ctx.example_inputs(), calib)
    return result.model, result.record.to_dict(), list(result.removed_blocks)


def _upload(trial: Any, store: Any, path: Path, storage: Any = None) -> str:
    from optuna.artifacts import upload_artifact

    return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, storage=storage)


def run_trial(ctx: TrialContext, trial: Any, artifact_store: Any) -> list[float]:
    """Evaluate one configuration and record everything on ``trial``.

    Args:
        ctx: The worker's context.
        trial: An ``optuna.trial.Trial`` (live, on the study's storage).
        artifact_store: Where checkpoint and ONNX go.

    Returns:
        Objective values in the order of ``cfg.objectives.names()``.

    Raises:
        HybridPruneError, MemoryError, torch.OutOfMemoryError: the trial fails (``fail_reason``
            is set first).
    """
    try:
        return _run(ctx, trial, artifact_store)
    except TRIAL_ERRORS as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500]
        trial.set_user_attr("fail_reason", reason)
        log.warning("trial %s failed: %s", trial.number, reason)
        raise


def _run(ctx: TrialContext, trial: Any, store: Any) -> list[float]:
    from hybridprune.evaluators import export_onnx
    from hybridprune.evaluators.complexity import complexity, describe_architecture
    from hybridprune.models import save_checkpoint
    from hybridprune.training import Budget, evaluate, finetune

    cfg = ctx.cfg
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    config = ctx.space.suggest(trial)
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

    tick = time.perf_counter()
    model, record, removed = _prune(ctx, config)
    model = model.to(ctx.device).eval()
    times["prune"] = time.perf_counter() - tick
    cx = complexity(model.cpu(), input_size=ctx.input_size)
    model.to(ctx.device)
    trial.set_user_attr("params", int(cx.params))
    trial.set_user_attr("macs", int(cx.macs))
    trial.set_user_attr("architecture", describe_architecture(model))
    trial.set_user_attr("removed_blocks", removed)

    with tempfile.TemporaryDirectory(prefix=f"trial{trial.number}-", dir=cfg.run_dir) as tmp:
        tmp = Path(tmp)
        tick = time.perf_counter()
        onnx_path = export_onnx(model, tmp / "measure.onnx", (cfg.latency.batch_size, *ctx.input_size), check=False)
        times["export"] = time.perf_counter() - tick
        tick = time.perf_counter()
        target = model if ctx.backend.name == "torch" else onnx_path
        with ctx.measure_lock():
            lat = ctx.backend.measure(target, input_shape=ctx.input_size, batch_size=cfg.latency.batch_size,
                                      precision=cfg.latency.precision)
        times["latency"] = time.perf_counter() - tick
        latency_ms = float(getattr(lat, cfg.latency.statistic))
        trial.set_user_attr("latency", lat.to_dict())
        trial.set_user_attr("latency_ms", latency_ms)
        trial.set_user_attr("latency_backend", lat.backend)

        tick = time.perf_counter()
        before = evaluate(model, ctx.data.val, ctx.normalization, device=ctx.device)
        times["eval_before"] = time.perf_counter() - tick
        trial.set_user_attr("accuracy_before", before.top1)

        f = cfg.finetune
        tick = time.perf_counter()
        ft = finetune(model, ctx.data, Budget(epochs=f.epochs, steps=f.steps), ctx.normalization,
                      teacher=ctx.model if f.distill else None, lr=f.lr, batch_size=f.batch_size,
                      seed=cfg.study.seed + trial.number, device=ctx.device, evaluate_val=False)
        times["finetune"] = time.perf_counter() - tick
        tick = time.perf_counter()
        after = evaluate(model, ctx.data.val, ctx.normalization, device=ctx.device)
        times["eval_after"] = time.perf_counter() - tick
        if not math.isfinite(after.loss):
            from hybridprune.errors import TrainingDiverged

            raise TrainingDiverged(f"validation loss is {after.loss} after fine-tuning")
        accuracy = float(after.top1)
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("finetune", ft.to_dict())

        tick = time.perf_counter()
        model = model.cpu().eval()
        metrics = {"val_top1": accuracy, "val_top1_before_finetune": before.top1, "latency_ms": latency_ms,
                   "latency": lat.to_dict(), "params": int(cx.params), "macs": int(cx.macs),
                   "study": cfg.name, "trial": trial.number}
        ckpt = save_checkpoint(tmp / "checkpoint.pt", model, ctx.normalization, record=record,
                               input_size=ctx.input_size, metrics=metrics)
        onnx_final = export_onnx(model, tmp / "model.onnx", (cfg.latency.batch_size, *ctx.input_size))
        artifacts = {"checkpoint": _upload(trial, store, ckpt), "onnx": _upload(trial, store, onnx_final)}
        times["save"] = time.perf_counter() - tick
    trial.set_user_attr("artifacts", artifacts)
    trial.set_user_attr("record", record)

    constraints = constraint_values(cfg, accuracy, latency_ms)
    trial.set_user_attr("constraints", constraints)
    for key, value in constraints.items():
        trial.set_constraint(key, value)
    times["total"] = time.perf_counter() - t0
    trial.set_user_attr("time_s", {k: round(v, 4) for k, v in times.items()})
    values = [accuracy, latency_ms]
    for name in cfg.objectives.extra:
        values.append(float(cx.params if name == "params" else cx.macs))
    return values
