"""Wall-time budgets: ``[study] time_budget`` / ``run --time-budget``.

No trial starts once the budget is used up (a trial that is running finishes). The time used is
kept in the study (``time_budget`` study attribute), so a resumed run continues with what is
left; a resume given another budget gets that much more from now. Trial count and time budget
combine: whichever is reached first ends the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hybridprune.search import trials as T

BUDGET_S, USED_S, DEADLINE = "budget_s", "used_s", "deadline"


@dataclass
class TimeBudget:
    """One run's share of the study's budget (see :func:`start`)."""

    study: Any
    budget_s: float
    used_before_s: float
    started: float

    @property
    def deadline(self) -> float:
        """Wall-clock time (``time.time()``) after which no trial starts."""
        return self.started + max(0.0, self.budget_s - self.used_before_s)

    def finish(self) -> None:
        """Add this run's wall time to the study's used time."""
        used = self.used_before_s + (time.time() - self.started)
        self.study.set_user_attr(T.STUDY_TIME, {BUDGET_S: self.budget_s, USED_S: used, DEADLINE: None})


def start(study: Any, budget_s: float | None) -> TimeBudget | None:
    """Open this run's share of the time budget (``None``: the study has none).

    Args:
        study: The study.
        budget_s: The budget of the study file or the command line, seconds (``None``: the one
            recorded by an earlier run, if any).
    """
    rec = study.user_attrs.get(T.STUDY_TIME) or {}
    used, total = float(rec.get(USED_S) or 0.0), rec.get(BUDGET_S)
    if budget_s is None and total is None:
        return None
    if budget_s is not None and total is not None and budget_s != total:
        total = used + budget_s  # another budget on a resume: that much more from now
    elif total is None:
        total = budget_s
    budget = TimeBudget(study, float(total), used, time.time())
    study.set_user_attr(T.STUDY_TIME, {BUDGET_S: budget.budget_s, USED_S: used, DEADLINE: budget.deadline})
    return budget


def deadline(study: Any) -> float | None:
    """The deadline of the run in progress, read from the study (every worker and machine sees it)."""
    return (study.user_attrs.get(T.STUDY_TIME) or {}).get(DEADLINE)


def used_up(study: Any) -> bool:
    """Whether no trial may start any more."""
    end = deadline(study)
    return end is not None and time.time() >= end


def fmt(seconds: float) -> str:
    """``1h05m``, ``12m30s``, ``45s``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def describe(study: Any) -> str | None:
    """``time budget 2h00m: 1h10m used, 50m00s left`` (``None`` without a budget)."""
    rec = study.user_attrs.get(T.STUDY_TIME)
    if not rec:
        return None
    used = float(rec.get(USED_S) or 0.0)
    if rec.get(DEADLINE) is not None:  # a run is in progress (or was killed): count it as used so far
        used = rec[BUDGET_S] - max(0.0, rec[DEADLINE] - time.time())
    left = max(0.0, rec[BUDGET_S] - used)
    return f"time budget {fmt(rec[BUDGET_S])}: {fmt(used)} used, {fmt(left)} left"
