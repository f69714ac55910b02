"""Reference models: what a user could pick instead of a pruned model (``[references] models``).

Each is loaded from its checkpoint, adapted to the data like the baseline when ``[baseline]
adapt_epochs`` is set (cached in ``[baseline] cache_dir``, by default the run folder), scored on validation, timed by
the study's latency step next to the baseline, stored as study artifacts, and recorded as the
study user attribute ``reference_model:<name>``. It is not an Optuna trial: it has no pruning
parameters, and the samplers must not learn from it. :class:`ReferenceTrial` gives it the face of
a finished trial (a negative number, values, user attributes) so that ``refine``, ``select``,
``pareto`` and ``publish`` treat it exactly like one: the same refine budget, teacher and recipe,
the same test split, the same latency basis.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridprune.errors import ConfigError
from hybridprune.search import trials as T

PREFIX = "reference_model:"
NAME = T.REFERENCE_NAME


@dataclass(frozen=True)
class ReferenceTrial:
    """A reference model with the attributes of a finished trial (``number`` < 0)."""

    number: int
    values: list
    user_attrs: dict
    params: dict = field(default_factory=dict)
    constraints: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The reference's label."""
        return self.user_attrs[NAME]


def _cache_name(m: dict, train_subset: int | None = None) -> str:
    """The cached file of a reference: named by what it is made from (and the train subset it is
    adapted or trained on, as the baseline's), so studies sharing a cache folder never take or
    replace each other's models (the adaptation settings are checked inside the file)."""
    import hashlib
    import json

    key = json.dumps({k: m[k] for k in ("model", "checkpoint", "kwargs")}, sort_keys=True, default=str)
    tail = "" if train_subset is None else f"-train{train_subset}"
    return f"reference-{hashlib.sha256(key.encode()).hexdigest()[:12]}{tail}.pt"


def reference_trials(study: Any) -> list[ReferenceTrial]:
    """The study's reference models, in the order of the study file."""
    out = [ReferenceTrial(**v) for k, v in study.user_attrs.items() if k.startswith(PREFIX)]
    return sorted(out, key=lambda r: -r.number)


def check_references(cfg: Any, data: Any, input_size: tuple[int, ...]) -> None:
    """Refuse, before any training, a reference whose classes or input size differ from the study's.

    Raises:
        ConfigError: naming the reference and what differs.
    """
    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.models import get_model_spec

    for i, m in enumerate(cfg.references.models):
        if m["checkpoint"] is None:  # trained here, for these classes: only its input size can differ
            size = tuple(get_model_spec(m["model"]).input_size)
            if size != tuple(input_size):
                raise ConfigError(f"references.models[{i}] ({m['name']}) takes inputs of size {list(size)} but "
                                  f"the study's are {list(input_size)}")
            continue
        loaded = load_checkpoint(m["checkpoint"], m["model"])
        if loaded.num_classes != data.num_classes:
            raise ConfigError(f"references.models[{i}] ({m['name']}) has {loaded.num_classes} classes but dataset "
                              f"{cfg.data.dataset!r} has {data.num_classes}")
        if tuple(loaded.input_size) != tuple(input_size):
            raise ConfigError(f"references.models[{i}] ({m['name']}) takes inputs of size {list(loaded.input_size)} "
                              f"but the study's are {list(input_size)}")


def prepare_references(cfg: Any, ctx: Any, study: Any, store: Any) -> list[ReferenceTrial]:
    """Adapt, score, time and store every reference model not yet recorded (a resume reuses them)."""
    from hybridprune.accuracy import evaluate
    from hybridprune.models.complexity import complexity
    from hybridprune.records import Metrics as M
    from hybridprune.search.split import split_record
    from hybridprune.search.storage import store_model

    names = cfg.objectives.names()
    for i, m in enumerate(cfg.references.models):
        source = {"model": m["model"], "checkpoint": cfg.portable(m["checkpoint"]), "kwargs": m["kwargs"],
                  "adapt_epochs": cfg.baseline.adapt_epochs, "split": split_record(cfg)}
        stored = study.user_attrs.get(PREFIX + m["name"])
        if stored and stored["user_attrs"].get("source") == source:
            continue
        model, norm, metrics = reference_model(cfg, ctx, m)
        model = model.to(ctx.device).eval()
        val = float(evaluate(model, ctx.data.val, norm, device=ctx.device, **ctx.precision_kwargs()).top1)
        model = model.cpu().eval()
        cx = complexity(model, input_size=ctx.input_size)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"reference{i}-{os.getpid()}-", dir=cfg.run_dir) as tmp:
            timed = ctx.latency.trial(study, ctx.latency.export(model, f"reference{i}"))
            ids = store_model(study, store, model, norm, Path(tmp), f"reference-{i}", record=None,
                              input_size=ctx.input_size, batch_size=cfg.latency.batch_size,
                              metrics={**metrics, M.VAL_TOP1: val, M.REFERENCE: m["name"], M.SPLIT: split_record(cfg)})
        by_name = {T.ACCURACY: val, T.LATENCY_MS: timed.latency_ms, T.PARAMS: float(cx.params), T.MACS: float(cx.macs)}
        attrs = {T.REFERENCE: T.REF_FAMILY, NAME: m["name"], "source": source, T.CONFIG: {"model": m["model"]},
                 T.PARAMS: int(cx.params), T.MACS: int(cx.macs), T.ARTIFACTS: ids, T.ACCURACY: val,
                 T.LATENCY_MS: timed.latency_ms, T.LATENCY_RATIO: timed.ratio,
                 T.LATENCY_RESULT: timed.result.to_dict()}
        study.set_user_attr(PREFIX + m["name"], {"number": -(i + 1), "values": [by_name[n] for n in names],
                                                 "user_attrs": attrs})
        print(f"reference {m['name']}: validation top-1 {100 * val:.2f}%, latency {timed.latency_ms:.3f} ms = "
              f"{timed.ratio:.3f} x baseline, {cx.macs / 1e6:.1f} MMACs", flush=True)
    return reference_trials(study)


def reference_model(cfg: Any, ctx: Any, m: dict) -> tuple[Any, Any, dict]:
    """``(model, normalization, metrics)`` of the reference ``m`` (an entry of ``[references] models``):
    its checkpoint, adapted like the baseline when ``[baseline] adapt_epochs`` is set, or trained
    once; cached in ``[baseline] cache_dir`` (studies sharing it share the file)."""
    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.search.baseline import adapt_baseline, train_once

    path = cfg.cache_dir / _cache_name(m, cfg.data.train_subset)
    if m["checkpoint"] is None:
        loaded = train_once(cfg, ctx.data, m["model"], m["kwargs"], path, label=f"reference {m['name']}")
    else:
        loaded = load_checkpoint(m["checkpoint"], m["model"])
    if cfg.baseline.adapt_epochs is not None and m["checkpoint"] is not None:
        return adapt_baseline(cfg, ctx.data, loaded, checkpoint=m["checkpoint"], model_name=m["model"], path=path,
                              label=f"reference {m['name']}")
    return loaded.model, loaded.normalization, dict(loaded.metrics)


def model_name_of(cfg: Any, trial: Any) -> str:
    """The model name a trial's checkpoint is loaded with: the study's, or the reference model's own."""
    if T.is_reference(trial, T.REF_FAMILY):
        return trial.user_attrs[T.CONFIG]["model"]
    return cfg.model.name


def by_number(study: Any) -> dict[int, Any]:
    """Every trial of the study and every reference model, by number."""
    return {**{t.number: t for t in study.get_trials(deepcopy=False)}, **{r.number: r for r in reference_trials(study)}}
