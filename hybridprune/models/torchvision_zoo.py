"""torchvision architectures through the same registry; torchvision is imported only on use.

The registry's torchvision build may be a CUDA build that fails to import on CPU-only torch; the
lazy import turns that into a one-line error instead of breaking ``import hybridprune``.
"""

from __future__ import annotations

from hybridprune.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Normalization, register_model
from hybridprune.registry import lazy_import

TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small")


def _make(arch: str):
    def factory(num_classes: int = 1000, **kwargs):
        tv = lazy_import("torchvision.models", "torchvision", f"model {arch!r}")
        # weights=None: nothing is downloaded; pretrained weights come in through a checkpoint.
        return getattr(tv, arch)(weights=None, num_classes=num_classes, **kwargs)

    return factory


for _arch in TORCHVISION_MODELS:
    register_model(
        ModelSpec(
            name=_arch,
            factory=_make(_arch),
            family="torchvision",
            input_size=(3, 224, 224),
            normalization=Normalization(IMAGENET_MEAN, IMAGENET_STD),
        )
    )
