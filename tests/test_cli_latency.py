"""``hybridprune latency`` and ``hybridprune agent serve``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hybridprune.checkpoints import save_checkpoint
from hybridprune.cli import main
from hybridprune.evaluators.export import export_onnx
from hybridprune.models import create_model, get_model_spec

FAST = ["--max-time", "0.3", "--rel-ci", "0.05"]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return export_onnx(create_model("resnet20", width=4), tmp_path_factory.mktemp("cli") / "m.onnx")


def test_latency_of_onnx_file(onnx_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["latency", str(onnx_file), "--threads", "1", "--json", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "median (ms)" in printed and "p99 (ms)" in printed and "onnxruntime" in printed
    result = json.loads(out.read_text())
    assert result["backend"] == "onnxruntime" and result["extra"]["threads"] == 1 and result["runs"] >= 1


def test_latency_of_checkpoint_with_torch(tmp_path, capsys):
    path = tmp_path / "c.pt"
    save_checkpoint(path, create_model("resnet20", width=4), get_model_spec("resnet20").normalization,
                    model_name="resnet20", model_kwargs={"width": 4})
    assert main(["latency", str(path), "--backend", "torch", "--batch", "2", "--threads", "1", *FAST]) == 0
    assert "batch 2" in capsys.readouterr().out


def test_latency_of_classic_checkpoint(resnet20_th, capsys):
    assert main(["latency", str(resnet20_th), *FAST]) == 0
    assert "median (ms)" in capsys.readouterr().out


def test_latency_remote_via_agent_serve(onnx_file, capsys):
    proc = subprocess.Popen([sys.executable, "-m", "hybridprune.cli", "agent", "serve", "--port", "0",
                             "--backend", "onnxruntime", "--token", "tok"], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        assert main(["latency", str(onnx_file), "--backend", "remote", "--url", url, "--token", "tok", *FAST]) == 0
        assert "remote:onnxruntime" in capsys.readouterr().out
        assert main(["latency", str(onnx_file), "--backend", "remote", "--url", url, "--token", "bad", *FAST]) == 2
        assert "401" in capsys.readouterr().err
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "nope"], "unknown latency backend 'nope'"),
        (["--backend", "remote"], "--backend remote needs --url"),
        (["--url", "http://x:1"], "only used with --backend remote"),
        (["--backend", "tensorrt"], "latency backend needs tensorrt"),
        (["--batch", "0"], "batch size"),
        (["--precision", "fp16"], "precision"),
        (["--input-size", "3,32"], "--input-size"),
        (["--device", "cuda"], "--device is only used with --backend torch"),
        (["--threads", "2", "--backend", "remote", "--url", "http://127.0.0.1:1"],
         "--threads is only used with --backend onnxruntime or torch"),
        (["--backend", "torch"], "measures a PyTorch model, not an ONNX file"),
    ],
)
def test_bad_flags_exit_2(onnx_file, capsys, args, message):
    assert main(["latency", str(onnx_file), *args, *FAST]) == 2
    assert message in capsys.readouterr().err


def test_missing_model_exit_2(tmp_path, capsys):
    assert main(["latency", str(tmp_path / "none.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_latency_of_pruned_checkpoint(tmp_path, capsys):
    import torch

    from hybridprune.pruning import HybridConfig, prune_model

    base = create_model("resnet20").eval()
    pruned = prune_model(base, HybridConfig(channel_ratio=0.5, pruned_blocks=2, criterion="weight_magnitude"),
                         torch.randn(1, 3, 32, 32))
    path = save_checkpoint(tmp_path / "pruned.pt", pruned.model, get_model_spec("resnet20").normalization,
                           model_name="resnet20", model_kwargs={}, record=pruned.record.to_dict())
    out = tmp_path / "r.json"
    assert main(["latency", str(path), "--json", str(out), *FAST]) == 0
    assert json.loads(out.read_text())["extra"]["input_shapes"] == {"input": [1, 3, 32, 32]}


def test_agent_serve_rejects_bad_backend(capsys):
    assert main(["agent", "serve", "--backend", "tflite", "--port", "0"]) == 2
    assert "--backend must be auto, trtexec or onnxruntime" in capsys.readouterr().err


def test_latency_prints_file_names_literally(tmp_path, capsys):
    """A file name with Rich markup and an escape sequence is shown as text, not interpreted."""
    import torch

    from hybridprune.cli import main
    from hybridprune.evaluators import export_onnx
    from hybridprune.models import create_model

    torch.manual_seed(0)
    name = tmp_path / "[bold]x\x1b[31m.onnx"
    export_onnx(create_model("resnet20", num_classes=10), name, (1, 3, 32, 32), check=False)
    assert main(["latency", str(name), "--max-time", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "[bold]x" in out and "\x1b[31m" not in out and "\\x1b" in out
