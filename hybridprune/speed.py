"""Measured hardware speed: the fastest precision and memory layout of a training step, per machine.

Which of fp32 / bf16 autocast x contiguous / channels_last is fastest depends on the CPU (an
AVX2-only EPYC: fp32 + channels_last 1.23x plain fp32, bf16 not native; a CPU with AVX512-BF16:
bf16 + channels_last 2.1x), on the model and on the batch. Like cuDNN's benchmark mode,
``precision = "auto"`` therefore times a few real training steps of each candidate once and keeps
the fastest, cached per machine (device, CPU model and flags, torch version, threads) and model
family and batch shape, in memory and in ``$HYBRIDPRUNE_SPEED_CACHE`` (default
``~/.cache/hybridprune/speed.json``). A pruned model shares its family's entry: the choice does not
hinge on the exact widths, and a study does not re-measure for every trial.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

CACHE_ENV = "HYBRIDPRUNE_SPEED_CACHE"
_MEMO: dict[str, "Layout"] = {}


@dataclass(frozen=True)
class Layout:
    """A training step's precision and memory layout, and what choosing it measured."""

    precision: str
    channels_last: bool
    step_ms: dict[str, float]  # candidate name -> median step time (empty when nothing was timed)
    source: str  # "measured", "cache", "fallback"

    @property
    def name(self) -> str:
        """``fp32``, ``fp32+channels_last``, ``bf16+channels_last`` ..."""
        return self.precision + ("+channels_last" if self.channels_last else "")


def cache_file() -> Path:
    """``$HYBRIDPRUNE_SPEED_CACHE`` or ``~/.cache/hybridprune/speed.json``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "hybridprune" / "speed.json"


def machine_key(device: torch.device) -> str:
    """What the speed of a step depends on besides the model: device, CPU, torch, threads."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{_cpu_model()} ({torch.backends.cpu.get_cpu_capability()})"
    return f"{what}|torch {torch.__version__}|threads {torch.get_num_threads()}|{platform.machine()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def candidates(bf16: bool) -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs worth timing; bf16 only where it is native."""
    out = [("fp32", False), ("fp32", True)]
    return out + ([("bf16", False), ("bf16", True)] if bf16 else [])


def _time_steps(model: nn.Module, batch: tuple[int, ...], classes: int, device: torch.device, precision: str,
                channels_last: bool, steps: int) -> float:
    net = copy.deepcopy(model).to(device, memory_format=torch.channels_last if channels_last else
                                  torch.contiguous_format).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True, foreach=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch[0],), generator=g).to(device)
    times = []
    for i in range(steps + 1):  # the first step pays for allocations: not timed
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def fastest_layout(model: nn.Module, batch: tuple[int, ...], classes: int, device: torch.device, *, bf16: bool,
                   steps: int = 3, timer: Callable[..., float] = _time_steps) -> Layout:
    """The fastest (precision, channels_last) for training ``model`` on ``batch``-shaped inputs.

    Args:
        model: The network (not modified: candidates train a copy).
        batch: Input shape (N, C, H, W).
        classes: Output classes (for random labels).
        device: The training device.
        bf16: Whether bf16 is native there (only then are bf16 candidates timed).
        steps: Timed steps per candidate.
        timer: Times one candidate (tests give their own).

    Returns:
        A :class:`Layout`; ``fallback`` (fp32, contiguous) when timing failed.
    """
    family = getattr(model, "hp_model_name", None) or type(model).__qualname__
    key = hashlib.sha256(f"{machine_key(device)}|{family}|{tuple(batch)}|bf16 {bf16}".encode()).hexdigest()[:24]
    if key in _MEMO:
        return _MEMO[key]
    stored = _read().get(key)
    if stored is not None:
        layout = Layout(stored["precision"], bool(stored["channels_last"]), dict(stored["step_ms"]), "cache")
    else:
        try:
            measured = {f"{p}{'+channels_last' if cl else ''}": timer(model, batch, classes, device, p, cl, steps)
                        for p, cl in candidates(bf16)}
        except Exception:  # a candidate that cannot run here: the plain step, which always can
            layout = Layout("fp32", False, {}, "fallback")
        else:
            best = min(measured, key=measured.get)
            precision, _, cl = best.partition("+")
            layout = Layout(precision, bool(cl), measured, "measured")
            _write(key, {**asdict(layout), "machine": machine_key(device), "family": family, "batch": list(batch)})
    _MEMO[key] = layout
    return layout


def _read() -> dict:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(key: str, entry: dict) -> None:
    from hybridprune.io import atomic_path

    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read()
        data[key] = entry
        with atomic_path(path, suffix=".json") as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1))
    except OSError:
        pass  # an unwritable cache only costs a re-measure next time
