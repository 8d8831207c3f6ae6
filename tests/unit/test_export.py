"""ONNX export of RetinaFace (mnet0.25): dynamic batch/height/width, onnxruntime vs eager."""

from __future__ import annotations

import pytest
import torch

from facelit.nets import RetinaFace, export_onnx


@pytest.mark.slow  # the dynamo exporter needs ~20 s on 2 CPU cores
def test_onnx_export_dynamic_sizes_match_eager(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = RetinaFace().eval()
    path = export_onnx(model, tmp_path / "retinaface.onnx", opset=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["cls", "box", "landmarks"]
    for shape in [(1, 3, 64, 64), (2, 3, 96, 128)]:
        images = torch.rand(*shape)
        with torch.no_grad():
            eager = model(images)
        got = session.run(None, {"images": images.numpy()})
        for name, value in zip(("cls", "box", "landmarks"), got, strict=True):
            assert value.shape == tuple(eager[name].shape)
            torch.testing.assert_close(torch.from_numpy(value), eager[name], atol=1e-4, rtol=1e-4)


def test_deformable_model_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="deformable"):
        export_onnx(RetinaFace(fpn_channels=16, deformable=True), tmp_path / "x.onnx")
