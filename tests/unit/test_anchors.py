"""Anchors: paper and mnet presets (counts, sizes, centres), order shared with the dense heads."""

from __future__ import annotations

import math

import pytest
import torch

from facelit.geometry.anchors import (
    ANCHOR_PRESETS,
    AnchorConfig,
    feature_map_size,
    generate_anchors,
    get_anchor_config,
)
from facelit.nets.retinaface import DenseHead


def _generate(name: str, size: tuple[int, int], **kw):
    cfg = ANCHOR_PRESETS[name]
    return generate_anchors(size, cfg.strides, cfg.sizes, **kw)


def test_paper_preset_counts_and_sizes() -> None:
    anchors = _generate("paper", (640, 640))
    assert anchors.boxes.shape == (102_300, 4)
    assert ANCHOR_PRESETS["paper"].num_anchors((640, 640)) == 102_300
    p2 = 160 * 160 * 3
    assert p2 == 76_800 and p2 / 102_300 == pytest.approx(0.75, abs=1e-3)
    expected = [
        16,
        20.16,
        25.40,
        32,
        40.32,
        50.80,
        64,
        80.63,
        101.59,
        128,
        161.26,
        203.19,
        256,
        322.54,
        406.37,
    ]
    got = [s for level in ANCHOR_PRESETS["paper"].sizes for s in level]
    assert got == pytest.approx(expected, abs=0.01)
    # the first 76,800 anchors are P2's (sizes 16 .. 25.4), the last 300 are P6's
    assert anchors.scales[:p2].unique().tolist() == pytest.approx(expected[:3], abs=0.01)
    assert anchors.scales[p2:].min() > 30
    assert anchors.scales[-300:].min() == pytest.approx(256.0)
    wh = anchors.boxes[:, 2:] - anchors.boxes[:, :2]
    torch.testing.assert_close(wh[:, 0], wh[:, 1], atol=1e-4, rtol=0)  # aspect ratio 1
    torch.testing.assert_close(wh[:, 0], anchors.scales, atol=1e-4, rtol=0)


def test_mnet_preset_count() -> None:
    anchors = _generate("mnet", (640, 640))
    assert anchors.boxes.shape == (16_800, 4)
    assert anchors.scales.unique().tolist() == [16.0, 32.0, 64.0, 128.0, 256.0, 512.0]


def test_order_level_row_column_size_and_centres() -> None:
    h, w = 40, 56  # 56 / 16 is not an integer: ceil sizes
    cfg = ANCHOR_PRESETS["mnet"]
    anchors = generate_anchors((h, w), cfg.strides, cfg.sizes)
    start = 0
    for stride, sizes in zip(cfg.strides, cfg.sizes, strict=True):
        fh, fw = feature_map_size((h, w), stride)
        assert (fh, fw) == (math.ceil(h / stride), math.ceil(w / stride))
        n = len(sizes)
        level = anchors.boxes[start : start + fh * fw * n].view(fh, fw, n, 4)
        centres = (level[..., :2] + level[..., 2:]) / 2
        rows = (torch.arange(fh) + 0.5) * stride
        cols = (torch.arange(fw) + 0.5) * stride
        torch.testing.assert_close(centres[..., 0], cols.view(1, fw, 1).expand(fh, fw, n))
        torch.testing.assert_close(centres[..., 1], rows.view(fh, 1, 1).expand(fh, fw, n))
        side = level[..., 2] - level[..., 0]
        torch.testing.assert_close(side, torch.tensor(sizes).view(1, 1, n).expand(fh, fw, n))
        start += fh * fw * n
    assert start == anchors.boxes.shape[0]
    # first anchor: cell (0, 0) of stride 8, size 16, centred at (4, 4) in the pixel-area frame
    assert anchors.boxes[0].tolist() == [-4.0, -4.0, 12.0, 12.0]


def test_dense_head_flattening_matches_anchor_order() -> None:
    """A head whose 1x1 conv copies (cx, cy) maps and emits the anchor size reproduces the anchors."""
    h, w = 48, 40
    cfg = ANCHOR_PRESETS["paper"]
    anchors = generate_anchors((h, w), cfg.strides, cfg.sizes)
    head = DenseHead(2, cfg.sizes_per_level, 3)
    features = []
    with torch.no_grad():
        for conv, stride, sizes in zip(head.convs, cfg.strides, cfg.sizes, strict=True):
            fh, fw = feature_map_size((h, w), stride)
            cy = ((torch.arange(fh) + 0.5) * stride).view(fh, 1).expand(fh, fw)
            cx = ((torch.arange(fw) + 0.5) * stride).view(1, fw).expand(fh, fw)
            features.append(torch.stack((cx, cy))[None].repeat(2, 1, 1, 1))
            conv.weight.zero_()
            conv.bias.zero_()
            for k, size in enumerate(sizes):
                conv.weight[3 * k, 0] = 1.0
                conv.weight[3 * k + 1, 1] = 1.0
                conv.bias[3 * k + 2] = size
        out = head(features)
    centres = (anchors.boxes[:, :2] + anchors.boxes[:, 2:]) / 2
    assert out.shape == (2, anchors.boxes.shape[0], 3)
    torch.testing.assert_close(out[1, :, :2], centres)
    torch.testing.assert_close(out[1, :, 2], anchors.scales)


def test_dtype_device_and_config_helpers() -> None:
    anchors = _generate("mnet", (32, 32), dtype=torch.float64, device="cpu")
    assert anchors.boxes.dtype == torch.float64 and anchors.scales.dtype == torch.float64
    cfg = get_anchor_config("mnet")
    assert cfg.num_levels == 3 and cfg.sizes_per_level == (2, 2, 2)
    assert cfg.num_anchors((32, 32)) == anchors.boxes.shape[0] == 16 * 2 + 4 * 2 + 1 * 2


def test_bad_input() -> None:
    with pytest.raises(KeyError, match="known"):
        get_anchor_config("papr")
    with pytest.raises(ValueError, match="must match"):
        generate_anchors((64, 64), (8, 16), ((16.0,),))
    with pytest.raises(ValueError, match="positive"):
        AnchorConfig(strides=(8,), sizes=((0.0,),))
    with pytest.raises(ValueError, match="image_size"):
        generate_anchors((0, 64), (8,), ((16.0,),))
