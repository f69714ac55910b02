"""Export a (pruned) PyTorch model to ONNX, checked and compared numerically with ONNX Runtime.

The opset defaults live here, in one place (every ONNX-taking latency backend uses them);
torch, numpy and onnx are imported only when a model is exported.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from hybridprune.errors import ConfigError, LatencyError, first_line
from hybridprune.io import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_OPSET = 13  # the newest opset TensorRT 8.2 (JetPack 4.6, Jetson TX2) reads
MIN_OPSET, MAX_OPSET = 7, 20  # what the TorchScript exporter writes


def check_opset(opset: Any) -> int:
    """Validate an ONNX opset; return it as an int.

    Raises:
        ConfigError: unless an integer in [MIN_OPSET, MAX_OPSET].
    """
    value = None
    if isinstance(opset, (int, str)) and not isinstance(opset, bool):
        with contextlib.suppress(ValueError):
            value = int(opset)
    if value is None or not MIN_OPSET <= value <= MAX_OPSET:
        raise ConfigError(f"opset must be an integer between {MIN_OPSET} and {MAX_OPSET} (TensorRT 8.2 "
                          f"reads <= {DEFAULT_OPSET}), got {opset!r}")
    return value


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...] = (1, 3, 32, 32),
                opset: int = DEFAULT_OPSET, check: bool = True, rtol: float = 1e-3,
                atol: float = 1e-4) -> Path:
    """Export ``model`` to ONNX with a static batch, and verify it.

    The model is exported in eval mode on CPU (a copy; ``model`` is not modified) with the
    TorchScript-based exporter. With ``check``, the file passes ``onnx.checker`` and ONNX Runtime's
    outputs on a random input match PyTorch's within ``rtol``/``atol``.

    Args:
        model: The model.
        path: Destination ``.onnx`` file (written atomically).
        input_shape: Full input shape including the batch, e.g. ``(1, 3, 32, 32)``.
        opset: ONNX opset version (MIN_OPSET..MAX_OPSET; TensorRT 8.2 reads <= 13).
        check: Run the checker and the numeric comparison.
        rtol, atol: Tolerances of the comparison.

    Returns:
        The path written.

    Raises:
        ConfigError: for a bad input shape or opset.
        LatencyError: if the export fails, the checker rejects it, or outputs differ.
    """
    if len(input_shape) < 2 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ConfigError(f"input_shape must be positive ints (batch, C, H, W), got {tuple(input_shape)}")
    opset = check_opset(opset)
    import copy

    import torch

    net = copy.deepcopy(model).cpu().float().eval()
    example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes about constant buffers (shortcut positions)
                torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["output"],
                                  do_constant_folding=True)
        except Exception as exc:
            raise LatencyError(f"ONNX export failed: {first_line(exc)}") from exc
        if check:
            _check(net, tmp, example, rtol, atol)
    return path


def _check(net: nn.Module, path: Path, example: torch.Tensor, rtol: float, atol: float) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise LatencyError(f"exported ONNX failed onnx.checker: {first_line(exc)}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise LatencyError(f"exported ONNX graph has {len(inputs)} inputs; expected one image input "
                           "(does forward() leave the traced graph, e.g. through numpy?)")
    got = session.run(None, {inputs[0].name: example.numpy()})[0]
    with torch.no_grad():
        want = net(example)
    want = want.numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol):
        err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        raise LatencyError(f"ONNX Runtime output differs from PyTorch (max abs error {err:.3g}, "
                           f"shapes {got.shape} vs {want.shape})")


@contextlib.contextmanager
def onnx_for(model: nn.Module | str | os.PathLike, input_shape: tuple[int, ...], batch_size: int,
             opset: int = DEFAULT_OPSET) -> Iterator[Path]:
    """Yield an ONNX file for ``model``: the path itself, or a temporary static-batch export.

    Args:
        model: A module, or a path of an existing ``.onnx`` file.
        input_shape: One sample's shape (C, H, W).
        batch_size: Static batch of the export.
        opset: Opset of the export.

    Returns:
        A context manager yielding the path; a temporary export is deleted afterwards.

    Raises:
        LatencyError: if the file does not exist or the export fails.
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise LatencyError(f"ONNX file {path} does not exist")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="hybridprune-onnx-") as tmp:
        yield export_onnx(model, Path(tmp) / "model.onnx", (batch_size, *input_shape), opset=opset)
