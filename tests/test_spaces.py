"""Search spaces: one contract test per registered space, plus each space's own rules."""

from __future__ import annotations

import re
import subprocess
import sys

import optuna
import pytest

from hybridprune.errors import ConfigError, UnknownNameError
from hybridprune.pruning import HybridConfig, list_criteria
from hybridprune.spaces import SPACES, get_space, list_spaces

from helpers import REPO

CRITERIA = list_criteria()


def _space(kind, options=None, blocks=7):
    return get_space(kind, options or {}, removable_blocks=blocks, criteria=CRITERIA, fixed={"seed": 3})


@pytest.mark.parametrize("kind", list_spaces())
def test_space_contract(kind):
    """Every space: trials -> valid HybridConfigs within bounds; references fit the space."""
    space = _space(kind)
    assert space.name == kind and SPACES.get(kind) is type(space)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(25):
        trial = study.ask()
        config = space.suggest(trial)
        assert isinstance(config, HybridConfig)
        assert 0 <= config.pruned_blocks <= 7 and 0 <= config.channel_ratio < 1
        assert config.criterion in CRITERIA and config.seed == 3
        assert set(trial.params) == set(space.searched())
        assert space.to_config(trial.params) == config  # params alone rebuild the config (select, Ray)
        study.tell(trial, [0.5, 1.0])
    refs = space.reference_points()
    assert refs and all(set(r) <= set(space.searched()) for r in refs)
    base = space.to_config(refs[0])
    assert base.channel_ratio == 0 and base.pruned_blocks == 0  # the unpruned baseline comes first
    for r in refs:  # enqueued points are suggested back unchanged
        study.enqueue_trial(r)
        trial = study.ask()
        assert space.suggest_params(trial) == {**r, **{k: p.value for k, p in space.params.items() if k not in r}}
        study.tell(trial, [0.5, 1.0])
    desc = space.describe()
    assert desc["kind"] == kind and set(desc) == {"kind", *space.params}


@pytest.mark.parametrize("kind", list_spaces())
def test_space_rejects_unknown_keys(kind):
    with pytest.raises(ConfigError, match="unknown key.*allowed"):
        _space(kind, {"bogus": 1})


def test_unknown_space_kind_lists_the_kinds():
    with pytest.raises(UnknownNameError, match="compound, hybrid"):
        _space("grid")


def test_hybrid_fixed_values_are_not_searched():
    space = _space("hybrid", {"channel_ratio": 0.3, "order": ["layer_first"], "criterion": "bn_scale"})
    assert set(space.searched()) == {"pruned_blocks"}
    study = optuna.create_study()
    config = space.suggest(study.ask())
    assert (config.channel_ratio, config.order, config.criterion) == (0.3, "layer_first", "bn_scale")
    # the unpruned baseline is outside this space: only the paper points remain
    assert space.reference_points() == [{"pruned_blocks": 1}, {"pruned_blocks": 2}]


def test_hybrid_paper_references_cover_both_orders():
    refs = _space("hybrid").reference_points()
    assert {(r["channel_ratio"], r["pruned_blocks"], r["order"]) for r in refs[1:]} == {
        (0.3, 1, "channel_first"), (0.3, 1, "layer_first"), (0.3, 2, "channel_first"), (0.3, 2, "layer_first")}


@pytest.mark.parametrize("options,key", [
    ({"channel_ratio": {"low": 0.5, "high": 0.1}}, "space.channel_ratio"),
    ({"channel_ratio": {"low": 0.0, "high": 0.5, "step": 0}}, "space.channel_ratio.step"),
    ({"channel_ratio": {"low": 0.0}}, "space.channel_ratio"),
    ({"pruned_blocks": {"low": 0, "high": 9}}, "space.pruned_blocks.high"),
    ({"pruned_blocks": 1.5}, "space.pruned_blocks"),
    ({"criterion": []}, "space.criterion"),
    ({"criterion": ["bn_scale", "bn_scale"]}, "space.criterion"),
    ({"order": "sideways"}, "space.order"),
])
def test_hybrid_bad_bounds_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _space("hybrid", options)


def test_compound_scaling_shrinks_depth_and_width_together():
    space = _space("compound", {"alpha": 1.2, "beta": 1.1}, blocks=25)
    scaled = [space.scale(phi) for phi in (0, 1, 2, 3, 4)]
    assert scaled[0] == (0.0, 0)
    ratios, blocks = zip(*scaled)
    assert list(ratios) == sorted(ratios) and list(blocks) == sorted(blocks)
    assert ratios[1] == pytest.approx(1 - 1.1 ** -1, abs=1e-4)
    assert blocks[4] == round(25 * (1 - 1.2 ** -4))
    refs = space.reference_points()
    assert refs[0] == {"phi": 0.0, "criterion": CRITERIA[0]} or refs[0]["phi"] == 0.0
    paper = space.to_config(refs[1])
    assert abs(paper.channel_ratio - 0.3) < 0.03  # the paper's ~30% channels


@pytest.mark.parametrize("options,key", [({"alpha": 1.0}, "space.alpha"), ({"beta": "big"}, "space.beta"),
                                         ({"phi": {"low": 2, "high": 1}}, "space.phi")])
def test_compound_bad_options(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _space("compound", options)


def test_paper_grid_references_every_criterion_and_order():
    from hybridprune.pruning import list_criteria

    five = ["weight_magnitude", "bn_scale", "taylor_weight", "taylor_feature_map", "feature_map_rank"]
    assert set(five) <= set(list_criteria())
    space = get_space("hybrid", {"criterion": five, "references": "paper_grid"}, removable_blocks=25,
                      criteria=list_criteria())
    refs = space.labelled_references()
    assert [label for label, _ in refs] == ["baseline"] + ["paper"] * 20
    paper = {(p["criterion"], p["pruned_blocks"], p["order"]) for _, p in refs[1:]}
    assert len(paper) == 20 and all(p["channel_ratio"] == 0.3 for _, p in refs[1:])
    # the default stays the first criterion only
    default = get_space("hybrid", {"criterion": five}, removable_blocks=25, criteria=list_criteria())
    assert len(default.labelled_references()) == 5


def test_round_to_can_be_searched():
    import optuna

    from hybridprune.pruning import list_criteria

    space = get_space("hybrid", {"round_to": [1, 4, 8]}, removable_blocks=7, criteria=list_criteria())
    stages = get_space("hybrid_stages", {"round_to": [1, 4, 8]}, removable_blocks=7, criteria=list_criteria())
    assert {stages.suggest(optuna.create_study().ask()).round_to for _ in range(30)} <= {1, 4, 8}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {space.suggest(study.ask()).round_to for _ in range(30)}
    assert seen == {1, 4, 8}
    assert all(p["round_to"] == 1 for p in space.reference_points())


@pytest.mark.parametrize("options, fixed, message", [
    ({"references": "all"}, {}, "space.references must be one of"),
    ({"round_to": [1, 4]}, {"round_to": 8}, "keep one of them"),
    ({"round_to": [0, 4]}, {}, "space.round_to[0] must lie in [1, 64]"),
])
def test_bad_reference_and_round_to_options(options, fixed, message):
    from hybridprune.errors import ConfigError
    from hybridprune.pruning import list_criteria

    with pytest.raises(ConfigError, match=re.escape(message)):
        get_space("hybrid", options, removable_blocks=7, criteria=list_criteria(), fixed=fixed)


def _resnet56_stages():
    from hybridprune.models import create_model
    from hybridprune.models.blocks import removable_blocks
    from hybridprune.pruning.blocks import block_stages

    model = create_model("resnet56")
    return model, [len(s) for s in block_stages(removable_blocks(model))]


def test_hybrid_stages_space_searches_one_count_per_stage_and_prunes_there():
    import torch

    from hybridprune.pruning import prune_model

    model, sizes = _resnet56_stages()
    assert sizes == [9, 8, 8]
    space = get_space("hybrid_stages", {"blocks_stage3": {"low": 0, "high": 4}, "order": "channel_first"},
                      removable_blocks=25, criteria=CRITERIA, stage_sizes=sizes)
    assert list(space.searched()) == ["channel_ratio", "blocks_stage1", "blocks_stage2", "blocks_stage3", "criterion"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        config = space.suggest(study.ask())
        s1, s2, s3 = config.stage_blocks
        assert 0 <= s1 <= 9 and 0 <= s2 <= 8 and 0 <= s3 <= 4 and config.pruned_blocks == s1 + s2 + s3
        seen.add(s3)
    assert seen == set(range(5))
    config = space.to_config({"channel_ratio": 0.2, "blocks_stage1": 2, "blocks_stage2": 0, "blocks_stage3": 3,
                              "criterion": "bn_scale"})
    removed = prune_model(model, config, torch.randn(1, 3, 32, 32)).removed_blocks
    assert [sum(n.startswith(f"layer{i}.") for n in removed) for i in (1, 2, 3)] == [2, 0, 3]
    with pytest.raises(ConfigError, match=re.escape("hybrid_stages space parameters missing: ['blocks_stage1'")):
        space.to_config({"channel_ratio": 0.2, "criterion": "bn_scale"})
    (label, point), = space.labelled_references()
    base = space.to_config(point)
    assert label == "baseline" and (base.pruned_blocks, base.channel_ratio, base.stage_blocks) == (0, 0, (0, 0, 0))


@pytest.mark.parametrize("options, sizes, message", [
    ({"blocks_stage4": 1}, [9, 8, 8], re.escape("['blocks_stage4'] in [space]: the model has 3 stage(s)")),
    ({"blocks_stage2": {"low": 0, "high": 9}}, [9, 8, 8], re.escape("space.blocks_stage2.high must lie in [0, 8]")),
    ({"pruned_blocks": 3}, [9, 8, 8], "unknown key"),
    ({}, [9, 8, 7], re.escape("stage sizes [9, 8, 7] do not add up to the 25 removable blocks")),
])
def test_hybrid_stages_bad_options(options, sizes, message):
    with pytest.raises(ConfigError, match=message):
        get_space("hybrid_stages", options, removable_blocks=25, criteria=CRITERIA, stage_sizes=sizes)


@pytest.mark.parametrize("kind", list_spaces())
def test_warm_start_points_lie_in_the_space_once_each_and_are_suggested_back(kind):
    assert _space(kind).warm_start_points() == []  # off unless asked for
    space = _space(kind, {"warm_start": 6})
    points = space.warm_start_points()
    assert 1 <= len(points) <= 6 and all(set(p) <= set(space.searched()) for p in points)
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)
    configs = [space.to_config(p) for p in points]
    assert all(c.channel_ratio > 0 or c.pruned_blocks > 0 for c in configs)  # never the unpruned baseline
    study = optuna.create_study(directions=["maximize", "minimize"])
    for p in points:
        study.enqueue_trial(p)
        trial = study.ask()
        assert space.suggest_params(trial) == {**p, **{k: q.value for k, q in space.params.items() if k not in p}}
        study.tell(trial, [0.5, 1.0])
    assert space.describe()["warm_start"] == 6


def test_hybrid_warm_start_walks_both_axes_and_the_diagonal_from_the_middle_out():
    space = _space("hybrid", {"channel_ratio": {"low": 0.0, "high": 0.7, "step": 0.05}, "pruned_blocks":
                              {"low": 0, "high": 20}, "criterion": ["bn_scale", "taylor_weight"],
                              "order": ["layer_first", "channel_first"], "warm_start": 8}, blocks=25)
    got = [(p["channel_ratio"], p["pruned_blocks"], p["criterion"], p["order"]) for p in space.warm_start_points()]
    # the middle of each line (fraction 1/2), then 1/6, then 5/6; the criterion cycles point by point
    assert got == [(0.35, 0, "bn_scale", "layer_first"), (0.0, 10, "taylor_weight", "layer_first"),
                   (0.35, 10, "bn_scale", "layer_first"), (0.1, 0, "taylor_weight", "layer_first"),
                   (0.0, 3, "bn_scale", "layer_first"), (0.1, 3, "taylor_weight", "layer_first"),
                   (0.6, 0, "bn_scale", "layer_first"), (0.0, 17, "taylor_weight", "layer_first")]
    rounded = _space("hybrid", {"round_to": [1, 8, 4], "warm_start": 3}, blocks=25).warm_start_points()
    assert [p["round_to"] for p in rounded] == [8, 8, 8]  # the coarsest grid: round_to 1 ran slower than unpruned
    assert {p["round_to"] for p in _space("hybrid", {"round_to": {"low": 1, "high": 16}, "warm_start": 2},
                                          blocks=25).warm_start_points()} == {16}
    channel_only = _space("hybrid", {"channel_ratio": {"low": 0.0, "high": 0.7, "step": 0.05}, "pruned_blocks": 0,
                                     "criterion": "bn_scale", "warm_start": 4}, blocks=25)
    assert [p["channel_ratio"] for p in channel_only.warm_start_points()] == [0.25, 0.45, 0.1, 0.6]
    assert all("pruned_blocks" not in p for p in channel_only.warm_start_points())


def test_hybrid_stages_warm_start_removes_the_same_share_of_every_stage():
    _, sizes = _resnet56_stages()
    space = get_space("hybrid_stages", {"channel_ratio": 0.0, "blocks_stage1": {"low": 0, "high": 7},
                                        "blocks_stage2": {"low": 0, "high": 7}, "blocks_stage3": {"low": 0, "high": 6},
                                        "warm_start": 3}, removable_blocks=25, criteria=CRITERIA, stage_sizes=sizes)
    assert [space.to_config(p).stage_blocks for p in space.warm_start_points()] == [(4, 4, 3), (1, 1, 1), (6, 6, 5)]


@pytest.mark.parametrize("value", [-1, 1001, 2.5, "8", True])
def test_bad_warm_start_is_one_message_naming_the_range(value):
    with pytest.raises(ConfigError, match=re.escape("space.warm_start must be a whole number of points in [0, 1000]")):
        _space("hybrid", {"warm_start": value})


@pytest.mark.parametrize("flags, message", [
    (["--warm-start", "-1"], "error: --warm-start takes 0-1000 points, got -1"),
    (["--warm-start", "1001"], "error: --warm-start takes 0-1000 points, got 1001"),
    (["--floor", "1.5"], "error: --floor is an accuracy fraction in [0, 1), got 1.5"),
])
def test_the_search_benchmark_refuses_bad_flags_before_it_searches(tmp_path, flags, message):
    out = tmp_path / "runs.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "search.py"), *flags, "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not out.exists()  # nothing searched, nothing written
