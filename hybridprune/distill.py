"""A frozen distillation teacher that computes each batch's outputs once.

Refine distils every model it fine-tunes from the same adapted baseline, with one shared seed, so
every model sees the same augmented batches in the same order. The teacher's forward pass on the
CPU is a large share of a distilled step (counted in MACs, the unpruned ResNet-56's forward is
about 40% of a step of a half-size student; not yet timed: ``benchmarks/distill_memo.py``), and
it gives the same outputs for the same batch each time. :class:`MemoTeacher` keys them by the
batch's exact bytes, so a hit returns the very tensor the teacher gave before: training with it is
bit-for-bit the training without it.
"""

from __future__ import annotations

import copy
import hashlib

import torch
import torch.nn as nn

DEFAULT_MAX_BYTES = 256 * 2**20  # ~20 epochs of CIFAR-10 logits at batch 128: far more than a refine keeps


class MemoTeacher(nn.Module):
    """Wraps a copy of ``teacher`` (frozen, eval mode) and remembers its output for every input batch.

    The key is a BLAKE2 digest of the input's bytes together with its dtype, shape, strides, device
    and the autocast state, so a batch in another memory layout or precision is computed afresh.
    Outputs are kept until ``max_bytes`` are held; later batches are then computed each time.
    """

    def __init__(self, teacher: nn.Module, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__()
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)  # nobody else can change it
        self.max_bytes = max_bytes
        self.held = 0
        self.hits = self.misses = 0
        self._memo: dict[bytes, torch.Tensor] = {}

    def train(self, mode: bool = True) -> MemoTeacher:
        """Stay in eval mode: a teacher's batch-norm statistics must not move."""
        return super().train(False)

    def _key(self, x: torch.Tensor) -> bytes:
        h = hashlib.blake2b(digest_size=20)
        dev = x.device.type
        fast = torch.is_autocast_enabled(dev) if dev in ("cpu", "cuda") else False
        dtype = torch.get_autocast_dtype(dev) if fast else None
        h.update(repr((x.dtype, tuple(x.shape), x.stride(), str(x.device), fast, dtype)).encode())
        h.update(x.detach().cpu().contiguous().numpy().tobytes() if x.dtype != torch.bfloat16
                 else x.detach().cpu().contiguous().view(torch.int16).numpy().tobytes())
        return h.digest()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's output for ``x``, computed at the first sight of these exact bytes."""
        key = self._key(x)
        out = self._memo.get(key)
        if out is not None:
            self.hits += 1
            return out
        self.misses += 1
        with torch.no_grad():
            out = self.teacher(x)
        size = out.element_size() * out.nelement()
        if self.held + size <= self.max_bytes:
            self._memo[key] = out
            self.held += size
        return out
