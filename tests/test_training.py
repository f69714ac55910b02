"""Training loop: learns, is deterministic, stops on divergence, evaluates top-1/top-5."""

from __future__ import annotations

import copy
import math
import platform
from pathlib import Path

import pytest
import torch

from hybridprune.accuracy import evaluate
from hybridprune.data import DataSplits, Split, load_dataset
from hybridprune.devices import bf16_supported, resolve_precision
from hybridprune.errors import ConfigError, DataError, TrainingDiverged
from hybridprune.models import Normalization, create_model
from hybridprune.training import Budget, finetune, train

NORM = Normalization()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> DataSplits:
    # 16x16 keeps the tests fast; the CIFAR ResNets pool adaptively.
    return load_dataset("digits", val_size=0.15, seed=0, cache_dir=tmp_path_factory.mktemp("cache"), image_size=16)


def _model(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet20", num_classes=num_classes)


def test_budget_validation():
    assert Budget(epochs=0.5).total_steps(10) == 5 and Budget(steps=7).total_steps(10) == 7
    for bad in (dict(), dict(epochs=1, steps=2), dict(epochs=0), dict(steps=0), dict(steps=1.5), dict(epochs=math.nan)):
        with pytest.raises(ConfigError):
            Budget(**bad)


@pytest.fixture(scope="module")
def trained(digits):
    model = _model()
    before = evaluate(model, digits.val, NORM)
    steps = []
    result = train(model, digits, Budget(steps=40), NORM, lr=0.05, batch_size=64, progress=steps.append)
    return model, before, result, steps


def test_short_training_raises_accuracy(digits, trained):
    model, before, result, steps = trained
    assert result.steps == 40 and len(steps) == 40 and steps[-1].step == 40
    assert result.val is not None and result.val.n == len(digits.val)
    assert before.top1 < 0.3 and result.val.top1 > 0.5, (before, result.val)
    assert result.val.top5 is None and result.images_per_second > 0
    assert not model.training
    assert result.precision == resolve_precision("auto", "cpu") and result.to_dict()["precision"] == result.precision
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never touches the weights


def test_resolve_precision():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") == ("bf16" if bf16_supported("cpu") else "fp32")
    # meta tensors have no native bf16: auto falls back, an explicit bf16 is refused.
    assert resolve_precision("auto", "meta") == "fp32"
    with pytest.raises(ConfigError, match="precision bf16 needs native bf16 on meta"):
        resolve_precision("bf16", "meta")
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; choose one of: auto, bf16, fp32"):
        resolve_precision("fp16", "cpu")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").is_file(),
                    reason="checks against the x86 CPU flags Linux reports")
def test_bf16_means_native_bf16_instructions():
    flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("flags"))
    assert bf16_supported("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no native bf16")
def test_bf16_training_and_evaluation_agree_with_fp32(digits, trained):
    model = trained[0]
    fp32, bf16 = (evaluate(model, digits.val, NORM, precision=p) for p in ("fp32", "bf16"))
    assert fp32.n == bf16.n and abs(fp32.top1 - bf16.top1) <= 0.03 and bf16.loss == pytest.approx(fp32.loss, rel=0.05)
    runs = {}
    for precision in ("fp32", "bf16"):
        net = _model()
        runs[precision] = train(net, digits, Budget(steps=40), NORM, lr=0.05, batch_size=64, precision=precision)
    assert runs["fp32"].precision == "fp32" and runs["bf16"].precision == "bf16"
    assert runs["bf16"].val.top1 > 0.5 and abs(runs["bf16"].val.top1 - runs["fp32"].val.top1) < 0.15, runs


def _agreement(a: torch.nn.Module, b: torch.nn.Module, split: Split) -> float:
    x = (split.images.float() / 255 - torch.tensor(NORM.mean).view(1, 3, 1, 1)) / torch.tensor(NORM.std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        return (a.eval()(x).argmax(1) == b.eval()(x).argmax(1)).float().mean().item()


def test_finetune_with_teacher_distils(digits, trained):
    teacher = trained[0]
    student = _model(seed=1)
    before = _agreement(student, teacher, digits.val)
    # distill_weight=1: the labels play no part, whatever is learnt comes from the teacher.
    res = finetune(student, digits.train, Budget(steps=40), NORM, teacher=teacher, lr=0.05, batch_size=64,
                   temperature=2.0, distill_weight=1.0)
    after = _agreement(student, teacher, digits.val)
    assert res.val is None and after > max(0.4, before + 0.25), (before, after)


def test_same_seed_same_numbers(digits):
    small = DataSplits("digits", digits.train.subset(256), digits.val.subset(64), digits.test, digits.class_names)
    runs = []
    for seed in (3, 3, 4):
        model = _model()
        losses = []
        res = train(
            model, small, Budget(steps=4), NORM, batch_size=32, seed=seed, progress=lambda s: losses.append(s.loss)
        )
        runs.append((losses, res.val.loss, model.linear.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1] and torch.equal(runs[0][2], runs[1][2])
    assert runs[0][0] != runs[2][0]


def test_nan_loss_raises_at_once(digits):
    model = _model()
    with torch.no_grad():
        model.linear.weight.fill_(math.nan)
    steps = []
    with pytest.raises(TrainingDiverged, match="loss became nan at step 1 of 50"):
        train(model, digits.train, Budget(steps=50), NORM, batch_size=16, progress=steps.append)
    assert steps == []


def test_exploding_lr_diverges(digits):
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train(_model(), digits.train, Budget(steps=30), NORM, lr=1e12, batch_size=16, warmup=0.0, schedule="constant")


def test_class_count_mismatch_is_an_error(digits):
    with pytest.raises(DataError, match="model outputs 5 classes but the dataset has 10"):
        train(_model(num_classes=5), digits, Budget(steps=1), NORM, batch_size=8)
    with pytest.raises(DataError, match="label 9 but the model outputs only 5 classes"):
        evaluate(_model(num_classes=5), digits.val, NORM)


def test_evaluate_top5_for_many_classes():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(40) % 20)
    model = _model(num_classes=20)
    res = evaluate(model, split, NORM, batch_size=16)
    assert res.n == 40 and res.top5 is not None and res.top5 >= res.top1 and res.loss > 0
    # Against a direct computation.
    x = (split.images.float() / 255 - torch.tensor(NORM.mean).view(1, 3, 1, 1)) / torch.tensor(NORM.std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        logits = model.eval()(x)
    assert res.top1 == pytest.approx((logits.argmax(1) == split.labels).float().mean().item())
    assert res.top5 == pytest.approx((logits.topk(5, 1).indices == split.labels[:, None]).any(1).float().mean().item())


def test_bad_hyperparameters(digits):
    with pytest.raises(ConfigError, match="unknown schedule 'step'"):
        train(_model(), digits, Budget(steps=1), NORM, schedule="step")
    with pytest.raises(ConfigError, match="lr > 0"):
        train(_model(), digits, Budget(steps=1), NORM, lr=-1.0)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        train(_model(), digits, Budget(steps=1), NORM, batch_size=0)


def test_train_leaves_teacher_untouched(digits):
    teacher = _model()
    snapshot = copy.deepcopy(teacher.state_dict())
    finetune(_model(seed=2), digits.train.subset(64), Budget(steps=2), NORM, teacher=teacher, batch_size=32)
    assert all(torch.equal(v, snapshot[k]) for k, v in teacher.state_dict().items())


def test_weights_come_back_contiguous(digits):
    """bf16 runs channels_last inside; pruning and export get ordinary tensors back."""
    model, teacher = _model(), _model(seed=3)
    finetune(model, digits.train.subset(64), Budget(steps=1), NORM, teacher=teacher, batch_size=32, channels_last=True)
    evaluate(model, digits.val, NORM, channels_last=True)
    assert all(p.is_contiguous() for p in [*model.parameters(), *teacher.parameters()])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none(digits):
    with pytest.raises(ConfigError, match="device 'cuda' asked for, but this torch build or machine has no CUDA"):
        evaluate(_model(), digits.val, NORM, device="cuda")


def test_train_takes_a_recipe_and_changes_to_it(digits):
    import dataclasses

    from hybridprune.recipe import FINETUNE, FROM_SCRATCH, TrainRecipe

    assert FROM_SCRATCH == TrainRecipe() and (FINETUNE.lr, FINETUNE.schedule, FINETUNE.warmup) == (0.01, "cosine", 0.0)
    recipe = TrainRecipe(lr=0.05, batch_size=32, momentum=0.8, weight_decay=0.0, label_smoothing=0.0,
                         schedule="constant", warmup=0.0, precision="fp32")
    a, b = _model(), _model()
    b.load_state_dict(a.state_dict())
    ra = train(a, digits.train, Budget(steps=3), NORM, recipe, seed=1)
    rb = train(b, digits.train, Budget(steps=3), NORM, dataclasses.replace(recipe, lr=0.5), seed=1, lr=0.05)
    assert ra.train_loss == rb.train_loss  # a change given as a keyword wins over the recipe's field
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(TypeError, match=r"unknown training setting\(s\) \['momentun'\]; a TrainRecipe has"):
        train(_model(), digits.train, Budget(steps=1), NORM, momentun=0.5)
    with pytest.raises(ConfigError, match="0 <= warmup < 1"):
        train(_model(), digits.train, Budget(steps=1), NORM, TrainRecipe(warmup=1.5))
