"""``hybridprune train`` / ``hybridprune evaluate`` end to end on digits (no download, small)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybridprune.cli import main
from hybridprune.models import Normalization, create_model, load_checkpoint, save_checkpoint


def _common(tmp_path: Path) -> list[str]:
    return ["--dataset", "digits", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "models" / "base.pt"
    code = main(["train", "--model", "resnet20", *_common(tmp_path), "--steps", "3", "--batch-size", "32",
                 "--val-size", "100", "--lr", "0.05", "--precision", "fp32", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "trained resnet20 for 3 steps" in text and ", fp32" in text and "val:  top-1" in text and "test: top-1" in text
    ck = load_checkpoint(out)
    assert ck.model_name == "resnet20" and ck.num_classes == 10
    assert ck.metrics["train"]["steps"] == 3 and ck.metrics["train"]["precision"] == "fp32" and ck.metrics["val"]["n"] == 100 and ck.metrics["test"]["n"] == 360

    code = main(["evaluate", str(out), *_common(tmp_path), "--split", "val", "--val-size", "100", "--precision", "fp32"])
    text = capsys.readouterr().out
    assert code == 0 and "digits val (fp32)" in text and f"top-1 {ck.metrics['val']['top1']:.2%}" in text and "on 100 images" in text

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
        (["--dataset", "digits", "--lr", "-1"], "lr > 0"),
        (["--dataset", "digits", "--precision", "fp16"], "unknown precision 'fp16'; choose one of: auto, bf16, fp32"),
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
    from hybridprune.data import Split, load_dataset
    from hybridprune.training import evaluate

    ck = load_checkpoint(resnet56_th)
    data = load_dataset("image_folder", cifar10_jpeg, val_size=0)  # default cache: decoded once per machine
    idx = torch.arange(0, len(data.test), 50)  # 200 images, 20 per class
    res = evaluate(ck.model, Split(data.test.images[idx], data.test.labels[idx]), ck.normalization)
    assert res.n == 200 and res.top1 > 0.7
