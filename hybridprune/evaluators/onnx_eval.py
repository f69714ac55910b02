"""Top-1 accuracy of an ONNX file with ONNX Runtime: what a published model really scores.

The files hybridprune exports have a static batch; images are fed in chunks of that size (the
last chunk padded with zeros, whose outputs are dropped), so the score is the file's own, not
PyTorch's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hybridprune.errors import LatencyError


def onnx_top1(path: str | Path, images: Any, labels: Any, mean: Sequence[float], std: Sequence[float],
              threads: int = 1) -> float:
    """Top-1 accuracy (a fraction) of the ONNX file ``path`` on uint8 NCHW ``images``.

    Args:
        path: The ONNX file (one image input, one logits output).
        images: uint8 array or tensor, shape (N, C, H, W).
        labels: int array or tensor, shape (N,).
        mean, std: Per-channel input normalisation of the model (after scaling to [0, 1]).
        threads: ONNX Runtime intra-op threads.

    Raises:
        LatencyError: when ONNX Runtime cannot load or run the file.
    """
    import numpy as np
    import onnxruntime as ort

    images = np.asarray(images)
    labels = np.asarray(labels)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LatencyError(f"onnxruntime cannot load {path}: {exc}") from None
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 256
    c = images.shape[1]
    m = np.asarray(mean, dtype=np.float32).reshape(1, c, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, c, 1, 1)
    correct = 0
    for i in range(0, len(images), batch):
        chunk = (images[i:i + batch].astype(np.float32) / 255.0 - m) / s
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), np.float32)])
        logits = sess.run(None, {inp.name: chunk})[0][:n]
        correct += int((logits.argmax(axis=1) == labels[i:i + n]).sum())
    return correct / max(1, len(images))
