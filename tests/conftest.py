"""Shared test fixtures. Tests are for correctness only: nothing here depends on timing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import CIFAR10_JPEG, RESNET20_TH, RESNET56_TH, TRTEXEC_FIXTURES, write_study

# Two cores: one intra-op thread per test process keeps runs predictable and parallel-friendly.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _speed_cache(tmp_path_factory):
    """precision = auto measures layouts once per model family: keep that cache out of the user's home, and
    keep the suite's numbers independent of which layout a measurement would pick."""
    import os

    os.environ["HYBRIDPRUNE_SPEED_CACHE"] = str(tmp_path_factory.mktemp("speed") / "speed.json")
    # tests check correctness, never timing: auto keeps the flag rule unless a test measures on purpose
    os.environ["HYBRIDPRUNE_AUTO_LAYOUT"] = "flags"
    yield


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (the ../shared folder beside the checkout)")
    return path


@pytest.fixture
def resnet56_th() -> Path:
    """The public pretrained option-A ResNet-56 (CIFAR-10) checkpoint."""
    return _need(RESNET56_TH)


@pytest.fixture
def resnet20_th() -> Path:
    """The public pretrained option-A ResNet-20 (CIFAR-10) checkpoint."""
    return _need(RESNET20_TH)


@pytest.fixture
def cifar10_jpeg() -> Path:
    """All of CIFAR-10 as JPEG in train/<class>/ and test/<class>/ folders."""
    return _need(CIFAR10_JPEG)


@pytest.fixture
def trtexec_fixtures() -> Path:
    """Genuine trtexec outputs from Jetson devices."""
    return _need(TRTEXEC_FIXTURES)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A tiny study (3 trials, see ``helpers.write_study``) run to the end once per session via the CLI."""
    from hybridprune.cli import main

    path = write_study(tmp_path_factory.mktemp("tiny-study"), trials=3)
    assert main(["run", str(path), "--no-progress"]) == 0
    return path
