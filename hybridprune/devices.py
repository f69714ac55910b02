"""Where and in what precision the training loop and evaluation compute: device, seeds, bf16.

``precision = "auto"`` means bf16 (autocast + channels_last) where the hardware computes it
natively and fp32 elsewhere; :mod:`hybridprune.speed` refines that by measuring.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from hybridprune.errors import ConfigError, first_line
from hybridprune.recipe import PRECISIONS


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` or CUDA when available, else CPU.

    Raises:
        ConfigError: a malformed device string, or CUDA asked for where there is none.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"bad device {device!r} ({first_line(exc)[:120]}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but this torch build or machine has no CUDA; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA): call it before building a model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def bf16_supported(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` (default as :func:`resolve_device`) computes bf16 natively.

    CUDA: ``torch.cuda.is_bf16_supported()``. An x86 CPU: oneDNN plus the AVX512-BF16 or AMX-BF16
    instructions (oneDNN also runs bf16 on plain AVX512 by emulation, slower than fp32). Other CPUs:
    oneDNN's own check, which there means native bf16 (e.g. Arm BF16).
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    if "avx512_bf16" in caps:
        return bool(caps["avx512_bf16"] or caps.get("amx_bf16"))
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fixed_layout() -> bool:
    """Whether ``precision = auto`` keeps the flag rule (bf16 + channels_last where native, else fp32)
    instead of measuring: ``HYBRIDPRUNE_AUTO_LAYOUT=flags``, for runs that must not depend on timing
    (the test suite, a bit-for-bit rerun on another machine)."""
    import os

    return os.environ.get("HYBRIDPRUNE_AUTO_LAYOUT", "measure") == "flags"


def resolve_precision(precision: str, device: str | torch.device | None = None) -> str:
    """The compute precision ``precision`` means on ``device``: ``"bf16"`` or ``"fp32"``.

    Args:
        precision: ``auto`` (bf16 where the hardware has it natively, else fp32), ``bf16`` or ``fp32``.
        device: The training/evaluation device (default as :func:`resolve_device`).

    Returns:
        ``"bf16"`` (autocast + channels_last) or ``"fp32"``.

    Raises:
        ConfigError: unknown value, or ``bf16`` on hardware without native bf16.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return "fp32"
    native = bf16_supported(device)
    if precision == "bf16" and not native:
        raise ConfigError(f"precision bf16 needs native bf16 on {resolve_device(device)} (CUDA with bf16, or a CPU "
                          f"with AVX512-BF16/AMX); use --precision fp32 or auto")
    return "bf16" if native else "fp32"


def autocast(device: torch.device, precision: str):
    """bf16 autocast on ``device`` when ``precision`` is ``"bf16"``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
