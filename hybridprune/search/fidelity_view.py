"""What the sampler sees of a multi-fidelity study: every accuracy on the last rung's scale.

Under MO-ASHA a trial stopped at rung ``k`` is a finished trial with the values of rung ``k``
(``finetune_steps`` says which): a network stopped at the adaptive-BN screen reports 20-80%
accuracy, one that ran the whole ladder 80-90%. A sampler reads all of them as measured alike,
so NSGA-II ranks every stopped trial as a poor final result and breeds from the few full
ladders, and its accuracy constraint (``[constraints] min_accuracy``) calls every screen
infeasible. TPE and GP fit their models to the same mixture.

``[fidelity] calibrate = true`` shows the sampler each stopped trial's accuracy mapped onto the
last rung's scale instead: for each rung ``k``, a least-squares line from the accuracy at ``k`` to
the final accuracy, fit on the trials of the study that recorded both (its own evidence, refit
at every sample). The accuracy constraint moves with it. A rung with fewer than
:data:`MIN_PAIRS` such trials, or a slope that is not positive (no evidence that the rung ranks
like the end), keeps its measured values, as without the option. It relies on the rung ranking
networks as the end does (Spearman 0.97 for the BN screen on ResNet-56, RESULTS.md) and assumes
that relation is straight.

Only the sampler's view changes: the stored values, MO-ASHA's own decisions, the dashboard, the
Pareto set and ``select`` all read what was measured. The wrapper works over any Optuna sampler
(Optuna is imported by the caller: :func:`hybridprune.search.study.study_sampler` imports this
module only when the option is on).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hybridprune.search import trials as T
from hybridprune.search.fidelity import FINAL

MIN_PAIRS = 3  # trials with both a rung's and the last rung's accuracy before that rung is mapped
ACCURACY_CONSTRAINT = "constraints:accuracy"  # Optuna's system attribute for set_constraint("accuracy")


@dataclass(frozen=True)
class Line:
    """Final accuracy predicted from the accuracy at one rung, clipped to [0, 1]."""

    intercept: float
    slope: float
    pairs: int

    def __call__(self, accuracy: float) -> float:
        return float(min(1.0, max(0.0, self.intercept + self.slope * accuracy)))


def fit_lines(trials: Sequence[FrozenTrial], min_pairs: int = MIN_PAIRS) -> dict[int, Line]:
    """One :class:`Line` per rung below the last, fit on every trial of ``trials`` that ran the
    whole ladder (its last rung decided ``final``): its accuracy at that rung against its final
    accuracy. Rungs with fewer than ``min_pairs`` such trials, no spread, or a slope <= 0 get none."""
    pairs: dict[int, list[tuple[float, float]]] = {}
    for t in trials:
        rungs = t.user_attrs.get(T.RUNGS) or []
        if t.state != TrialState.COMPLETE or not rungs or rungs[-1].get("decision") != FINAL:
            continue
        final = float(rungs[-1]["accuracy"])
        for r in rungs[:-1]:
            pairs.setdefault(int(r["rung"]), []).append((float(r["accuracy"]), final))
    lines = {}
    for rung, xy in pairs.items():
        x, y = np.array(xy).T
        if len(xy) < min_pairs or np.ptp(x) <= 0:
            continue
        slope, intercept = np.polyfit(x, y, 1)
        if slope > 0:
            lines[rung] = Line(float(intercept), float(slope), len(xy))
    return lines


def calibrated(trial: FrozenTrial, lines: dict[int, Line], accuracy_index: int = 0) -> FrozenTrial:
    """``trial`` as the sampler sees it: when it stopped at a rung that has a line, a copy whose
    accuracy value (``accuracy_index`` of its values) and accuracy constraint are those the line
    predicts; otherwise ``trial`` itself."""
    rungs = trial.user_attrs.get(T.RUNGS) or []
    if trial.state != TrialState.COMPLETE or not rungs or rungs[-1].get("decision") == FINAL:
        return trial
    line = lines.get(int(rungs[-1]["rung"]))
    if line is None:
        return trial
    measured = float(rungs[-1]["accuracy"])
    predicted = line(measured)
    out = copy.copy(trial)
    if trial.values is not None:
        values = list(trial.values)
        values[accuracy_index] = predicted
        out._values = values
    if ACCURACY_CONSTRAINT in trial.system_attrs:  # min_accuracy - accuracy: the floor stays where it is
        out._system_attrs = {**trial.system_attrs,
                             ACCURACY_CONSTRAINT: trial.system_attrs[ACCURACY_CONSTRAINT] + measured - predicted}
    return out


class CalibratedStudy:
    """A read-only view of an Optuna study whose trials are :func:`calibrated`; everything else
    (storage, directions, system attributes the sampler writes) is the study's own."""

    def __init__(self, study: Any, accuracy_index: int = 0) -> None:
        self._inner_study = study
        self._accuracy_index = accuracy_index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner_study, name)

    @cached_property
    def _lines(self) -> dict[int, Line]:
        # a view lives for one sampler call, which reads the trials several times: fit once
        return fit_lines(self._inner_study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,),
                                                       use_cache=True))

    def _view(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        return [calibrated(t, self._lines, self._accuracy_index) for t in trials]

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        return self._view(self._inner_study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache))

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return self._view(self._inner_study.get_trials(deepcopy=deepcopy, states=states))

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class CalibratedSampler(optuna.samplers.BaseSampler):
    """Any Optuna sampler, fed a :class:`CalibratedStudy` wherever it reads trials to choose the
    next parameters. ``after_trial`` and ``before_trial`` see the study itself."""

    def __init__(self, inner: Any, accuracy_index: int = 0) -> None:
        self.inner = inner
        self.accuracy_index = accuracy_index

    def _view(self, study: Any) -> CalibratedStudy:
        return CalibratedStudy(study, self.accuracy_index)

    def infer_relative_search_space(self, study: Any, trial: FrozenTrial) -> dict:
        return self.inner.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study: Any, trial: FrozenTrial, search_space: dict) -> dict:
        return self.inner.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study: Any, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return self.inner.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
