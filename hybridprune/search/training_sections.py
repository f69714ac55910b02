"""The tables of a study file that say how models are trained: ``[baseline]`` (the unpruned model,
trained or adapted once), ``[pruning]`` (what every trial's pruning fixes), ``[finetune]`` (each
trial's brief fine-tune) and ``[fidelity]`` (MO-ASHA's rungs). Frozen dataclasses, checked like
those of :mod:`~hybridprune.search.sections`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from hybridprune.errors import ConfigError
from hybridprune.recipe import MAX_EPOCHS, MAX_STEPS, Recipe, check_lr
from hybridprune.search.fidelity import EPSILON_NET, RANKS
from hybridprune.search.sections import MAX_BATCH, MAX_BN_BATCHES
from hybridprune.search.toml_schema import at_most as _at_most
from hybridprune.search.toml_schema import choice as _choice
from hybridprune.search.toml_schema import positive as _positive


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


REFERENCE_MODES = ("full", "screen")


@dataclass(frozen=True)
class FidelitySection:
    """``[fidelity]``: multi-objective asynchronous successive halving over the fine-tune steps.

    Rungs are ``min_steps * eta**k`` fine-tune steps, capped by ``max_steps`` (the last rung). At
    each rung a trial goes on only if it ranks in the top ``1/eta`` of the trials that reached
    that rung, by non-dominated sorting of (accuracy at the rung, latency). Without the table
    every trial fine-tunes for the ``[finetune]`` budget.

    ``bn_batches = N`` adds a first rung of 0 steps: adaptive batch-norm evaluation (EagleEye), the
    BN statistics re-estimated on N training batches, no optimizer step; candidates that cannot
    pass it are never fine-tuned. ``bn_val_images = M`` scores that rung on M validation images
    (a seeded sample, the same for every trial) instead of the whole split, since scoring, not the
    statistics, is most of its cost; later rungs score the whole validation split.

    ``references`` says how the enqueued reference points (``[space] references``) climb the
    rungs: ``"full"`` (default) runs every one to the last rung, ``"screen"`` ranks them like any
    other candidate (the unpruned baseline still runs to the last rung), so a grid of 20 paper
    settings costs what 20 candidates cost instead of 20 full fine-tunes of a wall-time budget.

    ``defer_screen = true`` makes the 0-step rung decide with hindsight (ASHA's promotion variant):
    a candidate is fine-tuned only once it ranks in the top ``floor(n / eta)`` of the ``n`` screened
    so far, so the first ones no longer go on unranked; one that ranks there later is promoted then
    (re-pruned and re-adapted, seconds; its latency from the study's cache). ``floor_aware = true``
    ranks a rung result behind the rest when a trial that did at least as well at that rung ran the
    whole ladder and still ended below ``[constraints] min_accuracy``. ``rank`` orders the results
    inside a non-dominated front: ``"epsilon-net"`` (default, syne-tune's MOASHA: extremes first)
    or ``"hypervolume"`` (the area each result alone adds, reference point the lowest accuracy
    ranked and the baseline's latency: knee points first, the least accurate result last) or
    ``"hypervolume-per-cost"`` (that area over the trial's estimated seconds per fine-tune image, a
    line in MACs fit to the study's own fine-tunes: :mod:`hybridprune.search.fidelity_cost`). See
    :mod:`hybridprune.search.fidelity`. ``calibrate = true`` shows the sampler each stopped trial's
    accuracy mapped onto the last rung's scale, by a line fit on the trials that ran the whole
    ladder (:mod:`hybridprune.search.fidelity_view`); the stored values stay as measured.

    ``screen_latency_s = S`` times a candidate at the 0-step screen in one round of ``S`` seconds
    instead of ``[latency] rounds`` rounds of ``max_time_s``: the study's latency step was most of a
    screen's wall time (RESULTS.md). A candidate that goes on past the screen is timed again with the
    study's own protocol before its first fine-tune step, so every fine-tuned trial, and every
    decision after the screen, reads the study's latency; a screen stopped there keeps its short
    reading (trial attribute ``latency_screen``). Both readings are ratios to the baseline timed next
    to the model, on the study's one basis, and are cached apart.
    """

    min_steps: int | None = None
    max_steps: int | None = None
    eta: float = 3.0
    bn_batches: int = 0
    bn_val_images: int | None = None
    references: str = "full"
    defer_screen: bool = False
    floor_aware: bool = False
    rank: str = EPSILON_NET
    calibrate: bool = False
    screen_latency_s: float | None = None

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
        if self.bn_val_images is not None and (isinstance(self.bn_val_images, bool)
                                               or not isinstance(self.bn_val_images, int) or self.bn_val_images < 1):
            raise ConfigError(f"fidelity.bn_val_images must be a whole number >= 1 (validation images that score "
                              f"the 0-step rung), got {self.bn_val_images!r}")
        if self.bn_val_images is not None and not self.bn_batches:
            raise ConfigError("fidelity.bn_val_images sets how many validation images score the 0-step rung; "
                              "give fidelity.bn_batches (that rung) too")
        if self.references not in REFERENCE_MODES:
            raise ConfigError(f"fidelity.references must be one of {list(REFERENCE_MODES)} (reference points run "
                              f"every rung, or are screened like any candidate), got {self.references!r}")
        if not isinstance(self.defer_screen, bool):
            raise ConfigError(f"fidelity.defer_screen must be true or false, got {self.defer_screen!r}")
        if not isinstance(self.floor_aware, bool):
            raise ConfigError(f"fidelity.floor_aware must be true or false, got {self.floor_aware!r}")
        _choice(self.rank, "fidelity.rank", RANKS)
        if not isinstance(self.calibrate, bool):
            raise ConfigError(f"fidelity.calibrate must be true or false, got {self.calibrate!r}")
        if self.calibrate and not self.enabled:
            raise ConfigError("fidelity.calibrate maps stopped trials' accuracy onto the last rung; give min_steps "
                              "and max_steps (the rungs) too")
        if self.rank != EPSILON_NET and not self.enabled:
            raise ConfigError("fidelity.rank orders the results at each rung; give min_steps and max_steps "
                              "(the rungs) too")
        if self.floor_aware and not self.enabled:
            raise ConfigError("fidelity.floor_aware ranks rung results by the accuracy floor; give min_steps and "
                              "max_steps (the rungs) too")
        if self.defer_screen and not self.bn_batches:
            raise ConfigError("fidelity.defer_screen defers the decisions of the 0-step screen; give "
                              "fidelity.bn_batches (that rung) too")
        if self.screen_latency_s is not None and (isinstance(self.screen_latency_s, bool)
                                                  or not isinstance(self.screen_latency_s, (int, float))
                                                  or not 0.01 <= self.screen_latency_s <= 600):
            raise ConfigError(f"fidelity.screen_latency_s must be a number of seconds in [0.01, 600] (one timing "
                              f"round at the 0-step screen), got {self.screen_latency_s!r}")
        if self.screen_latency_s is not None and not self.bn_batches:
            raise ConfigError("fidelity.screen_latency_s times candidates at the 0-step screen; give "
                              "fidelity.bn_batches (that rung) too")
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
