"""ONNX export of (pruned) models: checker, static batch, opset, numerics against PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from hybridprune.checkpoints import load_checkpoint
from hybridprune.errors import ConfigError, LatencyError
from hybridprune.evaluators.export import export_onnx
from hybridprune.models import create_model

from helpers import pruned_resnet56


def _ort_run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_pretrained_resnet56_export_matches_pytorch(tmp_path, resnet56_th):
    model = load_checkpoint(resnet56_th).model.eval()
    path = export_onnx(model, tmp_path / "r56.onnx", (4, 3, 32, 32))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, 3, 32, 32]  # static batch
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(_ort_run(path, x), want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_pruned_model_exports_at_opset(tmp_path, opset):
    model = pruned_resnet56()
    path = export_onnx(model, tmp_path / "p.onnx", (1, 3, 32, 32), opset=opset)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(_ort_run(path, x), model(x).numpy(), rtol=1e-3, atol=1e-4)


def test_export_does_not_modify_model(tmp_path):
    model = create_model("resnet20", width=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _NotExportable(torch.nn.Module):
    def forward(self, x):
        return torch.from_numpy(x.numpy() * 2)  # leaves the traced graph


def test_export_errors_are_clear_and_leave_nothing(tmp_path):
    model = create_model("resnet20", width=4)
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=30)
    with pytest.raises(ConfigError, match="input_shape"):
        export_onnx(model, tmp_path / "a.onnx", (0, 3, 32, 32))
    with pytest.raises(LatencyError):
        export_onnx(_NotExportable(), tmp_path / "b.onnx", (1, 3, 4, 4))
    assert list(tmp_path.iterdir()) == []
