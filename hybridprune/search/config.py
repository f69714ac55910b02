"""Study files: TOML parsed into frozen dataclasses, validated before any trial runs.

Every table of the file is one dataclass below, built and checked by the generic validator of
:mod:`~hybridprune.search.toml_schema`: unknown keys are rejected with the list of allowed keys,
wrong types and impossible values name the dotted key. Relative paths resolve
against the study file's directory. See ``studies/quickstart.toml`` for a commented example.
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
from hybridprune.recipe import MAX_EPOCHS, MAX_STEPS, Recipe, check_lr
from hybridprune.search.samplers import SAMPLER_ORDER
from hybridprune.search.storage import check_storage_url, check_writable, resolve_storage_url, storage_file
from hybridprune.search.toml_schema import at_most as _at_most
from hybridprune.search.toml_schema import build as _build
from hybridprune.search.toml_schema import choice as _choice
from hybridprune.search.toml_schema import load_toml as _load_toml
from hybridprune.search.toml_schema import positive as _positive

LATENCY_STATISTICS = ("median_ms", "mean_ms", "p90_ms", "p99_ms")
EXTRA_OBJECTIVES = ("params", "macs")
BACKENDS = ("local", "ray")

# Upper bounds: far above any real study, low enough that nothing overflows or allocates without end
MAX_TRIALS = 1_000_000
MAX_WORKERS = 256
MAX_SECONDS = 86_400  # heartbeat_interval / grace_period: one day (a huge one crashes Optuna's heartbeat thread)
MAX_RETRY = 1_000
MAX_BATCH = 4096
MAX_ROUNDS = 100
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
    references: bool = True
    workers: int = 1
    backend: str = "local"
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    time_budget: Any = None  # seconds, or "90m", "2h", "1h30m": no trial starts after it is used up

    def __post_init__(self) -> None:
        if self.time_budget is not None:
            object.__setattr__(self, "time_budget", parse_duration(self.time_budget, "study.time_budget"))
        _positive(self.trials, "study.trials")
        _positive(self.workers, "study.workers")
        _positive(self.heartbeat_interval, "study.heartbeat_interval")
        _positive(self.grace_period, "study.grace_period")
        _positive(self.max_retry, "study.max_retry", allow_zero=True)
        _choice(self.backend, "study.backend", BACKENDS)
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
class BaselineSection(Recipe):
    """``[baseline]``: how to train the unpruned model when ``model.checkpoint`` is not given.

    A :class:`~hybridprune.recipe.Recipe`: ``epochs`` (default 10) or ``steps``, lr, batch_size, precision.
    With ``model.checkpoint``, ``adapt_epochs`` fine-tunes that checkpoint on the study's train split
    once before the study (peak lr ``adapt_lr``, cached as ``<run_dir>/adapted.pt``): the adapted
    model is the pruning start point, the distillation teacher, the baseline trial and the latency
    reference.

    ``cache_dir`` (default: the run directory) is where the trained or adapted baseline and the
    reference models are cached: studies that give one folder share them (a hybrid and its
    single-mode searches then adapt the public weights once).
    """

    lr: float = 0.1
    adapt_epochs: float | None = None
    adapt_lr: float = 0.01
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapt_epochs is not None and not (
                isinstance(self.adapt_epochs, (int, float)) and not isinstance(self.adapt_epochs, bool)
                and math.isfinite(self.adapt_epochs) and 0 < self.adapt_epochs <= MAX_EPOCHS):
            raise ConfigError(f"baseline.adapt_epochs must be a number in (0, {MAX_EPOCHS}], got {self.adapt_epochs!r}")
        check_lr(self.adapt_lr, "baseline.adapt_lr")

    section: ClassVar[str] = "baseline"
    default_epochs: ClassVar[float] = 10.0
    max_batch: ClassVar[int] = MAX_BATCH


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
class PruningSection:
    """``[pruning]``: HybridConfig fields that the study keeps fixed."""

    scope: str | None = None
    allocation: str | None = None
    round_to: int | None = None
    calib_batches: int | None = None
    criterion_options: dict | None = None

    def __post_init__(self) -> None:
        from hybridprune.pruning.config import ALLOCATIONS, SCOPES

        if self.scope is not None:
            _choice(self.scope, "pruning.scope", SCOPES)
        if self.allocation is not None:
            _choice(self.allocation, "pruning.allocation", ALLOCATIONS)
        for key in ("round_to", "calib_batches"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"pruning.{key} must be >= 1, got {value}")
        _at_most(self.round_to, "pruning.round_to", MAX_BATCH)
        _at_most(self.calib_batches, "pruning.calib_batches", MAX_BATCH)

    def fixed(self, seed: int) -> dict[str, Any]:
        """The HybridConfig fields this table fixes, plus the study seed."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {**out, "seed": seed}


@dataclass(frozen=True)
class FinetuneSection(Recipe):
    """``[finetune]``: the brief fine-tune of every trial, a :class:`~hybridprune.recipe.Recipe`.

    ``epochs`` (default 1) or ``steps`` is the budget (a ``[fidelity]`` table replaces it);
    ``precision`` ``auto`` uses bf16 autocast + channels_last where the hardware runs bf16
    natively, ``fp32`` forces full precision; ``distill`` distils from the unpruned model;
    ``eval_before`` also scores each pruned model before fine-tuning.
    """

    lr: float = 0.01
    distill: bool = False
    eval_before: bool = False

    section: ClassVar[str] = "finetune"
    default_epochs: ClassVar[float] = 1.0
    max_batch: ClassVar[int] = MAX_BATCH


@dataclass(frozen=True)
class FidelitySection:
    """``[fidelity]``: multi-objective asynchronous successive halving over the fine-tune steps.

    Rungs are ``min_steps * eta**k`` fine-tune steps, capped by ``max_steps`` (the last rung). At
    each rung a trial goes on only if it ranks in the top ``1/eta`` of the trials that reached
    that rung, by non-dominated sorting of (accuracy at the rung, latency). Without the table
    every trial fine-tunes for the ``[finetune]`` budget.

    ``bn_batches = N`` adds a first rung of 0 steps: adaptive batch-norm evaluation (EagleEye), the
    BN statistics re-estimated on N training batches, no optimizer step; candidates that cannot
    pass it are never fine-tuned.
    """

    min_steps: int | None = None
    max_steps: int | None = None
    eta: float = 3.0
    bn_batches: int = 0

    def __post_init__(self) -> None:
        if (self.min_steps is None) != (self.max_steps is None):
            raise ConfigError("[fidelity] needs both min_steps and max_steps "
                              "(fine-tune steps of the first and last rung)")
        _positive(self.min_steps, "fidelity.min_steps")
        _positive(self.max_steps, "fidelity.max_steps")
        if self.min_steps is not None and self.min_steps > self.max_steps:
            raise ConfigError(f"fidelity.min_steps ({self.min_steps}) must not exceed "
                              f"fidelity.max_steps ({self.max_steps})")
        _at_most(self.max_steps, "fidelity.max_steps", MAX_STEPS)
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not 2 <= self.eta <= 1000:
            raise ConfigError(f"fidelity.eta must be a number in [2, 1000] (keep the top 1/eta at each rung), "
                              f"got {self.eta!r}")
        if isinstance(self.bn_batches, bool) or not isinstance(self.bn_batches, int) or self.bn_batches < 0:
            raise ConfigError(f"fidelity.bn_batches must be a whole number >= 0, got {self.bn_batches!r}")
        _at_most(self.bn_batches, "fidelity.bn_batches", MAX_BN_BATCHES)
        if self.bn_batches and not self.enabled:
            raise ConfigError("fidelity.bn_batches adds a 0-step rung before min_steps; give min_steps and "
                              "max_steps too")

    @property
    def enabled(self) -> bool:
        """Whether the study uses multi-fidelity (the table was given)."""
        return self.min_steps is not None

    def rungs(self) -> list[int]:
        """Cumulative fine-tune steps at each rung, increasing, the last one ``max_steps`` (a first 0:
        the adaptive batch-norm rung)."""
        if not self.enabled:
            return []
        out, steps = [0] if self.bn_batches else [], float(self.min_steps)
        while round(steps) < self.max_steps:
            out.append(int(round(steps)))
            steps *= self.eta
        return [*out, int(self.max_steps)]


@dataclass(frozen=True)
class LatencySection:
    """``[latency]``: backend (``onnxruntime``, ``torch``, ``tensorrt``, ``remote``) and options.

    ``cache`` measures each architecture once per study (kept in the storage); ``isolate`` times
    local ONNX Runtime in a child process of its own, away from the worker's PyTorch threads.
    ``rounds``: on a backend that shares this machine (``shares_host``), each model is timed in
    this many rounds alternating with the unpruned baseline, and its latency is the median
    per-round ratio times the study's reference baseline latency, so load drift cancels out.
    """

    backend: str = "onnxruntime"
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
        precisions = LATENCY_BACKENDS.get(self.backend).precisions
        _choice(self.precision, f"latency.precision (backend {self.backend})", precisions)


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


SECTIONS = {
    "study": StudySection,
    "model": ModelSection,
    "baseline": BaselineSection,
    "data": DataSection,
    "space": None,
    "pruning": PruningSection,
    "finetune": FinetuneSection,
    "fidelity": FidelitySection,
    "latency": LatencySection,
    "objectives": ObjectivesSection,
    "constraints": ConstraintsSection,
    "sampler": SamplerSection,
    "references": ReferencesSection,
}


@dataclass(frozen=True)
class StudyConfig:
    """A whole study file. Paths are absolute (resolved against ``path.parent``)."""

    path: Path
    study: StudySection
    model: ModelSection
    baseline: BaselineSection
    data: DataSection
    space: dict
    pruning: PruningSection
    finetune: FinetuneSection
    fidelity: FidelitySection
    latency: LatencySection
    objectives: ObjectivesSection
    constraints: ConstraintsSection
    sampler: SamplerSection
    references: ReferencesSection = field(default_factory=ReferencesSection)

    def __post_init__(self) -> None:
        if self.model.checkpoint is not None and not Path(self.model.checkpoint).is_file():
            hint = _shared_hint(self.model.checkpoint)
            raise ConfigError(f"model.checkpoint {self.model.checkpoint} does not exist{hint}")
        if self.baseline.adapt_epochs is not None and self.model.checkpoint is None:
            raise ConfigError("baseline.adapt_epochs adapts model.checkpoint to the data, but the study has no "
                              "model.checkpoint; set one, or train the baseline with baseline.epochs")
        if self.data.root is not None and not Path(self.data.root).exists():
            raise ConfigError(f"data.root {self.data.root} does not exist{_shared_hint(self.data.root)}")
        kind = self.space.get("kind", "hybrid")
        from hybridprune.spaces import list_spaces

        _choice(kind, "space.kind", list_spaces())

    @property
    def name(self) -> str:
        """The study name (default: the file's stem)."""
        return self.study.name

    @property
    def run_dir(self) -> Path:
        """Folder of the SQLite storage, cached baseline, artifacts and plots."""
        return Path(self.study.run_dir)

    @property
    def artifact_dir(self) -> Path:
        """Folder of the Optuna FileSystemArtifactStore."""
        return Path(self.study.artifact_dir) if self.study.artifact_dir else self.run_dir / "artifacts"

    @property
    def storage_url(self) -> str:
        """The storage URL: ``study.storage`` or a SQLite file in the run directory."""
        return self.study.storage or f"sqlite:///{self.run_dir / 'study.db'}"

    @property
    def cache_dir(self) -> Path:
        """Where trained and adapted models are cached: ``[baseline] cache_dir`` or the run directory."""
        return Path(self.baseline.cache_dir) if self.baseline.cache_dir else self.run_dir

    @property
    def baseline_path(self) -> Path:
        """Where the trained baseline is cached."""
        return self.cache_dir / "baseline.pt"

    def check_writable(self) -> None:
        """Refuse (before any training, creating nothing) a run directory, artifact folder or local
        storage file that is a file where a folder is needed, or cannot be written.

        Raises:
            ConfigError: naming the key.
        """
        check_writable(self.run_dir, "study.run_dir")
        if self.baseline.cache_dir:
            check_writable(self.cache_dir, "baseline.cache_dir")
        check_writable(self.artifact_dir, "study.artifact_dir" if self.study.artifact_dir else "study.run_dir")
        db = storage_file(self.storage_url)
        if db is not None:
            check_writable(db, "study.storage", directory=False)

    def replace(self, **sections: Any) -> "StudyConfig":
        """A copy with some ``[study]`` fields replaced (CLI overrides such as ``--trials``)."""
        return dataclasses.replace(self, study=dataclasses.replace(self.study, **sections))


def _shared_hint(path: str) -> str:
    """Why a shipped study's file may be missing: the data and models live in ``shared/`` beside the checkout."""
    return ("; the shipped studies read the data and models of the shared/ folder, which must sit beside the "
            "checkout (../shared)" if "/shared/" in Path(path).as_posix() else "")


def _resolve(base: Path, value: str | None, keep_urls: bool = False) -> str | None:
    if value is None or value == "":
        return value
    if keep_urls and "://" in value:
        return value
    return str((base / Path(value).expanduser()).resolve())


def load_study_config(path: str | Path, *, import_models: bool = True) -> StudyConfig:
    """Read and validate a study file.

    Args:
        path: The TOML file.
        import_models: Import the model files and modules the study names, to check them
            (``False`` for read-only commands: a reference is then checked for form only).

    Returns:
        The :class:`StudyConfig`, with absolute paths.

    Raises:
        ConfigError: naming the key for an unknown key, wrong type, impossible value, or a missing
            checkpoint / data directory.
        MissingDependencyError: on Python 3.10 without ``tomli``.
    """
    token = _IMPORT_MODELS.set(import_models)
    try:
        return _load(Path(path).resolve())
    finally:
        _IMPORT_MODELS.reset(token)


def _load(path: Path) -> StudyConfig:
    raw = _load_toml(path)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown} in {path.name}; allowed: {list(SECTIONS)}")
    base = path.parent
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if cls is None:
            continue
        sections[name] = _build(cls, raw.get(name), name)
    given = raw.get("finetune") or {}
    if sections["fidelity"].enabled and ("epochs" in given or "steps" in given):
        raise ConfigError("give the fine-tune budget once: [fidelity] min_steps/max_steps replace "
                          "[finetune] epochs/steps; remove those from [finetune]")
    st = sections["study"]
    name = st.name or path.stem
    run_dir = _resolve(base, st.run_dir or f"runs/{name}")
    sections["study"] = dataclasses.replace(
        st, name=name, run_dir=run_dir,
        artifact_dir=_resolve(base, st.artifact_dir),
        storage=resolve_storage_url(st.storage, base),
    )
    sections["model"] = sections["model"].resolve_paths(base, _resolve)
    sections["references"] = sections["references"].resolve_paths(base, _resolve)
    d = sections["data"]
    sections["data"] = dataclasses.replace(d, root=_resolve(base, d.root), cache_dir=_resolve(base, d.cache_dir))
    sections["baseline"] = dataclasses.replace(sections["baseline"],
                                               cache_dir=_resolve(base, sections["baseline"].cache_dir))
    space = raw.get("space") or {}
    if not isinstance(space, Mapping):
        raise ConfigError(f"[space] must be a table, got {space!r}")
    return StudyConfig(path=path, space=dict(space), **sections)
