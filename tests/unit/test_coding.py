"""Box, landmark and mesh coding: closed-form values and exact round trips (float32 and float64)."""

from __future__ import annotations

import math

import pytest
import torch

from facelit.geometry.coding import (
    BOX_VARIANCES,
    LOG_WH_CLAMP,
    decode_boxes,
    decode_landmarks,
    decode_mesh,
    encode_boxes,
    encode_landmarks,
    encode_mesh,
)


def _random_boxes(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 600
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 200 + 8  # size ratios < exp(LOG_WH_CLAMP)
    return torch.cat((xy, xy + wh), dim=-1)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-3), (torch.float64, 1e-9)])
def test_round_trips(dtype: torch.dtype, tol: float) -> None:
    boxes, anchors = _random_boxes(500, dtype, 0), _random_boxes(500, dtype, 1)
    deltas = encode_boxes(boxes, anchors)
    assert deltas.dtype == dtype
    torch.testing.assert_close(decode_boxes(deltas, anchors), boxes, atol=tol, rtol=0)
    points = torch.rand(500, 5, 2, dtype=dtype, generator=torch.Generator().manual_seed(2)) * 640
    torch.testing.assert_close(
        decode_landmarks(encode_landmarks(points, anchors), anchors), points, atol=tol, rtol=0
    )
    mesh = torch.randn(500, 7, 3, dtype=dtype, generator=torch.Generator().manual_seed(3)) * 100
    scales = anchors[:, 2] - anchors[:, 0]
    torch.testing.assert_close(
        decode_mesh(encode_mesh(mesh, anchors, scales), anchors, scales), mesh, atol=tol, rtol=0
    )


def test_closed_form_values() -> None:
    anchor = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size (20, 40)
    box = torch.tensor([[12.0, 24.0, 72.0, 104.0]])  # centre (42, 64), size (60, 80)
    v0, v1 = BOX_VARIANCES
    expected = [22 / (v0 * 20), 24 / (v0 * 40), math.log(3) / v1, math.log(2) / v1]
    assert encode_boxes(box, anchor)[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert encode_boxes(anchor, anchor).abs().max() == 0
    point = torch.tensor([[[22.0, 36.0]]])
    assert encode_landmarks(point, anchor)[0, 0].tolist() == pytest.approx([2 / (v0 * 20), -4 / (v0 * 40)])
    vertex = torch.tensor([[[25.0, 30.0, -8.0]]])
    assert encode_mesh(vertex, anchor, torch.tensor([20.0]))[0, 0].tolist() == pytest.approx(
        [0.25, -0.5, -0.4]
    )


def test_broadcast_over_batch() -> None:
    anchors = _random_boxes(50, torch.float32, 4)  # (A, 4) shared by the batch
    boxes = torch.stack(
        (_random_boxes(50, torch.float32, 5), _random_boxes(50, torch.float32, 6))
    )  # (B, A, 4)
    deltas = encode_boxes(boxes, anchors)
    assert deltas.shape == (2, 50, 4)
    torch.testing.assert_close(deltas[1], encode_boxes(boxes[1], anchors))
    torch.testing.assert_close(decode_boxes(deltas, anchors), boxes, atol=1e-3, rtol=0)


def test_decode_clamps_wild_sizes() -> None:
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = decode_boxes(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), anchor)
    assert torch.isfinite(out).all()
    assert out[0, 2] - out[0, 0] == pytest.approx(16 * math.exp(LOG_WH_CLAMP), rel=1e-5)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        decode_boxes(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="K, 2"):
        encode_landmarks(torch.zeros(3, 5, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="V, 3"):
        encode_mesh(torch.zeros(3, 5, 2), torch.zeros(3, 4), torch.ones(3))
