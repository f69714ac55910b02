"""A device-resident loader in the style of airbench: the split lives on the device as uint8 and
each batch is shuffled, cropped, flipped and normalised with a few batched tensor ops there."""

from __future__ import annotations

import math
from typing import Iterator

import torch

from hybridprune.data.datasets import Split
from hybridprune.errors import ConfigError, DataError
from hybridprune.models import Normalization


def augment_batch(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a uint8 ``[N, C, H, W]`` batch.

    Args:
        images: uint8 batch.
        pad: Padding of the random crop; 0 disables cropping.
        generator: RNG on the batch's device.

    Returns:
        A new batch of the same shape and dtype.
    """
    n, c, h, w = images.shape
    dev = images.device
    shift = torch.randint(0, 2 * pad + 1, (2, n), device=dev, generator=generator)
    flip = torch.randint(0, 2, (n,), device=dev, generator=generator).bool()
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad)) if pad else images
    hp, wp = h + 2 * pad, w + 2 * pad
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = ar_h[None, :] + shift[0, :, None]
    # Crop and flip are one gather: a flipped image reads its crop's columns right to left. A flat
    # gather is several times faster than 4-D advanced indexing on CPU.
    cols = torch.where(flip[:, None], ar_w.flip(0)[None, :], ar_w[None, :]) + shift[1, :, None]
    flat = (
        torch.arange(c, device=dev)[None, :, None, None] * (hp * wp)
        + rows[:, None, :, None] * wp
        + cols[:, None, None, :]
    )
    return padded.reshape(n, -1).gather(1, flat.view(n, -1)).view(n, c, h, w)


class _Normalizer:
    """uint8 -> float ``(x / 255 - mean) / std`` as one fused multiply-add."""

    def __init__(self, normalization: Normalization, channels: int, device: torch.device) -> None:
        if len(normalization.mean) != channels:
            raise DataError(f"normalization has {len(normalization.mean)} channels, the images have {channels}")
        std = torch.tensor(normalization.std, device=device).view(1, -1, 1, 1)
        mean = torch.tensor(normalization.mean, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.bias = -mean / std

    def __call__(self, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.bias, x.float(), self.scale)


class DeviceLoader:
    """Iterates ``(normalised float inputs, int64 labels)`` batches of a split kept on ``device``.

    Args:
        split: The data (uint8 images).
        batch_size: Batch size.
        normalization: Mean/std of the model.
        device: Where the split lives and batches are made.
        train: Shuffle and augment (random crop with pad 4, horizontal flip) every epoch.
        seed: Seed of shuffling and augmentation; each new iteration continues the same stream.
        drop_last: Drop the last incomplete batch.
        channels_last: Return channels_last tensors (faster convolutions on CUDA).
        pad: Crop padding used when ``train``.

    Raises:
        ConfigError: for a bad batch size. DataError: for an empty split.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        normalization: Normalization,
        *,
        device: str | torch.device = "cpu",
        train: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        pad: int = 4,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(split) == 0:
            raise DataError("cannot load batches from an empty split")
        self.device = torch.device(device)
        self.images = split.images.to(self.device, non_blocking=True)
        self.labels = split.labels.to(self.device, non_blocking=True)
        self.batch_size = batch_size
        self.train = train
        self.drop_last = drop_last and len(split) >= batch_size
        self.channels_last = channels_last
        self.pad = pad
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._normalize = _Normalizer(normalization, split.images.shape[1], self.device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, device=self.device, generator=self.generator) if self.train else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            if order is None:
                x, y = self.images[sl], self.labels[sl]
            else:
                idx = order[sl]
                x = augment_batch(self.images[idx], self.pad, self.generator)
                y = self.labels[idx]
            yield self._normalize(x, self.channels_last), y


def calibration_batches(split: Split, normalization: Normalization, n_batches: int, batch_size: int = 64, seed: int = 0,
                        device: str | torch.device = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A seeded random sample of un-augmented, normalised batches (for data-driven pruning criteria).

    Args:
        split: Usually the training split.
        normalization: Mean/std of the model.
        n_batches: Number of batches (fewer if the split is small).
        batch_size: Batch size.
        seed: Seed of the sample.
        device: Device of the returned tensors.

    Returns:
        A list of ``(inputs, labels)``.

    Raises:
        ConfigError: for non-positive counts. DataError: for an empty split.
    """
    if not isinstance(n_batches, int) or n_batches < 1:
        raise ConfigError(f"n_batches must be a positive integer, got {n_batches!r}")
    if len(split) == 0:
        raise DataError("cannot draw calibration batches from an empty split")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[: n_batches * batch_size]
    loader = DeviceLoader(Split(split.images[idx], split.labels[idx]), batch_size, normalization, device=device)
    return list(loader)
