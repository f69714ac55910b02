"""Search-space base class and the small parameter specs a study file can give.

A space turns an Optuna trial into the frozen :class:`~hybridprune.pruning.HybridConfig` the pruner
takes. Spaces are the only code in hybridprune that calls ``trial.suggest_*``. Every parameter of a
space is one of:

* a :class:`FloatRange` / :class:`IntRange` (``{low = 0.0, high = 0.8, step = 0.05}`` in TOML),
* a :class:`Choice` (a TOML list of strings), or
* a fixed value (a plain number or string), which is not searched.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from hybridprune.errors import ConfigError


@dataclass(frozen=True)
class FloatRange:
    """A float parameter searched in ``[low, high]`` on a grid of ``step`` (``None``: continuous)."""

    low: float
    high: float
    step: float | None = None

    def suggest(self, trial: Any, name: str) -> float:
        """Ask ``trial`` for the value of parameter ``name``."""
        return float(trial.suggest_float(name, self.low, self.high, step=self.step))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain."""
        return isinstance(value, (int, float)) and self.low - 1e-12 <= float(value) <= self.high + 1e-12


@dataclass(frozen=True)
class IntRange:
    """An integer parameter searched in ``[low, high]``."""

    low: int
    high: int
    step: int = 1

    def suggest(self, trial: Any, name: str) -> int:
        """Ask ``trial`` for the value of parameter ``name``."""
        return int(trial.suggest_int(name, self.low, self.high, step=self.step))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain."""
        return isinstance(value, int) and self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    """A categorical parameter."""

    choices: tuple[Any, ...]

    def suggest(self, trial: Any, name: str) -> Any:
        """Ask ``trial`` for the value of parameter ``name``."""
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain."""
        return value in self.choices


@dataclass(frozen=True)
class Fixed:
    """A parameter fixed by the study file (not searched)."""

    value: Any

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain."""
        return value == self.value


Param = FloatRange | IntRange | Choice | Fixed


# Labels of the reference points a study records (trial user attribute ``reference``), defined once:
# the unpruned baseline, the paper's settings, and another model a user could pick instead.
REF_BASELINE = "baseline"
REF_PAPER = "paper"
REF_FAMILY = "family"
REFERENCE_LABELS = (REF_BASELINE, REF_PAPER, REF_FAMILY)

# Channel ratio of the paper's configurations, which every space offers as a labelled reference.
PAPER_CHANNEL_RATIO = 0.3


def pruning_orders() -> tuple[str, ...]:
    """The pruner's orders (``channel_first``, ``layer_first``), defined once in
    :mod:`hybridprune.pruning.config`; imported on use so that importing the spaces needs no torch."""
    from hybridprune.pruning.config import ORDERS

    return ORDERS


def make_config(channel_ratio: float, pruned_blocks: int, criterion: str, order: str, fixed: Mapping[str, Any]):
    """Build the pruner's frozen ``HybridConfig`` (the one place every space goes through).

    Raises:
        ConfigError / UnknownNameError: from ``HybridConfig`` validation.
    """
    from hybridprune.pruning import HybridConfig

    return HybridConfig(
        channel_ratio=round(float(channel_ratio), 6),
        pruned_blocks=int(pruned_blocks),
        criterion=str(criterion),
        order=str(order),
        **dict(fixed),
    )


def _number(value: Any, key: str, kind: type) -> float | int:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{key} must be a {'whole number' if kind is int else 'number'}, got {value!r}")
    return kind(value)


def parse_param(
    raw: Any,
    key: str,
    kind: type,
    *,
    bounds: tuple[float, float] | None = None,
    choices: list[str] | None = None,
) -> Param:
    """Turn a study-file value into a parameter spec, validating it.

    Args:
        raw: ``{low, high, step}`` table, list of choices, or a fixed scalar.
        key: Dotted study-file key, for messages (``space.channel_ratio``).
        kind: ``float``, ``int`` or ``str``.
        bounds: Inclusive limits every value must respect.
        choices: Allowed values for string parameters.

    Returns:
        A :class:`FloatRange`, :class:`IntRange`, :class:`Choice` or :class:`Fixed`.

    Raises:
        ConfigError: naming ``key`` and what is allowed.
    """

    def check(value: Any, where: str) -> Any:
        if kind is str:
            if not isinstance(value, str) or (choices is not None and value not in choices):
                raise ConfigError(f"{where} must be one of {choices}, got {value!r}")
            return value
        value = _number(value, where, kind)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise ConfigError(f"{where} must lie in [{bounds[0]}, {bounds[1]}], got {value!r}")
        return value

    if isinstance(raw, Mapping):
        if kind is str:
            raise ConfigError(f"{key} takes a list of choices or one fixed value, not a table")
        unknown = set(raw) - {"low", "high", "step"}
        if unknown or "low" not in raw or "high" not in raw:
            raise ConfigError(
                f"{key} range needs keys low and high (optional step); got {sorted(raw)}"
            )
        low, high = check(raw["low"], f"{key}.low"), check(raw["high"], f"{key}.high")
        if low > high:
            raise ConfigError(f"{key}: low ({low}) must not exceed high ({high})")
        step = raw.get("step")
        if step is not None:
            step = _number(step, f"{key}.step", kind)
            if step <= 0:
                raise ConfigError(f"{key}.step must be > 0, got {step}")
        if kind is int:
            return IntRange(int(low), int(high), int(step or 1))
        return FloatRange(float(low), float(high), None if step is None else float(step))
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{key} must list at least one choice")
        values = tuple(check(v, f"{key}[{i}]") for i, v in enumerate(raw))
        if len(set(values)) != len(values):
            raise ConfigError(f"{key} lists a choice twice: {list(values)}")
        return Fixed(values[0]) if len(values) == 1 else Choice(values)
    return Fixed(check(raw, key))


MAX_WARM_START = 1000


def _warm_start(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_WARM_START:
        raise ConfigError(f"space.warm_start must be a whole number of points in [0, {MAX_WARM_START}], got {raw!r}")
    return raw


class BaseSpace(ABC):
    """A family of pruning configurations searched by a study.

    Subclasses set ``name``, ``options`` (allowed study-file keys under ``[space]``) and
    implement :meth:`suggest_params` and :meth:`to_config`.

    Args:
        options: The ``[space]`` table of the study file, without ``kind``; every kind takes
            ``warm_start`` (points enqueued before the sampler's own: :meth:`warm_start_points`).
        removable_blocks: How many residual blocks the model can lose.
        stage_sizes: How many of them each stage holds, in model order (default: one stage of all).
        criteria: Names of the pruning criteria that exist.
        fixed: HybridConfig fields the study fixes (scope, allocation, round_to, ...).

    Raises:
        ConfigError: for unknown keys or values out of range.
    """

    name: ClassVar[str]
    options: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        removable_blocks: int,
        criteria: list[str],
        fixed: Mapping[str, Any] | None = None,
        stage_sizes: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        options = dict(options)
        self.warm_start = _warm_start(options.pop("warm_start", 0))
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in [space] of kind {self.name!r}; allowed: "
                f"{sorted(self.options + ('warm_start',))}"
            )
        self.removable_blocks = int(removable_blocks)
        self.stage_sizes = tuple(int(n) for n in stage_sizes) if stage_sizes is not None else (self.removable_blocks,)
        if sum(self.stage_sizes) != self.removable_blocks:
            raise ConfigError(f"stage sizes {list(self.stage_sizes)} do not add up to the {self.removable_blocks} "
                              f"removable blocks")
        self.criteria = list(criteria)
        self.fixed = dict(fixed or {})
        self.params: dict[str, Param] = self._parse(dict(options))

    @abstractmethod
    def _parse(self, options: dict[str, Any]) -> dict[str, Param]:
        """Validate the ``[space]`` options and return the parameter specs by name."""

    @abstractmethod
    def to_config(self, params: Mapping[str, Any]) -> Any:
        """Map parameter values (searched and fixed) to a ``HybridConfig``."""

    @abstractmethod
    def labelled_references(self) -> list[tuple[str, dict[str, Any]]]:
        """``(label, parameters)`` enqueued before sampling: ``baseline`` (unpruned) and ``paper``
        (the paper's settings). Points whose values fall outside the study's bounds are left out.
        """

    @abstractmethod
    def _lines(self) -> list:
        """The single-mode lines of the space for :meth:`warm_start_points`: functions of a
        fraction in [0, 1] giving the pruning parameters there (each axis the space searches, then
        their diagonal); the other parameters are filled in there."""

    def warm_start_points(self) -> list[dict[str, Any]]:
        """The ``[space] warm_start`` points, enqueued before the sampler's own (``[]`` when 0).

        They lie along :meth:`_lines` (``hybridprune/spaces/warm.py``); the criterion cycles through
        the space's choices from point to point, a searched ``round_to`` takes its coarsest value,
        every other parameter its first choice. Points outside the space, or twice, are left out.
        """
        from hybridprune.spaces.warm import spread

        raw = spread(self._lines(), self.warm_start)
        full = [{k: point[k] if k in point else self._cycled(k, i) for k in self.params} for i, point in enumerate(raw)]
        return [point for _, point in self._labelled([("", point) for point in full])]

    def _cycled(self, name: str, i: int) -> Any:
        p = self.params[name]
        if name == "criterion" and isinstance(p, Choice):
            return p.choices[i % len(p.choices)]
        if name == "round_to" and isinstance(p, (Choice, IntRange)):
            # not 1: the mildest point's unrounded widths (15, 29, 58 channels) timed 1.24x the unpruned
            # model on ONNX Runtime (AVX2 CPU); rounded to 8, 0.96x (RESULTS.md, warm start)
            return max(p.choices) if isinstance(p, Choice) else p.high
        return self._first(name)

    def _first(self, name: str) -> Any:
        """The first choice of parameter ``name`` (its value when fixed): what references use."""
        p = self.params[name]
        return p.choices[0] if isinstance(p, Choice) else getattr(p, "value", None)

    def _values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value: ``params`` for the searched ones, the study's for the fixed.

        Raises:
            ConfigError: naming the searched parameters ``params`` lacks.
        """
        missing = [k for k, p in self.params.items() if k not in params and not isinstance(p, Fixed)]
        if missing:
            raise ConfigError(f"{self.name} space parameters missing: {missing}")
        return {k: params.get(k, getattr(p, "value", None)) for k, p in self.params.items()}

    def _channel_ratio(self, options: Mapping[str, Any]) -> Param:
        """``[space] channel_ratio``: share of channels removed per layer, default 0-0.8 step 0.05."""
        return parse_param(options.get("channel_ratio", {"low": 0.0, "high": 0.8, "step": 0.05}),
                           "space.channel_ratio", float, bounds=(0.0, 0.95))

    def _criterion(self, options: Mapping[str, Any]) -> Param:
        """``[space] criterion``: one criterion or a list of them, default every registered one."""
        return parse_param(options.get("criterion", list(self.criteria)), "space.criterion", str,
                           choices=self.criteria)

    def _order(self, options: Mapping[str, Any], default: Any = None) -> Param:
        """``[space] order``: ``channel_first`` / ``layer_first``, default ``default`` (both orders)."""
        orders = list(pruning_orders())
        return parse_param(options.get("order", orders if default is None else default), "space.order", str,
                           choices=orders)

    def _round_to(self, options: Mapping[str, Any]) -> dict[str, Param]:
        """``{"round_to": spec}`` when ``[space]`` searches the channel rounding, else ``{}``."""
        if "round_to" not in options:
            return {}
        if "round_to" in self.fixed:
            raise ConfigError("round_to is set in [pruning] and searched in [space]; keep one of them")
        return {"round_to": parse_param(options["round_to"], "space.round_to", int, bounds=(1, 64))}

    def _fixed_with(self, value: Mapping[str, Any]) -> dict[str, Any]:
        """The study's fixed HybridConfig fields plus a searched ``round_to`` from ``value``."""
        return {**self.fixed, "round_to": int(value["round_to"])} if "round_to" in value else dict(self.fixed)

    def reference_points(self) -> list[dict[str, Any]]:
        """The parameters of :meth:`labelled_references`, without their labels."""
        return [params for _, params in self.labelled_references()]

    def _labelled(self, raw: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """Keep the points inside the space (fixed params dropped), each once."""
        out: list[tuple[str, dict[str, Any]]] = []
        for label, point in raw:
            kept = self._keep_reference(point)
            if kept is not None and kept not in [p for _, p in out]:
                out.append((label, kept))
        return out

    def searched(self) -> dict[str, Param]:
        """The parameters that are searched (not fixed)."""
        return {k: p for k, p in self.params.items() if not isinstance(p, Fixed)}

    def suggest_params(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` for every searched parameter; fixed ones are added as they are.

        Args:
            trial: An ``optuna.trial.Trial`` (or anything with the ``suggest_*`` methods).

        Returns:
            All parameter values by name.
        """
        out: dict[str, Any] = {}
        for name, param in self.params.items():
            out[name] = param.value if isinstance(param, Fixed) else param.suggest(trial, name)
        return out

    def suggest(self, trial: Any) -> Any:
        """Turn a trial into the frozen ``HybridConfig`` the pruner takes."""
        return self.to_config(self.suggest_params(trial))

    def _keep_reference(self, point: dict[str, Any]) -> dict[str, Any] | None:
        """Drop fixed params from ``point``; ``None`` if a value is outside the space."""
        for name, value in point.items():
            if not self.params[name].contains(value):
                return None
        return {k: v for k, v in point.items() if k in self.searched()}

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the space (stored as a study user attribute)."""

        def one(p: Param) -> Any:
            if isinstance(p, Fixed):
                return p.value
            if isinstance(p, Choice):
                return list(p.choices)
            return {"low": p.low, "high": p.high, "step": p.step}

        return {"kind": self.name, **{k: one(p) for k, p in self.params.items()},
                **({"warm_start": self.warm_start} if self.warm_start else {})}
