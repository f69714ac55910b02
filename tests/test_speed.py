"""precision = auto measures the layout: the fastest candidate wins, bf16 only where native, cached, safe fallback."""

from __future__ import annotations

import json

import pytest
import torch

from hybridprune import speed
from hybridprune.models import create_model


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv(speed.CACHE_ENV, str(tmp_path / "speed.json"))
    monkeypatch.setattr(speed, "_MEMO", {})
    return tmp_path / "speed.json"


def _timer(times, calls):
    def timer(model, batch, classes, device, precision, channels_last, steps):
        calls.append((precision, channels_last))
        return times[(precision, channels_last)]
    return timer


def test_the_fastest_candidate_wins_and_is_cached(fresh):
    calls = []
    times = {("fp32", False): 10.0, ("fp32", True): 8.0, ("bf16", False): 9.0, ("bf16", True): 5.0}
    model = create_model("resnet20", num_classes=10)
    cpu = torch.device("cpu")
    layout = speed.fastest_layout(model, (8, 3, 32, 32), 10, cpu, bf16=False, timer=_timer(times, calls))
    assert calls == [("fp32", False), ("fp32", True)]  # no bf16 where it is not native
    assert (layout.precision, layout.channels_last, layout.source) == ("fp32", True, "measured")
    assert layout.name == "fp32+channels_last" and layout.step_ms == {"fp32": 10.0, "fp32+channels_last": 8.0}
    stored = json.loads(fresh.read_text())
    assert len(stored) == 1 and next(iter(stored.values()))["family"] == model.hp_model_name
    speed._MEMO.clear()  # a new process reads the file
    again = speed.fastest_layout(model, (8, 3, 32, 32), 10, cpu, bf16=False, timer=_timer(times, calls))
    assert again.source == "cache" and again.name == layout.name and len(calls) == 2
    calls.clear()
    best = speed.fastest_layout(model, (8, 3, 32, 32), 10, cpu, bf16=True, timer=_timer(times, calls))
    assert len(calls) == 4 and best.name == "bf16+channels_last"  # another key: bf16 is timed where native


def test_a_pruned_model_shares_its_familys_entry_and_a_failure_falls_back(fresh):
    from hybridprune.pruning import HybridConfig, prune_model

    calls = []
    times = {("fp32", False): 1.0, ("fp32", True): 2.0}
    base = create_model("resnet20", num_classes=10)
    pruned = prune_model(base, HybridConfig(channel_ratio=0.5, pruned_blocks=2, criterion="weight_magnitude"),
                         torch.zeros(1, 3, 32, 32)).model
    cpu = torch.device("cpu")
    speed.fastest_layout(base, (8, 3, 32, 32), 10, cpu, bf16=False, timer=_timer(times, calls))
    assert speed.fastest_layout(pruned, (8, 3, 32, 32), 10, cpu, bf16=False).name == "fp32" and len(calls) == 2

    def broken(*args):
        raise RuntimeError("no such kernel")

    layout = speed.fastest_layout(create_model("resnet32", num_classes=10), (8, 3, 32, 32), 10, cpu, bf16=False,
                                  timer=broken)
    assert (layout.name, layout.source) == ("fp32", "fallback")


def test_train_records_the_choice_and_a_forced_precision_measures_nothing(fresh, monkeypatch):
    from hybridprune.data import load_dataset
    from hybridprune.models import get_model_spec
    from hybridprune.recipe import Budget
    from hybridprune.training import train

    monkeypatch.setenv("HYBRIDPRUNE_AUTO_LAYOUT", "measure")
    data = load_dataset("digits", val_size=0.1)
    norm = get_model_spec("resnet20").normalization
    result = train(create_model("resnet20", num_classes=10), data.train, Budget(steps=2), norm, batch_size=16)
    assert result.layout["source"] == "measured" and result.layout["chosen"] in result.layout["step_ms"]
    assert result.precision == result.layout["chosen"].partition("+")[0]
    assert result.channels_last == result.layout["chosen"].endswith("+channels_last")
    forced = train(create_model("resnet20", num_classes=10), data.train, Budget(steps=2), norm, batch_size=16,
                   precision="fp32")
    assert forced.layout is None and forced.precision == "fp32" and not forced.channels_last
    monkeypatch.setenv("HYBRIDPRUNE_AUTO_LAYOUT", "flags")  # the flag rule: nothing timed, no cache entry
    ruled = train(create_model("resnet32", num_classes=10), data.train, Budget(steps=1), norm, batch_size=16)
    assert ruled.layout is None and len(json.loads(fresh.read_text())) == 1
