"""The sampler family: a registry of small factories, one per Optuna sampler, and ``get_sampler``.

Constraints are not passed as ``constraints_func`` (deprecated in Optuna 5): every trial sets
them with ``trial.set_constraint`` (values <= 0 feasible), which all of NSGA-II, TPE and GP read
and the dashboard shows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from hybridprune.errors import ConfigError, UnknownNameError
from hybridprune.registry import Registry

SAMPLERS: Registry[type["BaseSamplerFactory"]] = Registry("sampler")


def default_population(n_trials: int) -> int:
    """NSGA-II population for a study of ``n_trials``: about a quarter of it, between 4 and 50."""
    return max(4, min(50, n_trials // 4))


def default_startup(n_trials: int) -> int:
    """Random trials before a model-based sampler models the objectives: a third, 2 to 10."""
    return max(2, min(10, n_trials // 3))


class BaseSamplerFactory(ABC):
    """Builds one kind of Optuna sampler from the study's size and the ``[sampler]`` options."""

    name: ClassVar[str]

    @abstractmethod
    def build(self, *, seed: int, n_trials: int, population_size: int | None, n_startup_trials: int | None) -> Any:
        """The ``optuna.samplers.BaseSampler``."""


@SAMPLERS.register()
class NSGA2(BaseSamplerFactory):
    """NSGA-II (the default): evolutionary, population ``population_size``."""

    name = "nsga2"

    def build(self, *, seed, n_trials, population_size, n_startup_trials):
        import optuna

        return optuna.samplers.NSGAIISampler(population_size=population_size or default_population(n_trials), seed=seed)


@SAMPLERS.register()
class TPE(BaseSamplerFactory):
    """Multivariate (MO)TPE after ``n_startup_trials`` random trials."""

    name = "tpe"

    def build(self, *, seed, n_trials, population_size, n_startup_trials):
        import optuna

        startup = n_startup_trials or default_startup(n_trials)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


@SAMPLERS.register()
class GP(BaseSamplerFactory):
    """Gaussian-process Bayesian optimisation after ``n_startup_trials`` random trials."""

    name = "gp"

    def build(self, *, seed, n_trials, population_size, n_startup_trials):
        import optuna

        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials or default_startup(n_trials))


@SAMPLERS.register()
class Random(BaseSamplerFactory):
    """Uniform random sampling (the baseline every other sampler must beat)."""

    name = "random"

    def build(self, *, seed, n_trials, population_size, n_startup_trials):
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


def list_samplers() -> list[str]:
    """Names of the registered samplers."""
    return SAMPLERS.names()


def get_sampler(spec: Any, *, seed: int = 0, n_trials: int = 20, population_size: int | None = None,
                n_startup_trials: int | None = None):
    """Build an Optuna sampler (the one factory that normalises what users give).

    Args:
        spec: A registered name (``nsga2``, ``tpe``, ``gp``, ``random``), a ``SamplerSection``,
            or an Optuna sampler (returned as it is).
        seed: Random seed.
        n_trials: Study size (sets NSGA-II's population and startup trials by default).
        population_size: NSGA-II population.
        n_startup_trials: Random trials before TPE / GP model the objectives.

    Returns:
        An ``optuna.samplers.BaseSampler``.

    Raises:
        ConfigError: for an unknown sampler name (listing the registered ones).
    """
    import optuna

    if isinstance(spec, optuna.samplers.BaseSampler):
        return spec
    if hasattr(spec, "name") and hasattr(spec, "population_size"):
        population_size = population_size or spec.population_size
        n_startup_trials = n_startup_trials or spec.n_startup_trials
        spec = spec.name
    try:
        factory = SAMPLERS.get(spec)
    except UnknownNameError:
        raise ConfigError(f"unknown sampler {spec!r}; choose one of: {', '.join(SAMPLER_ORDER)}") from None
    return factory().build(seed=seed, n_trials=n_trials, population_size=population_size,
                           n_startup_trials=n_startup_trials)


#: Names in the order the documentation lists them (the default first).
SAMPLER_ORDER = ("nsga2", "tpe", "gp", "random")
