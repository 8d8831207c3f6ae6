"""ONNX export of the dense RetinaFace outputs with dynamic batch, height and width.

The exported graph takes ``images`` (B, 3, H, W) float32 RGB in [0, 1] (normalisation is inside)
and returns ``cls`` (B, A, 2) logits, ``box`` (B, A, 4) and ``landmarks`` (B, A, 10) deltas (plus
``cls_2``/``box_2``/``landmarks_2`` for a cascade model), A depending on H and W. Anchors, decoding,
NMS and the mesh head stay in Python (``RetinaFace.anchors_for`` + ``detect``).

Exporter: torch >= 2.9 defaults to the dynamo (``torch.export``) exporter; this module uses it by
default with ``dynamic_shapes`` (``torch.export.Dim.DYNAMIC`` on batch, height and width), which
traces the ceil-mode feature sizes and the FPN's size-matched upsampling symbolically (checked with
onnxruntime on odd sizes). It builds opset 18 and down-converts when ``opset < 18`` (17 works for
this graph). Exporting mnet0.25 takes ~20 s on 2 CPU cores. ``dynamo=False`` selects the
deprecated TorchScript exporter (``dynamic_axes``; ~4 s), kept as a fallback. Deformable
convolutions (``deformable=True``) have no ONNX operator and cannot be exported.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["DenseOutputs", "export_onnx"]


class DenseOutputs(nn.Module):
    """Wraps a RetinaFace so that ``forward`` returns only its dense outputs, as a tuple (``names``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names: tuple[str, ...] = ("cls", "box", "landmarks") + (
            ("cls_2", "box_2", "landmarks_2") if getattr(model, "cascade", False) else ()
        )

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        return tuple(out[name] for name in self.names)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    opset: int = 17,
    example_size: tuple[int, int] = (64, 64),
    dynamo: bool = True,
) -> Path:
    """Export ``model`` (a ``RetinaFace``) in eval mode to ONNX.

    Args:
        model: the detector; it is put in eval mode (BatchNorm uses running statistics).
        path: output ``.onnx`` file (parent folders are created).
        opset: ONNX opset version.
        example_size: (H, W) of the example input used for tracing; the graph accepts any size.
        dynamo: True (default) uses the torch.export-based exporter; False the deprecated
            TorchScript exporter (``dynamic_axes``), kept as a fallback: it is ~5x faster to export
            but emits deprecation warnings and will disappear from torch.

    Returns:
        the written path.
    """
    if any(type(m).__name__ == "DeformConvBNAct" for m in model.modules()):
        raise ValueError(
            "deformable convolutions have no ONNX operator; export a model with deformable=False"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = DenseOutputs(model).eval()
    device = next(model.parameters()).device
    example = torch.rand(2, 3, *example_size, device=device)
    names = {"input_names": ["images"], "output_names": list(wrapper.names), "opset_version": opset}
    if dynamo:
        dyn = torch.export.Dim.DYNAMIC
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            dynamic_shapes={"images": {0: dyn, 2: dyn, 3: dyn}},
            external_data=False,
            optimize=True,
            verbose=False,
            **names,
        )
        program.save(str(path))
    else:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        axes.update({name: {0: "batch", 1: "anchors"} for name in wrapper.names})
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, dynamic_axes=axes, **names)
    return path
