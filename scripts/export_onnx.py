"""Export the detector of a CLI-trained RetinaFace checkpoint to ONNX (dynamic batch and size).

    python scripts/export_onnx.py --ckpt logs/retinaface_demo/version_0/checkpoints/last.ckpt --out retinaface.onnx

Outputs ``cls`` (B, A, 2) logits, ``box`` (B, A, 4) and ``landmarks`` (B, A, 10) deltas in the anchor
order of ``facelit.geometry.anchors`` for the input size; decode with ``facelit.nets.retinaface.detect``.
When onnxruntime is installed the export is checked against the eager model on two input sizes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytorch_lightning as pl
import torch

import lightning_modules.retinaface  # noqa: F401  (makes the checkpoint's class trusted for loading)
from facelit.nets.export import export_onnx


def check_with_onnxruntime(net: torch.nn.Module, path: Path, sizes: list[tuple[int, int]]) -> float | None:
    """Largest absolute difference between onnxruntime and eager outputs, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    net.eval()
    for h, w in sizes:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            eager = net(x)
        outs = session.run(None, {"images": x.numpy()})
        for name, value in zip(("cls", "box", "landmarks"), outs):
            worst = max(worst, float((torch.from_numpy(value) - eager[name]).abs().max()))
    return worst


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--legacy-exporter", action="store_true", help="TorchScript exporter (faster, deprecated)")
    args = parser.parse_args(argv)
    if not args.ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {args.ckpt}")
    module = pl.LightningModule.load_from_checkpoint(args.ckpt, map_location="cpu")
    net = getattr(module, "net", None)
    if net is None or type(net).__name__ != "RetinaFace":
        raise ValueError(f"{args.ckpt} holds a {type(module).__name__}, not a RetinaFace module")
    path = export_onnx(net, args.out, opset=args.opset, dynamo=not args.legacy_exporter)
    report = {"onnx": str(path), "size_mb": round(path.stat().st_size / 1e6, 3),
              "max_abs_diff_vs_eager": check_with_onnxruntime(net, path, [(64, 64), (96, 128)])}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
