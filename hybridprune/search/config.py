"""Study files: TOML parsed into frozen dataclasses, validated before any trial runs.

Every table of the file is one dataclass (:mod:`~hybridprune.search.sections`,
:mod:`~hybridprune.search.training_sections`), built and checked by the generic validator of
:mod:`~hybridprune.search.toml_schema`: unknown keys are rejected with the list of allowed keys,
wrong types and impossible values name the dotted key. This module reads the file into one
:class:`StudyConfig` and checks what spans tables; relative paths resolve against the study
file's directory. See ``studies/quickstart.toml`` for a commented example.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hybridprune.errors import ConfigError
from hybridprune.search.sections import (  # noqa: F401 - re-exported: the names every caller imports from here
    _IMPORT_MODELS,
    BACKENDS,
    EXTRA_OBJECTIVES,
    LATENCY_STATISTICS,
    MAX_BATCH,
    MAX_BN_BATCHES,
    MAX_DURATION,
    MAX_RETRY,
    MAX_ROUNDS,
    MAX_SECONDS,
    MAX_SEED,
    MAX_TRIALS,
    MAX_WORKERS,
    ConstraintsSection,
    DataSection,
    LatencySection,
    ModelSection,
    ObjectivesSection,
    ReferencesSection,
    SamplerSection,
    StudySection,
    _shared_hint,
    parse_duration,
)
from hybridprune.search.storage import check_writable, resolve_storage_url, storage_file
from hybridprune.search.toml_schema import build as _build
from hybridprune.search.toml_schema import choice as _choice
from hybridprune.search.toml_schema import load_toml as _load_toml
from hybridprune.search.training_sections import BaselineSection, FidelitySection, FinetuneSection, PruningSection

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
    def refined_artifact_dir(self) -> Path:
        """Folder of the artifact store of refine's checkpoints and ONNX files (default: :attr:`artifact_dir`).

        Its own folder lets refined models be kept (a few MB each) where the trials' many checkpoints
        are not: refine resumes from it model by model, in another session or on another machine.
        """
        return Path(self.study.refined_artifact_dir) if self.study.refined_artifact_dir else self.artifact_dir

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

    def portable(self, path: str | Path | None) -> str | None:
        """``path`` as a study file names it: relative to the study file's folder, so a record that is
        committed (a journal) carries no path of the machine it ran on."""
        return None if path is None else Path(os.path.relpath(Path(path).resolve(), self.path.parent)).as_posix()

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
        if self.study.refined_artifact_dir:
            check_writable(self.refined_artifact_dir, "study.refined_artifact_dir")
        db = storage_file(self.storage_url)
        if db is not None:
            check_writable(db, "study.storage", directory=False)

    def replace(self, **sections: Any) -> "StudyConfig":
        """A copy with some ``[study]`` fields replaced (CLI overrides such as ``--trials``)."""
        return dataclasses.replace(self, study=dataclasses.replace(self.study, **sections))


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
    if sections["fidelity"].floor_aware and sections["constraints"].min_accuracy is None:
        raise ConfigError("fidelity.floor_aware ranks rung results by the accuracy floor; set "
                          "[constraints] min_accuracy (a fraction, e.g. 0.8) too")
    st = sections["study"]
    name = st.name or path.stem
    run_dir = _resolve(base, st.run_dir or f"runs/{name}")
    sections["study"] = dataclasses.replace(
        st, name=name, run_dir=run_dir,
        artifact_dir=_resolve(base, st.artifact_dir),
        refined_artifact_dir=_resolve(base, st.refined_artifact_dir),
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
