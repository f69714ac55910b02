"""Honest evaluation: a baseline adapted to the data (cached, resumed, re-adapted on change) and the
warning for validation held out of a pretrained checkpoint's own training set."""

from __future__ import annotations

import pytest
import torch

from hybridprune.search.baseline import adapted_path
from hybridprune.search.config import load_study_config
from hybridprune.search.context import build_context
from hybridprune.search.split import split_warning

from helpers import write_study

ADAPT = "\n[baseline]\nadapt_epochs = 0.5\nadapt_lr = {lr}\nbatch_size = 32\nprecision = \"fp32\"\n"


def _study(tmp_path, lr=0.01, extra_data=""):
    path = write_study(tmp_path, name="adapt")
    text = path.read_text().replace('dataset = "digits"', 'dataset = "digits"' + extra_data)
    path.write_text(text + ADAPT.format(lr=lr))
    return path


def test_adapted_baseline_is_made_once_cached_and_made_again_when_its_settings_change(tmp_path, capsys):
    from hybridprune.checkpoints import load_checkpoint

    path = _study(tmp_path)
    cfg = load_study_config(path)
    original = load_checkpoint(cfg.model.checkpoint).model.state_dict()
    ctx = build_context(cfg)
    ctx.close()
    out = capsys.readouterr().out
    assert "adapting model.checkpoint to digits" in out and "adapted model.checkpoint: validation top-1" in out
    metrics = load_checkpoint(adapted_path(cfg)).metrics
    assert metrics["adapted_from"]["epochs"] == 0.5 and 0 <= metrics["test_top1"] <= 1
    assert ctx.baseline_metrics["val_top1"] == metrics["val_top1"]  # the adapted model is the baseline
    changed = [k for k, v in ctx.model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, original[k])]
    assert changed, "the baseline is the adapted model, not the checkpoint as it was"
    stamp = adapted_path(cfg).stat().st_mtime_ns

    ctx = build_context(load_study_config(path))  # a resume reuses the cache
    ctx.close()
    assert "adapting" not in capsys.readouterr().out and adapted_path(cfg).stat().st_mtime_ns == stamp

    path = _study(tmp_path, lr=0.02)  # another recipe: adapted again, not a stale cache
    ctx = build_context(load_study_config(path))
    ctx.close()
    assert "adapting model.checkpoint" in capsys.readouterr().out
    assert load_checkpoint(adapted_path(cfg)).metrics["adapted_from"]["lr"] == 0.02


def test_a_train_subset_adapts_into_its_own_file_and_keeps_the_other_model(tmp_path, capsys):
    import dataclasses

    path = _study(tmp_path)
    first = load_study_config(path)  # the tiny study adapts on train_subset = 128
    assert adapted_path(first) == first.cache_dir / "adapted-train128.pt"
    whole = dataclasses.replace(first, data=dataclasses.replace(first.data, train_subset=None))
    assert adapted_path(whole) == first.cache_dir / "adapted.pt"
    build_context(first).close()
    stamp = adapted_path(first).stat().st_mtime_ns
    other = path.with_name("adapt64.toml")  # the same checkpoint and cache folder, 64 train images
    other.write_text(path.read_text().replace("train_subset = 128", "train_subset = 64")
                     .replace('name = "adapt"', 'name = "adapt64"'))
    subset = load_study_config(other)
    build_context(subset).close()
    assert "adapting model.checkpoint" in capsys.readouterr().out and adapted_path(subset).is_file()
    build_context(load_study_config(path)).close()  # the first again: its own file is still there
    assert "adapting" not in capsys.readouterr().out and adapted_path(first).stat().st_mtime_ns == stamp


def test_read_only_use_never_adapts(tmp_path):
    from hybridprune.errors import ConfigError

    cfg = load_study_config(_study(tmp_path))
    with pytest.raises(ConfigError, match="adapted baseline .* is missing"):
        build_context(cfg, train_if_missing=False)
    assert not adapted_path(cfg).exists()


def test_validation_from_a_pretrained_checkpoints_training_set_is_warned_about(tmp_path):
    cfg = load_study_config(write_study(tmp_path / "a", name="warned"))
    warning = split_warning(cfg)
    assert warning.startswith("warning:") and 'val_from = "test"' in warning and "\n" not in warning
    honest = write_study(tmp_path / "b", name="honest")
    honest.write_text(honest.read_text().replace('dataset = "digits"', 'dataset = "digits"\nval_from = "test"\n'
                                                                         'val_size = 0.5'))
    assert split_warning(load_study_config(honest)) is None


def test_studies_sharing_a_cache_folder_train_their_baseline_once(tmp_path, capsys):
    """[baseline] cache_dir: a hybrid study and its single-mode twin share the trained (or adapted)
    baseline; a study that trains differently (another seed) does not take it, it trains its own."""
    from hybridprune.search.baseline import load_baseline
    from hybridprune.search.context import load_data

    def study(name, seed=0):
        path = tmp_path / f"{name}.toml"
        path.write_text(f'[study]\nname = "{name}"\nseed = {seed}\nrun_dir = "run-{name}"\n[model]\nname = "resnet8"\n'
                        '[baseline]\nsteps = 2\ncache_dir = "models"\n[data]\ndataset = "digits"\n')
        return load_study_config(path)

    first, twin, other = study("hybrid"), study("block"), study("reseeded", seed=1)
    assert first.baseline_path == twin.baseline_path == tmp_path / "models" / "baseline.pt"
    a, _, _ = load_baseline(first, load_data(first))
    assert capsys.readouterr().out.count("training the unpruned baseline") == 1
    b, _, _ = load_baseline(twin, load_data(twin))
    assert "training the unpruned baseline" not in capsys.readouterr().out
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    load_baseline(other, load_data(other))
    assert capsys.readouterr().out.count("training the unpruned baseline") == 1  # not the other seed's model
    assert not (tmp_path / "run-hybrid").exists()  # nothing of the cache in a run folder
