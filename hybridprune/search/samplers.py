"""``get_sampler``: the study file's ``[sampler]`` table -> an Optuna sampler.

Constraints are not passed as ``constraints_func`` (deprecated in Optuna 5): every trial sets
them with ``trial.set_constraint`` (values <= 0 feasible), which all of NSGA-II, TPE and GP read
and the dashboard shows.
"""

from __future__ import annotations

from typing import Any

from hybridprune.errors import ConfigError


def default_population(n_trials: int) -> int:
    """NSGA-II population for a study of ``n_trials``: about a quarter of it, between 4 and 50."""
    return max(4, min(50, n_trials // 4))


def get_sampler(spec: Any, *, seed: int = 0, n_trials: int = 20, population_size: int | None = None,
                n_startup_trials: int | None = None):
    """Build an Optuna sampler.

    Args:
        spec: ``"nsga2"``, ``"tpe"``, ``"gp"``, ``"random"``, a ``SamplerSection``, or a sampler.
        seed: Random seed.
        n_trials: Study size (sets NSGA-II's population and startup trials by default).
        population_size: NSGA-II population.
        n_startup_trials: Random trials before TPE / GP model the objectives.

    Returns:
        An ``optuna.samplers.BaseSampler``.

    Raises:
        ConfigError: for an unknown sampler name.
    """
    import optuna

    if isinstance(spec, optuna.samplers.BaseSampler):
        return spec
    if hasattr(spec, "name") and hasattr(spec, "population_size"):
        population_size = population_size or spec.population_size
        n_startup_trials = n_startup_trials or spec.n_startup_trials
        spec = spec.name
    startup = n_startup_trials or max(2, min(10, n_trials // 3))
    if spec == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size or default_population(n_trials), seed=seed)
    if spec == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    if spec == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if spec == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {spec!r}; choose one of: nsga2, tpe, gp, random")
