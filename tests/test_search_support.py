"""Shared helpers and fixtures of the search-service tests (tiny studies on a digits subset).

The fixtures here are imported by the other ``test_search*`` / ``test_select*`` /
``test_dashboard*`` / ``test_ray*`` / ``test_postgres*`` modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

TINY = """
[study]
name = "{name}"
trials = {trials}
seed = 0
run_dir = "{run_dir}"
heartbeat_interval = {heartbeat}
grace_period = {grace}
{study_extra}

[model]
name = "resnet20"
checkpoint = "{checkpoint}"

[data]
dataset = "digits"
train_subset = 128
val_subset = 64

[space]
channel_ratio = {{ low = 0.0, high = 0.5, step = 0.1 }}
pruned_blocks = {{ low = 0, high = 3 }}
criterion = ["weight_magnitude", "bn_scale"]

[finetune]
steps = 2
batch_size = 32

[latency]
backend = "{backend}"
options = {latency_options}

[constraints]
max_latency_ms = 1000.0

[sampler]
name = "random"
"""

FAST_LATENCY = "{ warmup_runs = 1, min_runs = 3, max_runs = 5, max_time_s = 0.2 }"


def write_checkpoint(path: Path) -> Path:
    """A ResNet-20 (10 classes) with seeded random weights, in hybridprune's format."""
    from hybridprune.checkpoints import save_checkpoint
    from hybridprune.models import Normalization, create_model

    torch.manual_seed(0)
    save_checkpoint(path, create_model("resnet20", num_classes=10), Normalization())
    return path


def write_study(directory: Path, name: str = "tiny", *, trials: int = 3, checkpoint: Path | None = None,
                backend: str = "onnxruntime", latency_options: str = FAST_LATENCY, study_extra: str = "",
                run_dir: str = "run", heartbeat: int = 1, grace: int = 3) -> Path:
    """Write a tiny study file into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint or write_checkpoint(directory / "base.pt")
    path = directory / f"{name}.toml"
    path.write_text(TINY.format(name=name, trials=trials, run_dir=run_dir, checkpoint=checkpoint.as_posix(),
                                backend=backend, latency_options=latency_options, study_extra=study_extra,
                                heartbeat=heartbeat, grace=grace))
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``hybridprune ARGS`` in a subprocess (a real process, as users run it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "hybridprune.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def load(path: Path):
    """(config, study) of a study file."""
    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.study import open_study

    cfg = load_cfg(str(path))
    return cfg, open_study(cfg, create=False)


_RUN: dict[Path, Path] = {}


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A tiny study (3 trials) run to the end once per test session through the CLI.

    Modules import this fixture, which makes one fixture per module; the memo keeps it one run.
    """
    from hybridprune.cli import main

    base = tmp_path_factory.getbasetemp()
    if base not in _RUN:
        path = write_study(tmp_path_factory.mktemp("tiny-study"), trials=3)
        assert main(["run", str(path), "--no-progress"]) == 0
        _RUN[base] = path
    return _RUN[base]
