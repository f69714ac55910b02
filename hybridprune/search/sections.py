"""The tables of a study file that say what is searched, on what, and how it is timed: one frozen
dataclass per table (``[study]``, ``[model]``, ``[references]``, ``[data]``, ``[latency]``,
``[objectives]``, ``[constraints]``, ``[sampler]``), each checked by the generic validator of
:mod:`~hybridprune.search.toml_schema` and its own ``__post_init__``. The training tables are in
:mod:`~hybridprune.search.training_sections`; :mod:`~hybridprune.search.config` reads the file.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from hybridprune.errors import ConfigError
from hybridprune.evaluators.base import DEFAULT_BACKEND
from hybridprune.recipe import MAX_BATCH
from hybridprune.search.samplers import SAMPLER_ORDER
from hybridprune.search.storage import check_storage_url
from hybridprune.search.toml_schema import at_most as _at_most
from hybridprune.search.toml_schema import choice as _choice
from hybridprune.search.toml_schema import positive as _positive

LATENCY_STATISTICS = ("median_ms", "mean_ms", "p90_ms", "p99_ms")
EXTRA_OBJECTIVES = ("params", "macs")
BACKENDS = ("local", "ray")

# Upper bounds: far above any real study, low enough that nothing overflows or allocates without end
MAX_TRIALS = 1_000_000
MAX_WORKERS = 256
MAX_SECONDS = 86_400  # heartbeat_interval / grace_period: one day (a huge one crashes Optuna's heartbeat thread)
MAX_RETRY = 1_000
MAX_ROUNDS = 100
PAIRED_ROUND_S = 1.0  # default max_time_s of a paired round: 5 rounds, ~5 s a model (RESULTS.md, paired timing)
MAX_DURATION = 366 * 86_400
MAX_BN_BATCHES = 10_000
MAX_SEED = 2**32 - 1  # numpy's seed range


# False while a read-only command (status, pareto, dashboard) loads a study: model references are
# then checked for form only, and no model file or module is imported (it may run code).
_IMPORT_MODELS: contextvars.ContextVar[bool] = contextvars.ContextVar("import_models", default=True)


def _check_model(name: str) -> None:
    from hybridprune.models import get_model_spec
    from hybridprune.models.reference import is_reference

    if _IMPORT_MODELS.get() or not is_reference(name):
        get_model_spec(name)  # UnknownNameError lists the models; references are imported


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*"
                       r"(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def parse_duration(value: Any, where: str) -> float:
    """Seconds of a duration: a number of seconds, or text such as ``"90m"``, ``"2h"``, ``"1h30m"``, ``"45s"``.

    Raises:
        ConfigError: for anything else, a value <= 0 or one over a year.
    """
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)) and any(m.groups()):
        h, mins, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = 3600 * h + 60 * mins + s
    else:
        seconds = None
    if seconds is None or not math.isfinite(seconds) or not 0 < seconds <= MAX_DURATION:
        raise ConfigError(f"{where} must be a duration > 0 and at most a year: seconds or text like "
                          f"'90m', '2h', '1h30m'; got {value!r}")
    return seconds


@dataclass(frozen=True)
class StudySection:
    """``[study]``: name, size, seed, where results go, fault tolerance."""

    name: str = ""
    trials: int = 20
    seed: int = 0
    storage: str | None = None
    run_dir: str = ""
    artifact_dir: str | None = None
    refined_artifact_dir: str | None = None  # refine's models (default: artifact_dir); keep it where it outlives runs
    references: bool = True
    workers: int = 1
    backend: str = "local"
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    time_budget: Any = None  # seconds, or "90m", "2h", "1h30m": no trial starts after it is used up
    budget_covers: str = "all"  # "search": reference points' time is not charged (search.budget)

    def __post_init__(self) -> None:
        if self.time_budget is not None:
            object.__setattr__(self, "time_budget", parse_duration(self.time_budget, "study.time_budget"))
        _positive(self.trials, "study.trials")
        _positive(self.workers, "study.workers")
        _positive(self.heartbeat_interval, "study.heartbeat_interval")
        _positive(self.grace_period, "study.grace_period")
        _positive(self.max_retry, "study.max_retry", allow_zero=True)
        _choice(self.backend, "study.backend", BACKENDS)
        from hybridprune.search.budget import COVERS_CHOICES

        _choice(self.budget_covers, "study.budget_covers", COVERS_CHOICES)
        if self.budget_covers == "search" and self.backend == "ray":
            raise ConfigError('study.budget_covers = "search" needs backend = "local": Ray Tune stops at one fixed '
                              'wall time, which cannot give the reference points\' time back')
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"study.seed must be in [0, {MAX_SEED}], got {self.seed}")
        _at_most(self.trials, "study.trials", MAX_TRIALS)
        _at_most(self.workers, "study.workers", MAX_WORKERS, " local worker processes")
        _at_most(self.heartbeat_interval, "study.heartbeat_interval", MAX_SECONDS, " seconds (one day)")
        _at_most(self.grace_period, "study.grace_period", MAX_SECONDS, " seconds (one day)")
        _at_most(self.max_retry, "study.max_retry", MAX_RETRY)
        if self.storage is not None:
            check_storage_url(self.storage)
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"study.grace_period ({self.grace_period}) must exceed study.heartbeat_interval "
                f"({self.heartbeat_interval})"
            )


@dataclass(frozen=True)
class ModelSection:
    """``[model]``: the architecture and its trained weights (or none: train the baseline first).

    ``name`` is a registry name or a factory reference, ``path/to/file.py:callable`` (relative to
    the study file's folder) or ``package.module:callable``; ``checkpoint`` may then be a plain
    ``torch.save(model.state_dict())`` file.
    """

    name: str = "resnet20"
    checkpoint: str | None = None
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from hybridprune.models.reference import is_file_reference, is_reference, split_reference

        if is_reference(self.name) and is_file_reference(self.name):
            target, _ = split_reference(self.name)
            if not Path(target).expanduser().is_absolute():
                return  # checked once resolve_paths() has made it absolute
        _check_model(self.name)

    def resolve_paths(self, base: Path, resolve: Any) -> "ModelSection":
        """A copy with ``checkpoint`` (through ``resolve``) and a file reference made absolute against ``base``."""
        from hybridprune.models.reference import canonical_reference

        return dataclasses.replace(self, name=canonical_reference(self.name, base),
                                   checkpoint=resolve(base, self.checkpoint))


@dataclass(frozen=True)
class ReferencesSection:
    """``[references]``: other models a user could pick instead of a pruned one.

    ``models = [{ model = "resnet20", checkpoint = "resnet20.th", name = "ResNet-20" }, ...]``:
    ``model`` a registry name or factory reference, ``checkpoint`` its weights (without one the
    model is trained from scratch with the ``[baseline]`` recipe, ``kwargs`` passed to its
    factory), ``name`` a label (default: ``model``). Each is adapted like the baseline, timed like a trial,
    refined under the same budget, and shown on every front (see :mod:`hybridprune.search.references`).
    """

    models: tuple[dict, ...] = ()

    KEYS: ClassVar[tuple[str, ...]] = ("model", "checkpoint", "name", "kwargs")

    def __post_init__(self) -> None:
        if not isinstance(self.models, (list, tuple)):
            raise ConfigError(f"references.models must be a list of tables, got {self.models!r}")
        out, names = [], set()
        for i, entry in enumerate(self.models):
            where = f"references.models[{i}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where} must be a table like {{ model = \"resnet20\", checkpoint = \"...\" }}, "
                                  f"got {entry!r}")
            unknown = sorted(set(entry) - set(self.KEYS))
            if unknown:
                raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {list(self.KEYS)}")
            checkpoint = entry.get("checkpoint")
            if not isinstance(entry.get("model"), str) or not (checkpoint is None or isinstance(checkpoint, str)):
                raise ConfigError(f"{where} needs model (a registry name or file.py:callable) and may give a "
                                  f"checkpoint (a file), got {dict(entry)!r}")
            if not isinstance(entry.get("kwargs", {}), Mapping):
                raise ConfigError(f"{where}.kwargs must be a table, got {entry['kwargs']!r}")
            name = entry.get("name", entry["model"])
            if not isinstance(name, str) or not name or name in names:
                raise ConfigError(f"{where}.name must be a unique non-empty text, got {name!r}")
            names.add(name)
            out.append({"model": entry["model"], "checkpoint": entry.get("checkpoint"), "name": name,
                        "kwargs": dict(entry.get("kwargs") or {})})
        object.__setattr__(self, "models", tuple(out))

    def resolve_paths(self, base: Path, resolve: Any) -> "ReferencesSection":
        """A copy with checkpoints resolved against ``base`` and each model checked (registry or reference)."""
        from hybridprune.models.reference import canonical_reference

        out = []
        for i, m in enumerate(self.models):
            entry = {**m, "model": canonical_reference(m["model"], base), "checkpoint": resolve(base, m["checkpoint"])}
            if entry["checkpoint"] is not None and not Path(entry["checkpoint"]).is_file():
                raise ConfigError(f"references.models[{i}].checkpoint {entry['checkpoint']} does not exist"
                                  f"{_shared_hint(entry['checkpoint'])}")
            _check_model(entry["model"])
            out.append(entry)
        return dataclasses.replace(self, models=tuple(out))


@dataclass(frozen=True)
class DataSection:
    """``[data]``: dataset, split and optional subsets (to keep studies small).

    ``val_from = "test"`` takes validation from the test folder: the first ``val_size`` of each
    class by sorted file name; the rest stays test. ``val_from = "folder"`` validates on an image
    folder's own ``val/`` (see :func:`hybridprune.data.load_dataset`).
    """

    dataset: str = "digits"
    root: str | None = None
    val_size: int | float = 0.1
    val_from: str = "train"
    image_size: int | None = None
    train_subset: int | None = None
    val_subset: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        from hybridprune.data import list_datasets

        _choice(self.dataset, "data.dataset", list_datasets())
        _positive(self.val_size, "data.val_size")
        _choice(self.val_from, "data.val_from", ("train", "test", "folder"))
        if self.val_from == "folder" and self.dataset != "image_folder":
            raise ConfigError(f"data.val_from = 'folder' reads the val/ folder of an image_folder dataset; "
                              f"{self.dataset!r} has none: use 'train' or 'test'")
        if self.val_from == "test" and not (isinstance(self.val_size, float) and 0 < self.val_size < 1):
            raise ConfigError(f"data.val_from = 'test' needs data.val_size as a fraction in (0, 1) of each test "
                              f"class (e.g. 0.5: the first half of each class by sorted file name), "
                              f"got {self.val_size!r}")
        for key in ("image_size", "train_subset", "val_subset"):
            _positive(getattr(self, key), f"data.{key}")


@dataclass(frozen=True)
class LatencySection:
    """``[latency]``: backend (``onnxruntime``, ``torch``, ``tensorrt``, ``remote``) and options.

    ``cache`` measures each architecture once per study (kept in the storage); ``isolate`` times
    local ONNX Runtime in a child process of its own, away from the worker's PyTorch threads.
    ``rounds``: on a backend that shares this machine (``shares_host``), each model is timed in
    this many rounds alternating with the unpruned baseline, and its latency is the median
    per-round ratio times the study's reference baseline latency, so load drift cancels out.
    On a backend that times pairs (ONNX Runtime) a round runs until the ratio's CI is within
    ``rel_ci`` or ``max_time_s`` passes, and on a shared VM it mostly runs to the cap, so a
    model's latency costs about ``rounds x max_time_s``; ``max_time_s`` left out is
    :data:`PAIRED_ROUND_S` there (the timing protocol's own default, 10 s, suits one model on a
    dedicated device).
    """

    backend: str = DEFAULT_BACKEND
    statistic: str = "median_ms"
    batch_size: int = 1
    precision: str = "fp32"
    options: dict = field(default_factory=dict)
    cache: bool = True
    isolate: bool = True
    rounds: int = 5

    def __post_init__(self) -> None:
        from hybridprune.evaluators.base import LATENCY_BACKENDS
        from hybridprune.evaluators.registry import list_latency_backends

        _choice(self.statistic, "latency.statistic", LATENCY_STATISTICS)
        _positive(self.batch_size, "latency.batch_size")
        _at_most(self.batch_size, "latency.batch_size", MAX_BATCH)
        _positive(self.rounds, "latency.rounds")
        _at_most(self.rounds, "latency.rounds", MAX_ROUNDS)
        _choice(self.backend, "latency.backend", list_latency_backends())
        backend = LATENCY_BACKENDS.get(self.backend)
        _choice(self.precision, f"latency.precision (backend {self.backend})", backend.precisions)
        if backend.pairs and "max_time_s" not in self.options:
            object.__setattr__(self, "options", {**self.options, "max_time_s": PAIRED_ROUND_S})


@dataclass(frozen=True)
class ObjectivesSection:
    """``[objectives]``: accuracy (max) and latency (min) always; ``extra`` adds params/MACs (min)."""

    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for i, name in enumerate(self.extra):
            _choice(name, f"objectives.extra[{i}]", EXTRA_OBJECTIVES)
        if len(set(self.extra)) != len(self.extra):
            raise ConfigError(f"objectives.extra lists an objective twice: {list(self.extra)}")

    def names(self) -> list[str]:
        """Objective names in order (the study's metric names)."""
        return ["accuracy", "latency_ms", *self.extra]

    def directions(self) -> list[str]:
        """Optuna directions of :meth:`names`."""
        return ["maximize", "minimize", *["minimize"] * len(self.extra)]


@dataclass(frozen=True)
class ConstraintsSection:
    """``[constraints]``: a latency budget and a minimum validation accuracy (both optional)."""

    max_latency_ms: float | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        _positive(self.max_latency_ms, "constraints.max_latency_ms")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"constraints.min_accuracy must be a fraction in [0, 1], got {self.min_accuracy}")


@dataclass(frozen=True)
class SamplerSection:
    """``[sampler]``: ``nsga2`` (default), ``tpe``, ``gp`` or ``random``."""

    name: str = "nsga2"
    population_size: int | None = None
    n_startup_trials: int | None = None

    def __post_init__(self) -> None:
        _choice(self.name, "sampler.name", SAMPLER_ORDER)
        if self.population_size is not None and self.population_size < 2:
            raise ConfigError(f"sampler.population_size must be >= 2, got {self.population_size}")
        _positive(self.n_startup_trials, "sampler.n_startup_trials")


def _shared_hint(path: str) -> str:
    """Why a shipped study's file may be missing: the data and models live in ``shared/`` beside the checkout."""
    return ("; the shipped studies read the data and models of the shared/ folder, which must sit beside the "
            "checkout (../shared)" if "/shared/" in Path(path).as_posix() else "")
