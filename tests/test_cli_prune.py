"""``hybridprune prune`` and ``hybridprune info`` through the real CLI entry point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hybridprune.checkpoints import load_checkpoint
from hybridprune.cli import main
from hybridprune.models.registry import IMAGENET_MEAN


@pytest.fixture
def image_folder(tmp_path, monkeypatch):
    """A tiny real image_folder tree (2 classes, 32x32 PNGs) for calibration."""
    monkeypatch.setenv("HYBRIDPRUNE_DATA_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for split, n in (("train", 10), ("test", 2)):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_prune_and_info(resnet20_th, tmp_path, capsys):
    out = tmp_path / "pruned.pt"
    code = main(
        [
            "prune",
            "--model",
            "resnet20",
            "--checkpoint",
            str(resnet20_th),
            "--ratio",
            "0.3",
            "--blocks",
            "2",
            "--criterion",
            "weight_magnitude",
            "--criterion-option",
            "p=2",
            "--scope",
            "all",
            "--round-to",
            "4",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert "parameters" in text and "MACs" in text and "removed blocks: layer" in text
    ck = load_checkpoint(out)
    assert ck.record["removed_blocks"] and ck.normalization.mean == IMAGENET_MEAN
    assert ck.record["config"]["criterion_options"] == {"p": 2}
    assert len(ck.record["removed_blocks"]) == 2 and all(b in text for b in ck.record["removed_blocks"])
    assert ck.metrics["params"] == sum(p.numel() for p in ck.model.parameters())
    assert ck.model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "resnet20" in info and "removed blocks" in info and f"{ck.metrics['params']:,}" in info
    assert main(["info", str(resnet20_th)]) == 0
    assert "not pruned" in capsys.readouterr().out


def test_data_driven_with_calib_dir(resnet20_th, image_folder, tmp_path, capsys):
    out = tmp_path / "t.pt"
    code = main(
        [
            "prune",
            "-c",
            str(resnet20_th),
            "--ratio",
            "0.2",
            "--blocks",
            "1",
            "--criterion",
            "taylor_feature_map",
            "--calib-dir",
            str(image_folder),
            "--calib-batches",
            "1",
            "--calib-batch-size",
            "8",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr()
    assert load_checkpoint(out).record["config"]["criterion"] == "taylor_feature_map"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratio", "1.0"], "channel_ratio must be a number in [0, 1)"),
        (["--blocks", "8"], "allowed 0..7"),
        (["--criterion", "magic"], "unknown criterion 'magic'; choose one of: bn_scale"),
        (["--criterion", "feature_map_rank"], "pass --calib-dir"),
        (["--order", "both"], "order must be one of channel_first, layer_first"),
        (["--model", "resnet99"], "unknown model 'resnet99'"),
        (["--model", "resnet56"], "does not fit model resnet56"),
        (["--criterion-option", "p=3"], "weight_magnitude option p must be 1 or 2"),
        (["--criterion-option", "p"], "KEY=VALUE"),
    ],
)
def test_bad_input_exit_2_no_output(resnet20_th, tmp_path, capsys, args, message):
    out = tmp_path / "never.pt"
    # The last --ratio wins, so the default 0.1 can be overridden by args.
    code = main(["prune", "-c", str(resnet20_th), "--ratio", "0.1", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    out = tmp_path / "o.pt"
    assert main(["prune", "-c", str(bad), "--ratio", "0.1", "--out", str(out)]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert not out.exists()
    assert main(["info", str(bad)]) == 2


def test_already_pruned_checkpoint_is_refused(resnet20_th, tmp_path, capsys):
    first = tmp_path / "a.pt"
    assert main(["prune", "-c", str(resnet20_th), "--ratio", "0.2", "--out", str(first)]) == 0
    assert main(["prune", "-c", str(first), "--ratio", "0.2", "--out", str(tmp_path / "b.pt")]) == 2
    assert "already pruned" in capsys.readouterr().err
    assert not (tmp_path / "b.pt").exists()


MALFORMED_CLI = [
    ({"model": {"name": "resnet20", "kwargs": {"num_classes": 10**9}}}, "num_classes must be an integer"),
    ({"input_size": "3x32x32"}, "input_size must be [C, H, W]"),
    ({"metrics": ["acc"]}, "metrics must be a dict"),
    ({"normalization": None}, "normalization must be"),
    ({"model": None}, "'model' must be a dict"),
]


@pytest.mark.parametrize("change, message", MALFORMED_CLI)
@pytest.mark.parametrize("command", ["info", "prune", "evaluate"])
def test_malformed_checkpoint_is_one_line_exit_2(tmp_path, capsys, command, change, message):
    from hybridprune.models import create_model

    model = create_model("resnet20")
    payload = {"format": "hybridprune/1", "model": {"name": "resnet20", "kwargs": dict(model.hp_model_kwargs)},
               "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "input_size": [3, 32, 32], "record": None,
               "state_dict": model.state_dict(), "metrics": {}, **change}
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    argv = {"info": ["info", str(bad)], "evaluate": ["evaluate", str(bad), "--dataset", "digits"],
            "prune": ["prune", "-c", str(bad), "--ratio", "0.2", "--out", str(tmp_path / "o.pt")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in " ".join(err.split()) and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_info_prints_file_text_literally(tmp_path, capsys):
    from hybridprune.checkpoints import save_checkpoint
    from hybridprune.models import Normalization, create_model

    path = save_checkpoint(
        tmp_path / "m.pt", create_model("resnet20"), Normalization(),
        metrics={"[/oops]": "[bold red]PWNED[/] [link=http://evil]x[/link]", "osc": "\x1b]8;;http://evil\x07click\x1b[2J",
                 "latency": {"median_ms": 1.25, "backend": "onnxruntime", "versions": {"onnxruntime": "1.17"}}},
    )
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[/oops]" in out and "[bold red]PWNED[/]" in out and "[link=http://evil]x[/link]" in out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]8;;http://evil\\x07click\\x1b[2J" in out
    # the latency record is one readable line, not a Python dict nor 30 lines of internals
    assert "{'median_ms'" not in out and "median 1.250 ms, onnxruntime" in out and "versions.onnxruntime" not in out
    assert "removable residual blocks: 7" in out and "layer3.2" in out


def test_info_needs_a_file_or_a_model(capsys):
    assert main(["info"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: give a checkpoint FILE and/or --model NAME (or --model path/to/file.py:callable)"


def test_info_of_a_registry_model_lists_its_removable_blocks(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["info", "--model", "resnet56"]) == 0
    out = capsys.readouterr().out
    assert "fresh model (no weights)" in out and "removable residual blocks: 25" in out
    assert "layer2.0 " not in out and "layer2.1 " in out and "853,018" in out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("command", ["info", "prune", "evaluate"])
def test_non_finite_weights_are_refused(tmp_path, capsys, command, value):
    from hybridprune.checkpoints import save_checkpoint
    from hybridprune.models import Normalization, create_model

    model = create_model("resnet20")
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = value
    bad = save_checkpoint(tmp_path / "bad.pt", model, Normalization())
    argv = {"info": ["info", str(bad)], "evaluate": ["evaluate", str(bad), "--dataset", "digits"],
            "prune": ["prune", "-c", str(bad), "--ratio", "0.2", "--out", str(tmp_path / "o.pt")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}: conv1.weight holds 1 NaN or infinite value(s) of 432; the model is broken " \
                  f"(a diverged training?)", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]
