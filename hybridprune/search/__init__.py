"""The search service: multi-objective Optuna studies over hybrid pruning configurations.

Modules (one job each):

- :mod:`~hybridprune.search.config`: study files (TOML) as validated frozen dataclasses.
- :mod:`~hybridprune.search.storage`: ``get_storage`` (SQLite/PostgreSQL/journal), artifact store,
  the cross-process latency lock.
- :mod:`~hybridprune.search.samplers`: ``get_sampler`` (nsga2, tpe, gp, random).
- :mod:`~hybridprune.search.context`: data, baseline, space and latency backend of a worker.
- :mod:`~hybridprune.search.objective`: one trial (prune, measure, fine-tune, score, record).
- :mod:`~hybridprune.search.study`: creating/loading a study, reference points, counts.
- :mod:`~hybridprune.search.local` / :mod:`~hybridprune.search.ray_runner`: runners.
- :mod:`~hybridprune.search.service`: pre-flight + run, used by ``hybridprune run``.
- :mod:`~hybridprune.search.pareto`, :mod:`~hybridprune.search.select`,
  :mod:`~hybridprune.search.dashboard`: reading results.

Heavy imports (torch, optuna, ray) happen inside the functions.
"""

from hybridprune.search.config import StudyConfig, load_study_config
from hybridprune.search.samplers import get_sampler
from hybridprune.search.storage import get_artifact_store, get_storage

__all__ = ["StudyConfig", "get_artifact_store", "get_sampler", "get_storage", "load_study_config"]
