"""Refined reference models shared by the studies of one cache folder.

Studies that share ``[baseline] cache_dir`` (a hybrid search and its single-mode twins) start from
the same adapted baseline and the same reference models, so ``refine`` would fine-tune the very
same unpruned ResNet-56 and ResNet-20 once per study: about half an hour each on a 2-core CPU.
A refined reference is therefore also kept in the cache folder, named by everything its result
depends on: the weights it starts from and the teacher's (hashed tensor by tensor), the recipe,
precision, split, data and torch version. Another study's refine of the same model with the same
key takes that file instead of fine-tuning again, scores it on its own test and validation split
(the same images, by the key) and stores it as its own refined model. Searched trials are never
shared: they belong to one study.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hybridprune.search import trials as T

SHARED_FROM = "shared_from"  # refine record key: the study whose refine of this reference was taken


def state_digest(model: Any) -> str:
    """SHA-256 over a module's state (names, dtypes, shapes and bytes of every tensor)."""
    import torch

    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def shared_path(ctx: Any, trial: Any, source: Any, options: Any) -> Path | None:
    """Where the refined ``trial`` is kept for other studies, or ``None`` when it is not a
    reference model (baseline or family) and so not shared."""
    import torch

    from hybridprune.search.objective import finetune_seed
    from hybridprune.search.split import split_record

    label = trial.user_attrs.get(T.REFERENCE)
    if label not in (T.REF_BASELINE, T.REF_FAMILY):
        return None
    cfg = ctx.cfg
    d = cfg.data
    key = {"reference": label, "name": trial.user_attrs.get(T.REFERENCE_NAME), "source": state_digest(source),
           "teacher": state_digest(ctx.model) if options.distill else None,
           "recipe": {"epochs": options.epochs, "lr": options.peak_lr(cfg.finetune.lr), "seed": finetune_seed(cfg),
                      "distill": options.distill, "distill_weight": options.distill_weight if options.distill else None,
                      "batch_size": cfg.finetune.batch_size},
           "precision": {k: str(v) for k, v in ctx.precision_kwargs().items()}, "split": split_record(cfg),
           "data": {"dataset": d.dataset, "root": str(d.root), "train_subset": d.train_subset,
                    "val_subset": d.val_subset}, "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cfg.cache_dir / f"refined-{label}-{digest}.pt"


def take(path: Path | None, model_name: str) -> tuple[Any, dict] | None:
    """``(model, record)`` of a shared refined reference at ``path``, or ``None`` if there is none
    (or it cannot be read: then it is made again)."""
    from hybridprune.checkpoints import load_checkpoint
    from hybridprune.errors import HybridPruneError

    if path is None or not path.is_file():
        return None
    try:
        loaded = load_checkpoint(path, model_name)
    except HybridPruneError:
        return None
    return loaded.model, dict(loaded.metrics.get("refine_record") or {})


def keep(path: Path | None, model: Any, normalization: Any, record: dict, study_name: str, input_size: Any) -> None:
    """Keep a refined reference at ``path`` for the other studies of the cache folder."""
    from hybridprune.checkpoints import save_checkpoint

    if path is None:
        return
    rec = {k: v for k, v in record.items() if k != T.R_ARTIFACTS}
    save_checkpoint(path, model.cpu().eval(), normalization, input_size=tuple(input_size),
                    metrics={"refine_record": {**rec, SHARED_FROM: study_name}})
