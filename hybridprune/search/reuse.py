"""No configuration is pruned and fine-tuned twice in one study.

A trial whose space parameters equal those of a completed trial takes that trial's objective
values, constraints and records, and names it in ``duplicate_of``; it is COMPLETE, so every sampler
learns from it as from any other result, but it does not count towards ``study.trials`` (the study
runs until that many configurations were really evaluated). When the twin is still RUNNING in
another worker, the trial with the higher number waits for it, so two workers never fine-tune the
same configuration at the same time either (the lower number never waits: no deadlock).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping

from hybridprune.search import trials as T

log = logging.getLogger(__name__)
POLL_S = 0.5

#: What a duplicate copies from its twin.
COPIED = (T.PARAMS, T.MACS, T.ARCHITECTURE, T.REMOVED_BLOCKS, T.RECORD, T.LATENCY_RESULT, T.LATENCY_MS, T.LATENCY_RATIO,
          T.LATENCY_BACKEND, T.LATENCY_KEY, T.LATENCY_MACHINE, T.LATENCY_SCREEN, T.ACCURACY, T.ACCURACY_BEFORE,
          T.FIDELITY_STEPS, T.GATED, T.FINETUNE, T.ARTIFACTS, T.CONSTRAINTS)


def same_params(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two parameter dicts name the same configuration (floats compared to 1e-9)."""
    if set(a) != set(b):
        return False
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, float) or isinstance(vb, float):
            numbers = isinstance(vb, (int, float)) and isinstance(va, (int, float))
            if not (numbers and math.isclose(va, vb, abs_tol=1e-9)):
                return False
        elif va != vb:
            return False
    return True


def find_twin(study: Any, number: int, params: Mapping[str, Any], *, heartbeat: bool = False,
              promoted_from: int | None = None) -> Any:
    """A completed trial of ``study`` with the same ``params``, waiting for a lower-numbered running one.

    Of several completed twins the one that fine-tuned the most steps is taken (a screened trial and
    its promoted twin have the same parameters).

    Args:
        study: The study.
        number: This trial's number.
        params: This trial's parameters.
        heartbeat: Whether the storage has heartbeats (a dead twin is then failed while waiting).
        promoted_from: For a promoted trial (:mod:`~hybridprune.search.fidelity`), the number of the
            screened trial it goes on from: only another promotion of that trial is a twin.

    Returns:
        The twin ``FrozenTrial``, or ``None`` when this configuration has to be evaluated.
    """
    import optuna
    from optuna.trial import TrialState

    waited = False
    while True:
        running, complete = None, []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.number == number or not same_params(t.params, params):
                continue
            if promoted_from is not None and t.user_attrs.get(T.PROMOTED_FROM) != promoted_from:
                continue
            if t.state == TrialState.COMPLETE:
                complete.append(t)
            elif t.number < number:
                running = t
        if complete:
            return max(complete, key=lambda t: (int(t.user_attrs.get(T.FIDELITY_STEPS) or 0), -t.number))
        if running is None:
            return None
        if not waited:
            log.info("trial %s: trial %s runs the same configuration; waiting for its result", number, running.number)
            waited = True
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
        time.sleep(POLL_S)


def reuse(trial: Any, twin: Any) -> list[float]:
    """Record ``twin``'s results on ``trial`` and return its objective values."""
    for key in COPIED:
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    trial.set_user_attr(T.DUPLICATE_OF, twin.number)
    for key, value in twin.constraints.items():
        trial.set_constraint(key, value)
    return list(twin.values)
