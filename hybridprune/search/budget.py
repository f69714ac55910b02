"""Wall-time budgets: ``[study] time_budget`` / ``run --time-budget``.

No trial starts once the budget is used up (a trial that is running finishes). The time used is
kept in the study (``time_budget`` study attribute), so a resumed run continues with what is
left; a resume given another budget gets that much more from now. Trial count and time budget
combine: whichever is reached first ends the run.

``[study] budget_covers = "search"`` charges only the search: wall time during which one of the
study's enqueued reference points (the baseline, the paper's settings) was running is credited
back, so studies with different reference grids get the same searching time. The credit is the
union of those trials' run intervals in this run, so with several workers a reference running
beside a searched trial is still credited whole (the generous side); ``status`` says how much
was credited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hybridprune.search import trials as T

BUDGET_S, USED_S, DEADLINE = "budget_s", "used_s", "deadline"
COVERS, STARTED, CREDITED_S = "covers", "run_started", "credited_s"
#: What a time budget charges: every trial, or only the searched ones.
COVERS_CHOICES = ("all", "search")


@dataclass
class TimeBudget:
    """One run's share of the study's budget (see :func:`start`)."""

    study: Any
    budget_s: float
    used_before_s: float
    started: float
    covers: str = "all"
    credited_before_s: float = 0.0

    @property
    def deadline(self) -> float:
        """Wall-clock time (``time.time()``) after which no trial starts, before any credit."""
        return self.started + max(0.0, self.budget_s - self.used_before_s)

    def finish(self) -> None:
        """Add this run's wall time (less what references were credited) to the study's used time."""
        now = time.time()
        credit = reference_seconds(self.study, self.started, now) if self.covers == "search" else 0.0
        used = self.used_before_s + (now - self.started) - credit
        self.study.set_user_attr(T.STUDY_TIME, {BUDGET_S: self.budget_s, USED_S: used, DEADLINE: None,
                                                COVERS: self.covers, CREDITED_S: self.credited_before_s + credit})


def start(study: Any, budget_s: float | None, covers: str = "all") -> TimeBudget | None:
    """Open this run's share of the time budget (``None``: the study has none).

    Args:
        study: The study.
        budget_s: The budget of the study file or the command line, seconds (``None``: the one
            recorded by an earlier run, if any).
        covers: ``"all"`` charges every trial, ``"search"`` credits reference points back.
    """
    rec = study.user_attrs.get(T.STUDY_TIME) or {}
    used, total = float(rec.get(USED_S) or 0.0), rec.get(BUDGET_S)
    if budget_s is None and total is None:
        return None
    if budget_s is not None and total is not None and budget_s != total:
        total = used + budget_s  # another budget on a resume: that much more from now
    elif total is None:
        total = budget_s
    budget = TimeBudget(study, float(total), used, time.time(), covers, float(rec.get(CREDITED_S) or 0.0))
    study.set_user_attr(T.STUDY_TIME, {BUDGET_S: budget.budget_s, USED_S: used, DEADLINE: budget.deadline,
                                       COVERS: covers, STARTED: budget.started,
                                       CREDITED_S: budget.credited_before_s})
    return budget


def reference_seconds(study: Any, since: float, now: float | None = None) -> float:
    """Wall seconds since ``since`` during which at least one enqueued reference point was running
    (the union of their intervals; a running one counts up to ``now``)."""
    now = time.time() if now is None else now
    spans = []
    for t in study.get_trials(deepcopy=False):
        if not t.user_attrs.get(T.REFERENCE) or t.datetime_start is None:
            continue
        begin = max(since, t.datetime_start.timestamp())
        end = t.datetime_complete.timestamp() if t.datetime_complete is not None else now
        if end > begin:
            spans.append((begin, min(end, now)))
    total, reach = 0.0, since
    for begin, end in sorted(spans):
        if end > reach:
            total += end - max(begin, reach)
            reach = end
    return total


def _running_credit(study: Any, rec: dict) -> float:
    """Seconds the run in progress has credited back so far (0 unless it covers only the search)."""
    if rec.get(DEADLINE) is None or rec.get(COVERS) != "search" or rec.get(STARTED) is None:
        return 0.0
    return reference_seconds(study, rec[STARTED])


def deadline(study: Any) -> float | None:
    """The deadline of the run in progress, read from the study (every worker and machine sees it),
    with the reference points' time added back under ``budget_covers = "search"``."""
    rec = study.user_attrs.get(T.STUDY_TIME) or {}
    return None if rec.get(DEADLINE) is None else rec[DEADLINE] + _running_credit(study, rec)


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
    used, credited = float(rec.get(USED_S) or 0.0), float(rec.get(CREDITED_S) or 0.0)
    if rec.get(DEADLINE) is not None:  # a run is in progress (or was killed): count it as used so far
        credit = _running_credit(study, rec)
        used = rec[BUDGET_S] - max(0.0, rec[DEADLINE] + credit - time.time())
        credited += credit
    left = max(0.0, rec[BUDGET_S] - used)
    line = f"time budget {fmt(rec[BUDGET_S])}: {fmt(used)} used, {fmt(left)} left"
    if rec.get(COVERS) == "search":
        line += f" (searched trials only; {fmt(credited)} of reference points not charged)"
    return line
