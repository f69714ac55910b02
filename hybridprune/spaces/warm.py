"""Warm start: the first points a study searches, spread along its space's single-mode lines.

A hybrid space holds the channel-only and the block-only searches as its two axes and their
compound (both at once) as its diagonal. A sampler that starts from random points lands mostly
in the interior, where two prunings together push most candidates under the accuracy floor, and
the single-mode searches it should at least match explore their one axis from the first trial.
``[space] warm_start = N`` therefore enqueues ``N`` points before the sampler's own: evenly along
each line the space searches (each axis, then the diagonal), round robin, at fractions
``(k + 0.5) / m`` of each parameter's range, so no point is the unpruned baseline or the range's far
end. The middle of the lines comes first, then outwards (milder before harsher at equal distance):
MO-ASHA continues the first trial to reach a rung, so the first point gets the full fine-tune,
and mildest-first spent it on a point next to the unpruned model (0.96x its latency, RESULTS.md,
warm start). They are searched trials (inside the wall-time budget, labelled ``warm_start``),
not reference points: a study that seeds gets no extra time.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from hybridprune.spaces.base import Choice, Fixed, FloatRange, IntRange, Param

Line = Callable[[float], dict[str, Any]]


def searched(p: Param) -> bool:
    """Whether ``p`` takes more than one value."""
    return not isinstance(p, Fixed)


def mildest(p: Param) -> Any:
    """The least pruning value of a numeric parameter: its low end (its value when fixed)."""
    if isinstance(p, Fixed):
        return p.value
    if isinstance(p, Choice):
        return min(p.choices)
    return p.low


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))  # not round(): 2.5 gives 3, as a reader expects


def at(p: Param, f: float) -> Any:
    """The value at fraction ``f`` in [0, 1] of a numeric parameter's range, on its grid (halves up)."""
    if isinstance(p, Fixed):
        return p.value
    if isinstance(p, Choice):
        values = sorted(p.choices)
        return values[min(len(values) - 1, _half_up(f * (len(values) - 1)))]
    if isinstance(p, IntRange):
        return min(p.high, p.low + _half_up(f * (p.high - p.low) / p.step) * p.step)
    assert isinstance(p, FloatRange)
    x = p.low + f * (p.high - p.low)
    if p.step:
        x = min(p.high, p.low + _half_up((x - p.low) / p.step) * p.step)
    return round(x, 6)


def spread(lines: list[Line], n: int) -> list[dict[str, Any]]:
    """``n`` points (or fewer, where lines meet) along ``lines``, round robin, from the middle out."""
    if n <= 0 or not lines:
        return []
    per = math.ceil(n / len(lines))
    points: list[dict[str, Any]] = []
    for k in sorted(range(per), key=lambda k: (abs(2 * k + 1 - per), k)):  # |(k + 0.5) / per - 0.5|, milder first
        for line in lines:
            point = line((k + 0.5) / per)
            if point not in points:
                points.append(point)
    return points[:n]
