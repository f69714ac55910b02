"""MemoTeacher: distilling through it trains exactly as distilling from the teacher itself."""

from __future__ import annotations

import copy

import pytest
import torch

from hybridprune.data import load_dataset
from hybridprune.devices import bf16_supported
from hybridprune.distill import MemoTeacher
from hybridprune.models import Normalization, create_model
from hybridprune.training import Budget, finetune

NORM = Normalization()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    data = load_dataset("digits", val_size=0.15, seed=0, cache_dir=tmp_path_factory.mktemp("cache"), image_size=16)
    return data.train.subset(320)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet20", num_classes=10)


def _distil(student: torch.nn.Module, teacher: torch.nn.Module, data, **kw) -> torch.nn.Module:
    finetune(student, data, Budget(steps=6), NORM, teacher=teacher, lr=0.05, batch_size=64, seed=5,
             distill_weight=0.7, evaluate_val=False, **kw)
    return student


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_memo_teacher_trains_bit_for_bit_like_the_teacher(digits, precision):
    if precision == "bf16" and not bf16_supported("cpu"):
        pytest.skip("this CPU has no native bf16")
    teacher = _model(0)
    memo = MemoTeacher(teacher)
    plain = _distil(_model(1), teacher, digits, precision=precision)
    first = _distil(_model(1), memo, digits, precision=precision)
    assert memo.misses == 6 and memo.hits == 0
    second = _distil(_model(2), memo, digits, precision=precision)  # another student, the same batches
    assert memo.hits == 6 and memo.misses == 6
    assert _equal(plain, first)
    assert _equal(_distil(_model(2), teacher, digits, precision=precision), second)


def test_other_batches_or_layouts_are_computed_afresh(digits):
    teacher = _model(0)
    memo = MemoTeacher(teacher)
    _distil(_model(1), memo, digits, precision="fp32")
    finetune(_model(1), digits, Budget(steps=6), NORM, teacher=memo, lr=0.05, batch_size=64, seed=6,
             evaluate_val=False, precision="fp32")  # another seed: other batches
    assert memo.hits == 0 and memo.misses == 12
    _distil(_model(1), memo, digits, precision="fp32", channels_last=True)  # same batches, another layout
    assert memo.hits == 0 and memo.misses == 18


def test_memo_teacher_is_a_frozen_copy_and_respects_its_limit(digits):
    teacher = _model(0)
    memo = MemoTeacher(teacher, max_bytes=2 * 64 * 10 * 4)  # two batches of fp32 logits
    with torch.no_grad():
        next(teacher.parameters()).add_(1.0)  # the original changes; the memo's copy does not
    before = copy.deepcopy(memo.teacher.state_dict())
    memo.train()
    assert not memo.training and not memo.teacher.training
    assert all(not p.requires_grad for p in memo.parameters())
    _distil(_model(1), memo, digits, precision="fp32")
    assert memo.held == 2 * 64 * 10 * 4 and len(memo._memo) == 2
    assert all(torch.equal(v, memo.teacher.state_dict()[k]) for k, v in before.items())
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(memo(x), _model(0).eval()(x))  # the copy was taken before the change
