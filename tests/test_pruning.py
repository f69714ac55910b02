"""Hybrid pruning on ResNet-56: every criterion x order x scope, records, determinism, bad input."""

from __future__ import annotations

import io
import json
import warnings

import onnx
import pytest
import torch
import torch.nn as nn

from hybridprune.checkpoints import load_checkpoint, save_checkpoint
from hybridprune.errors import CheckpointError, ConfigError, UnknownNameError
from hybridprune.models import create_model
from hybridprune.models.blocks import removable_blocks, residual_blocks
from hybridprune.models.complexity import complexity
from hybridprune.models.registry import Normalization
from hybridprune.pruning import (
    ORDERS,
    SCOPES,
    HybridConfig,
    PruningRecord,
    apply_record,
    list_criteria,
    prune_model,
)

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def calib(n: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    model = create_model("resnet56")
    # Non-trivial BatchNorm statistics so that every criterion sees distinct channels.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.0)
                m.running_var.uniform_(0.5, 2.0)
    return model, complexity(model)


def _export_ok(model: nn.Module) -> None:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, X[:1], buf, dynamo=False, opset_version=13)
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("criterion", list_criteria())
def test_hybrid_matrix(base, tmp_path, criterion, order, scope):
    model, before = base
    ref = model(X)
    cfg = HybridConfig(0.3, 3, criterion, order=order, scope=scope, calib_batches=1)
    result = prune_model(model, cfg, X[:1], calib())
    assert torch.equal(model(X), ref), "the input model must not change"
    pruned = result.model.eval()
    y = pruned(X)
    assert y.shape == ref.shape and torch.isfinite(y).all()
    after = complexity(pruned)
    assert after.params < before.params and after.macs < before.macs
    assert len(result.removed_blocks) == 3
    _export_ok(pruned)
    record = json.loads(json.dumps(result.record.to_dict()))  # JSON-serialisable
    assert PruningRecord.from_dict(record).to_dict() == result.record.to_dict()
    path = save_checkpoint(tmp_path / "p.pt", pruned, Normalization(), record=record)
    loaded = load_checkpoint(path).model
    assert torch.allclose(loaded(X), y, atol=1e-5, rtol=0)
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in pruned.named_parameters()]


def test_zero_ratio_zero_blocks_is_identity(base):
    model, before = base
    result = prune_model(model, HybridConfig(0.0, 0, "weight_magnitude", scope="all"), X[:1])
    assert result.model is not model
    assert torch.equal(result.model(X), model(X))
    assert complexity(result.model) == before
    assert result.record.removed_blocks == [] and result.record.channels == {}


@pytest.mark.parametrize("k", [1, 7, 25])
def test_removing_k_blocks(base, k):
    model, _ = base
    result = prune_model(model, HybridConfig(0.0, k, "bn_scale"), X[:1])
    assert len(residual_blocks(result.model)) == 27 - k
    assert len(result.removed_blocks) == k
    mods = dict(result.model.named_modules())
    for name in result.removed_blocks:
        assert isinstance(mods[name], nn.Identity)
    assert set(result.removed_blocks) <= set(removable_blocks(model))
    assert result.model(X).shape == (4, 10)


def test_blocks_beyond_removable_count(base):
    model, _ = base
    with pytest.raises(ConfigError, match=r"allowed 0\.\.25"):
        prune_model(model, HybridConfig(0.1, 26, "weight_magnitude"), X[:1])


@pytest.mark.parametrize("criterion", ["bn_scale", "weight_magnitude"])
def test_stage_blocks_remove_the_lowest_scored_blocks_of_each_stage(base, criterion):
    model, _ = base
    glob = prune_model(model, HybridConfig(0.0, 6, criterion), X[:1])
    result = prune_model(model, HybridConfig(0.0, 6, criterion, stage_blocks=(1, 2, 3)), X[:1])
    removed = result.removed_blocks
    assert [sum(n.startswith(f"layer{i}.") for n in removed) for i in (1, 2, 3)] == [1, 2, 3]
    for i, k in ((1, 1), (2, 2), (3, 3)):  # within a stage: the k lowest mean scores
        stage = {n: s for n, s in glob.block_scores.items() if n.startswith(f"layer{i}.")}
        assert {n for n in removed if n.startswith(f"layer{i}.")} == set(sorted(stage, key=stage.get)[:k])
    assert result.record.config["stage_blocks"] == [1, 2, 3] and "stage_blocks" not in glob.record.config
    assert len(residual_blocks(result.model)) == 27 - 6 and result.model(X).shape == (4, 10)
    rebuilt = apply_record(create_model("resnet56"), result.record)
    assert [n for n, m in rebuilt.named_modules() if isinstance(m, nn.Identity) and n.count(".") == 1] == removed


@pytest.mark.parametrize("stage_blocks, match", [
    ((1, 2), r"3 stage\(s\).*allowed layer1: 0\.\.9, layer2: 0\.\.8, layer3: 0\.\.8"),
    ((0, 9, 0), r"layer2: 0\.\.8"),
])
def test_stage_blocks_that_do_not_fit_the_model_name_each_stage(base, stage_blocks, match):
    with pytest.raises(ConfigError, match=match):
        prune_model(base[0], HybridConfig(0.1, sum(stage_blocks), "weight_magnitude", stage_blocks=stage_blocks), X[:1])


def test_resnet56_removable_blocks():
    names = removable_blocks(create_model("resnet56"))
    assert len(names) == 25 and "layer2.0" not in names and "layer3.0" not in names and "layer1.0" in names


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channel_ratio": 1.0}, r"\[0, 1\)"),
        ({"channel_ratio": -0.1}, r"\[0, 1\)"),
        ({"pruned_blocks": -1}, ">= 0"),
        ({"order": "sideways"}, "channel_first, layer_first"),
        ({"scope": "some"}, "internal, all"),
        ({"allocation": "x"}, "uniform, global"),
        ({"round_to": 0}, ">= 1"),
        ({"criterion_options": {"q": 3}}, "allowed: p"),
        ({"criterion_options": {"p": 3}}, "1 or 2"),
        ({"stage_blocks": (1, 1)}, r"sum of stage_blocks \[1, 1\] \(2\); got 1"),
        ({"stage_blocks": (1, -1, 1)}, "stage_blocks entry must be an integer >= 0"),
        ({"stage_blocks": "1,0"}, "list of integers"),
    ],
)
def test_config_validation(kwargs, match):
    args = {"channel_ratio": 0.2, "pruned_blocks": 1, "criterion": "weight_magnitude", **kwargs}
    with pytest.raises(ConfigError, match=match):
        HybridConfig(**args)


def test_unknown_criterion_lists_choices():
    with pytest.raises(UnknownNameError, match="feature_map_rank.*taylor_weight"):
        HybridConfig(0.2, 1, "hrank2")


def test_data_driven_needs_calibration(base):
    with pytest.raises(ConfigError, match="needs calibration"):
        prune_model(base[0], HybridConfig(0.2, 0, "taylor_weight"), X[:1])


def test_deterministic_and_seeded(base):
    model, _ = base
    a = prune_model(model, HybridConfig(0.4, 2, "random", seed=3), X[:1]).record.to_dict()
    b = prune_model(model, HybridConfig(0.4, 2, "random", seed=3), X[:1]).record.to_dict()
    c = prune_model(model, HybridConfig(0.4, 2, "random", seed=4), X[:1]).record.to_dict()
    assert a == b and a["channels"] != c["channels"]
    t1 = prune_model(model, HybridConfig(0.3, 2, "taylor_feature_map", calib_batches=1), X[:1], calib())
    t2 = prune_model(model, HybridConfig(0.3, 2, "taylor_feature_map", calib_batches=1), X[:1], calib())
    assert t1.record.to_dict() == t2.record.to_dict()


def test_round_to_and_global_allocation(base):
    model, _ = base
    result = prune_model(model, HybridConfig(0.3, 0, "weight_magnitude", round_to=8), X[:1])
    widths = [m.out_channels for n, m in result.model.named_modules() if n.endswith("conv1") and "layer" in n]
    assert all(w % 8 == 0 for w in widths) and min(widths) < 64
    glob = prune_model(model, HybridConfig(0.3, 0, "bn_scale", allocation="global"), X[:1])
    uni = prune_model(model, HybridConfig(0.3, 0, "bn_scale", allocation="uniform"), X[:1])
    gw = [m.out_channels for n, m in glob.model.named_modules() if n.endswith(".conv1")]
    uw = [m.out_channels for n, m in uni.model.named_modules() if n.endswith(".conv1")]
    assert gw != uw
    total = sum(m.out_channels for n, m in model.named_modules() if n.endswith(".conv1"))
    assert sum(gw) == total - int(0.3 * total)


def test_scope_all_prunes_option_a_stream(base):
    model, _ = base
    result = prune_model(model, HybridConfig(0.5, 0, "weight_magnitude", scope="all"), X[:1])
    pruned = result.model
    assert pruned.conv1.out_channels == 8 and pruned.linear.in_features == 32
    sc = pruned.layer2[0].shortcut
    assert sc.out_channels == 16 and sc.in_channels == 8
    entry = result.record.channels["layer2.0.shortcut"]
    assert entry["positions"] == sc.positions.tolist() and entry["route"] == sc.route.tolist()
    assert pruned(X).shape == (4, 10)


def test_option_b_scope_all_roundtrip(tmp_path):
    model = create_model("resnet20", shortcut="B")
    result = prune_model(model, HybridConfig(0.4, 2, "bn_scale", scope="all", order="layer_first"), X[:1])
    assert result.model.layer2[0].shortcut[0].out_channels < 32
    path = save_checkpoint(tmp_path / "b.pt", result.model, Normalization(), record=result.record.to_dict())
    assert torch.allclose(load_checkpoint(path).model(X), result.model(X), atol=1e-5, rtol=0)


class UserNet(nn.Module):
    """A user model without residual blocks, with a depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 24, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("scope", SCOPES)
def test_generic_user_module(scope):
    torch.manual_seed(0)
    model = UserNet().eval()
    assert removable_blocks(model) == []
    with pytest.raises(ConfigError, match=r"allowed 0\.\.0"):
        prune_model(model, HybridConfig(0.3, 1, "weight_magnitude"), X[:1])
    result = prune_model(model, HybridConfig(0.5, 0, "taylor_weight", scope=scope, calib_batches=1), X[:1],
                         [(X, torch.tensor([0, 1, 2, 3]))])
    assert complexity(result.model).params < complexity(model).params
    assert result.model.head.out_features == 5
    rebuilt = apply_record(UserNet().eval(), result.record.to_dict())
    rebuilt.load_state_dict(result.model.state_dict(), strict=True)
    assert torch.allclose(rebuilt(X), result.model(X), atol=1e-6)


def test_record_that_does_not_fit(base, tmp_path):
    model, _ = base
    record = prune_model(model, HybridConfig(0.3, 2, "weight_magnitude", scope="all"), X[:1]).record.to_dict()
    with pytest.raises(CheckpointError, match="does not"):
        apply_record(create_model("resnet20"), record)
    bad = {**record, "channels": {"layer1.1.conv1": {"out": [0, 0, 99]}}}
    with pytest.raises(CheckpointError, match=r"increasing indices in \[0, 16\)"):
        apply_record(create_model("resnet56"), bad)
    with pytest.raises(CheckpointError, match="version"):
        apply_record(create_model("resnet56"), {"channels": {}})
    # A pruned checkpoint whose weights were swapped for the unpruned ones: shapes do not fit.
    path = save_checkpoint(tmp_path / "x.pt", model, Normalization(), record=record)
    with pytest.raises(CheckpointError, match="does not fit model resnet56"):
        load_checkpoint(path)


def test_criteria_differ_on_pretrained(resnet56_th):
    model = load_checkpoint(resnet56_th).model
    data = calib(2, seed=5)
    records = {
        c: prune_model(model, HybridConfig(0.3, 4, c, calib_batches=2), X[:1], data).record for c in list_criteria()
    }
    channels = [str(r.channels) for r in records.values()]
    assert len(set(channels)) == len(channels), "every criterion keeps its own channels"
    blocks = {tuple(r.removed_blocks) for r in records.values()}
    assert len(blocks) >= 4, blocks


@pytest.mark.parametrize("criterion", ["taylor_weight", "feature_map_rank", "random"])
def test_a_score_memo_gives_the_same_pruning_and_scores_the_unchanged_model_once(base, criterion, monkeypatch):
    from hybridprune.pruning import ScoreMemo
    from hybridprune.pruning.criteria.base import BaseCriterion

    model, _ = base
    passes = []
    real = BaseCriterion.score
    monkeypatch.setattr(BaseCriterion, "score", lambda self, m, layers, c=None: passes.append(len(layers))
                        or real(self, m, layers, c))
    memo = ScoreMemo()
    configs = [HybridConfig(0.3, 2, criterion, order=order, calib_batches=1, seed=3)
               for order in ORDERS] + [HybridConfig(0.3, 0, criterion, calib_batches=1, seed=3),
                                       HybridConfig(0.0, 2, criterion, calib_batches=1, seed=3),
                                       HybridConfig(0.0, 2, criterion, order="layer_first", calib_batches=1, seed=3)]
    for cfg in configs:
        passes.clear()
        plain = prune_model(model, cfg, X[:1], calib())
        fresh = len(passes)
        memoised = prune_model(model, cfg, X[:1], calib(), memo=memo)
        passes.clear()
        again = prune_model(model, cfg, X[:1], calib(), memo=memo)
        assert plain.record.to_dict() == memoised.record.to_dict() == again.record.to_dict(), cfg
        assert plain.block_scores == again.block_scores and plain.removed_channels == again.removed_channels
        for a, b in zip(plain.model.state_dict().values(), again.model.state_dict().values()):
            assert torch.equal(a, b)
        # the unpruned copy's scores come from the memo once it holds them; a second step, which scores
        # the changed model, always runs
        assert fresh in (1, 2) and len(passes) == fresh - 1, (cfg, fresh, passes)
    # a different criterion option, or other calibration batches, is never read from another's entry
    other = prune_model(model, HybridConfig(0.3, 0, criterion, calib_batches=1, seed=4), X[:1], calib(seed=1),
                        memo=memo)
    assert other.record.to_dict() == prune_model(model, HybridConfig(0.3, 0, criterion, calib_batches=1, seed=4),
                                                 X[:1], calib(seed=1)).record.to_dict()
