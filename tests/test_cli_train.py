"""``hybridprune train`` / ``hybridprune evaluate`` end to end on digits (no download, small)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybridprune.checkpoints import load_checkpoint, save_checkpoint
from hybridprune.cli import main
from hybridprune.models import Normalization, create_model


def _common(tmp_path: Path) -> list[str]:
    return ["--dataset", "digits", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "models" / "base.pt"
    code = main(["train", "--model", "resnet20", *_common(tmp_path), "--steps", "3", "--batch-size", "32",
                 "--val-size", "100", "--lr", "0.05", "--precision", "fp32", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert (
        "trained resnet20 for 3 steps" in text and ", fp32" in text and "val:  top-1" in text and "test: top-1" in text
    )
    ck = load_checkpoint(out)
    assert ck.model_name == "resnet20" and ck.num_classes == 10
    assert (
        ck.metrics["train"]["steps"] == 3
        and ck.metrics["train"]["precision"] == "fp32"
        and ck.metrics["val"]["n"] == 100
        and ck.metrics["test"]["n"] == 360
    )

    code = main(
        ["evaluate", str(out), *_common(tmp_path), "--split", "val", "--val-size", "100", "--precision", "fp32"]
    )
    text = capsys.readouterr().out
    assert (
        code == 0
        and "digits val (fp32)" in text
        and f"top-1 {ck.metrics['val']['top1']:.2%}" in text
        and "on 100 images" in text
    )

    # Fine-tune from the checkpoint keeps its normalisation.
    out2 = tmp_path / "ft.pt"
    assert main(["train", "--checkpoint", str(out), *_common(tmp_path), "--steps", "2", "--batch-size", "32",
                 "--out", str(out2)]) == 0
    assert load_checkpoint(out2).normalization == ck.normalization


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "image_folder", "--data-dir", "{tmp}/absent"], "absent does not exist"),
        (["--dataset", "svhn"], "unknown dataset 'svhn'; choose one of: cifar10, cifar100, digits, image_folder"),
        (["--dataset", "digits", "--val-size", "2.5"], "val_size must be a fraction"),
        (["--dataset", "digits", "--epochs", "1", "--steps", "2"], "exactly one of epochs or steps"),
        (["--dataset", "digits", "--lr", "-1"], "--lr must be a number in (0, 10]"),
        (["--dataset", "digits", "--precision", "fp16"], "unknown precision 'fp16'; choose one of: auto, bf16, fp32"),
        (["--dataset", "digits", "--device", "gpu0"], "bad device 'gpu0'"),
    ],
)
def test_train_bad_input_exit_2_and_no_file(tmp_path, capsys, args, message):
    out = tmp_path / "base.pt"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--epochs" not in args:
        args += ["--steps", "1"]
    code = main(["train", "--model", "resnet20", "--cache-dir", str(tmp_path / "c"), "--out", str(out), *args])
    assert code == 2 and message in capsys.readouterr().err.replace("\n", "")
    assert not out.exists() and list(tmp_path.glob("*.pt*")) == []


def test_model_and_checkpoint_are_exclusive(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--steps", "1", "--out", str(tmp_path / "x.pt")]) == 2
    assert "exactly one of --model" in capsys.readouterr().err


def test_class_count_mismatch(tmp_path, capsys):
    ck = tmp_path / "five.pt"
    save_checkpoint(ck, create_model("resnet20", num_classes=5), Normalization())
    assert main(["evaluate", str(ck), *_common(tmp_path)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"checkpoint {ck} has 5 output classes but dataset 'digits' has 10" in err
    out = tmp_path / "ft.pt"
    assert main(["train", "--checkpoint", str(ck), *_common(tmp_path), "--steps", "1", "--out", str(out)]) == 2
    assert not out.exists()


def test_evaluate_bad_input(tmp_path, capsys):
    ck = tmp_path / "m.pt"
    save_checkpoint(ck, create_model("resnet20"), Normalization())
    assert main(["evaluate", str(ck), *_common(tmp_path), "--split", "train"]) == 2
    assert "--split must be test or val" in capsys.readouterr().err
    assert main(["evaluate", str(ck), *_common(tmp_path), "--precision", "int8"]) == 2
    assert "unknown precision 'int8'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.pt"), *_common(tmp_path)]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err.replace("\n", "")


def test_pretrained_resnet56_on_jpeg_test_subset(resnet56_th, cifar10_jpeg, tmp_path):
    """The public checkpoint keeps its ImageNet normalisation and classifies real JPEGs well."""
    from hybridprune.accuracy import evaluate
    from hybridprune.data import Split, load_dataset

    ck = load_checkpoint(resnet56_th)
    data = load_dataset("image_folder", cifar10_jpeg, val_size=0)  # default cache: decoded once per machine
    idx = torch.arange(0, len(data.test), 50)  # 200 images, 20 per class
    res = evaluate(ck.model, Split(data.test.images[idx], data.test.labels[idx]), ck.normalization)
    assert res.n == 200 and res.top1 > 0.7


def _train(tmp_path: Path, out: Path, *extra: str) -> int:
    return main(["train", *_common(tmp_path), "--steps", "3", "--batch-size", "32", "--out", str(out), *extra])


def test_same_seed_same_weights(tmp_path, capsys):
    """Issue 10: the initial weights are seeded too, so two runs of one command are bit-identical."""
    runs = []
    for i, seed in enumerate(("7", "7", "8")):
        out = tmp_path / f"run{i}.pt"
        assert _train(tmp_path, out, "--model", "resnet20", "--seed", seed) == 0, capsys.readouterr().err
        ck = load_checkpoint(out)
        runs.append((ck.model.state_dict(), ck.metrics["train"]["train_loss"], ck.metrics["val"]["loss"]))
    (a, a_train, a_val), (b, b_train, b_val), (c, _, c_val) = runs
    assert a_train == b_train and a_val == b_val and all(torch.equal(a[k], b[k]) for k in a)
    assert a_val != c_val and not torch.equal(a["conv1.weight"], c["conv1.weight"])


SPLIT3 = {"dataset": "digits", "val_size": 100, "seed": 3, "val_from": "train"}
SPLIT4 = {**SPLIT3, "seed": 4}


def test_checkpoint_keeps_its_split(tmp_path, capsys):
    """Issue 10: a fine-tune or evaluation of a checkpoint reuses its split unless told otherwise."""
    base = tmp_path / "base.pt"
    assert _train(tmp_path, base, "--model", "resnet20", "--val-size", "100", "--seed", "3") == 0
    assert load_checkpoint(base).metrics["split"] == SPLIT3
    capsys.readouterr()

    ft = tmp_path / "ft.pt"
    assert _train(tmp_path, ft, "--checkpoint", str(base)) == 0
    assert "warning" not in capsys.readouterr().err
    ck = load_checkpoint(ft)
    assert ck.metrics["split"] == SPLIT3 and ck.metrics["val"]["n"] == 100

    assert main(["evaluate", str(ft), *_common(tmp_path), "--split", "val"]) == 0
    assert "on 100 images" in capsys.readouterr().out

    # An explicit different value wins, with a warning.
    assert main(["evaluate", str(ft), *_common(tmp_path), "--split", "val", "--val-size", "0.25"]) == 0
    res = capsys.readouterr()
    assert "on 360 images" in res.out and "warning: --val-size 0.25 differs from the val_size 100" in res.err.replace(
        "\n", " "
    )
    ft2 = tmp_path / "ft2.pt"
    assert _train(tmp_path, ft2, "--checkpoint", str(base), "--seed", "4") == 0
    assert "warning: --seed 4 differs from the seed 3" in capsys.readouterr().err.replace("\n", " ")
    assert load_checkpoint(ft2).metrics["split"] == SPLIT4

    # A split recorded for another dataset does not apply; a malformed one is an error.
    other = tmp_path / "other.pt"
    save_checkpoint(
        other,
        create_model("resnet20"),
        Normalization(),
        metrics={"split": {"dataset": "cifar10", "val_size": 0.5, "seed": 1}},
    )
    assert main(["evaluate", str(other), *_common(tmp_path), "--split", "val"]) == 0
    assert "on 144 images" in capsys.readouterr().out  # the default 0.1 of the 1437 training images
    bad = tmp_path / "bad.pt"
    save_checkpoint(
        bad, create_model("resnet20"), Normalization(), metrics={"split": {"dataset": "digits", "val_size": "x"}}
    )
    assert main(["evaluate", str(bad), *_common(tmp_path)]) == 2
    assert "has a malformed metrics['split']" in capsys.readouterr().err.replace("\n", "")


def test_train_with_teacher(tmp_path, capsys):
    """--teacher distils: same seed, different weights than without it; a teacher of other normalisation is adapted."""
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_checkpoint(teacher, create_model("resnet20"), Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    plain, distilled = tmp_path / "plain.pt", tmp_path / "kd.pt"
    assert _train(tmp_path, plain, "--model", "resnet20") == 0
    assert _train(tmp_path, distilled, "--model", "resnet20", "--teacher", str(teacher)) == 0, capsys.readouterr().err
    a, b = load_checkpoint(plain), load_checkpoint(distilled)
    assert b.metrics["teacher"] == "teacher.pt" and "teacher" not in a.metrics
    assert not torch.equal(a.model.linear.weight, b.model.linear.weight)


def test_renormalized_teacher_sees_its_own_normalisation():
    from hybridprune.commands.train import _renormalized

    torch.manual_seed(0)
    net = create_model("resnet20").eval()
    cifar, imagenet = Normalization(), Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    raw = torch.rand(4, 3, 32, 32)
    as_student = (raw - torch.tensor(cifar.mean).view(1, 3, 1, 1)) / torch.tensor(cifar.std).view(1, 3, 1, 1)
    as_teacher = (raw - torch.tensor(imagenet.mean).view(1, 3, 1, 1)) / torch.tensor(imagenet.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(_renormalized(net, cifar, imagenet)(as_student), net(as_teacher), atol=1e-4)
    assert _renormalized(net, cifar, cifar) is net


@pytest.mark.parametrize("kind, message", [
    ("classes", "teacher {t} has 5 output classes but dataset 'digits' has 10"),
    ("size", "teacher {t} takes inputs of size [3, 16, 16] but dataset 'digits' has images of size [3, 32, 32]"),
    ("student", "teacher {t} takes inputs of size [3, 32, 32] but the student takes [3, 16, 16]"),
    ("garbage", "{t} is not a readable PyTorch checkpoint"),
    ("missing", "checkpoint {t} does not exist"),
])
def test_bad_teacher_exit_2_and_no_file(tmp_path, capsys, kind, message):
    t = tmp_path / "teacher.pt"
    student = ["--model", "resnet20"]
    if kind == "classes":
        save_checkpoint(t, create_model("resnet20", num_classes=5), Normalization())
    elif kind == "size":
        save_checkpoint(t, create_model("resnet20"), Normalization(), input_size=(3, 16, 16))
    elif kind == "student":
        save_checkpoint(t, create_model("resnet20"), Normalization())
        save_checkpoint(tmp_path / "small.pt", create_model("resnet20"), Normalization(), input_size=(3, 16, 16))
        student = ["--checkpoint", str(tmp_path / "small.pt")]
    elif kind == "garbage":
        t.write_bytes(b"not a checkpoint")
    out = tmp_path / "out.pt"
    assert _train(tmp_path, out, *student, "--teacher", str(t)) == 2
    assert message.format(t=t) in capsys.readouterr().err.replace("\n", "")
    assert not out.exists() and list(tmp_path.glob(".out.pt*")) == []
