"""Clip overlays (facelit.viz_video): frame strips for logging and overlay videos."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from facelit.viz import GT_COLOUR, PRED_COLOUR
from facelit.viz_video import _pick, batch_strips, clip_strip, overlay_frames, write_video

H = W = 16


def frames(t: int) -> torch.Tensor:
    return torch.full((t, 3, H, W), 0.5)


def test_strip_skips_padding_and_draws_points():
    t = 3
    pred = torch.tensor([[[8.5, 8.5]]]).expand(t, 1, 2)
    gt = torch.tensor([[[3.5, 3.5]]]).expand(t, 1, 2)
    strip = clip_strip(frames(t), pred, gt, mask=torch.tensor([True, True, False]))
    assert strip.shape == (H + 4, 2 * (W + 2) + 2, 3) and strip.dtype == np.uint8  # 2 valid frames, pad 2
    first = strip[2 : 2 + H, 2 : 2 + W]
    assert tuple(first[8, 8]) == PRED_COLOUR and tuple(first[3, 3]) == GT_COLOUR
    assert tuple(first[0, 15]) == (128, 128, 128)  # untouched background


def test_labels_thinning_and_batches():
    labelled = overlay_frames(frames(2), labels=["0.123", "0.456"])
    plain = overlay_frames(frames(2))
    assert (labelled != plain).any()
    assert _pick(10, None, 4) == [0, 3, 6, 9]
    assert _pick(5, torch.tensor([True, False, True, True, False]), None) == [0, 2, 3]
    batch = {
        "image": frames(3).expand(2, -1, -1, -1, -1),
        "landmarks": torch.full((2, 3, 7, 2), 4.0),
        "frame_mask": torch.ones(2, 3, dtype=torch.bool),
    }
    strips = batch_strips(batch, torch.full((2, 3, 7, 2), 9.0), frame_nme=torch.zeros(2, 3))
    row_h, row_w = H + 4, 3 * (W + 2) + 2  # one padded strip per clip, tiled with padding again
    assert strips.shape == (2 * (row_h + 2) + 2, row_w + 4, 3)


def test_bad_input():
    with pytest.raises(ValueError, match=r"pred must be \(T=2, K, 2\)"):
        overlay_frames(frames(2), pred=torch.zeros(3, 7, 2))
    with pytest.raises(ValueError, match="no valid frame"):
        overlay_frames(frames(2), mask=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="uint8 frames"):
        write_video("x.avi", np.zeros((2, 4, 4, 3), np.float32))


def test_write_video_roundtrip(tmp_path):
    strip = overlay_frames(frames(4), pred=torch.full((4, 7, 2), 8.0), scale=1)
    lossless = write_video(tmp_path / "a.avi", strip, codec="png")
    with av.open(str(lossless)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.array_equal(decoded, strip)
    odd = np.zeros((3, 15, 17, 3), np.uint8)
    with av.open(str(write_video(tmp_path / "b.mp4", odd))) as container:
        shapes = [f.to_ndarray(format="rgb24").shape for f in container.decode(video=0)]
    assert shapes == [(16, 18, 3)] * 3  # padded to even sizes for yuv420p
