"""Latency evaluators: ONNX export, latency backends (onnxruntime, torch, tensorrt, remote agent).

Names are imported lazily on first use so ``import hybridprune.evaluators`` stays cheap (no torch,
no onnxruntime); ``agent.py`` (server), ``trtexec.py`` (trtexec) and ``timing.py`` (protocol,
statistics) are the stdlib-only device agent.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BaseLatencyBackend": "base",
    "LatencyResult": "base",
    "LATENCY_BACKENDS": "base",
    "get_latency_backend": "registry",
    "list_latency_backends": "registry",
    "export_onnx": "export",
    "Protocol": "timing",
    "summarize": "timing",
    "run_protocol": "timing",
    "parse_trtexec_output": "trtexec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hybridprune.evaluators.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'hybridprune.evaluators' has no attribute {name!r}")
