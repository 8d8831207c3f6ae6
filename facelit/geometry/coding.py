"""Anchor-relative coding of boxes, landmarks and mesh vertices (RetinaFace / SSD style).

Convention
----------
Boxes and anchors are ``xyxy`` in pixels (pixel-area frame, DESIGN.md); points are (x, y) in
pixels of the same image. With an anchor of centre ``(acx, acy)`` and size ``(aw, ah)`` and the
variances ``(v0, v1) = BOX_VARIANCES = (0.1, 0.2)`` of the RetinaFace release:

- box ``(cx, cy, w, h)`` -> ``((cx - acx) / (v0 aw), (cy - acy) / (v0 ah), log(w / aw) / v1,
  log(h / ah) / v1)``;
- point ``(x, y)`` -> ``((x - acx) / (v0 aw), (y - acy) / (v0 ah))``;
- mesh vertex ``(x, y, z)`` (z relative to the nose tip, pixels) -> ``((x - acx) / s, (y - acy) / s,
  z / s)`` with ``s`` the anchor scale (side length of the square anchor); no variance.

Every ``decode_*`` is the exact inverse of its ``encode_*`` (up to floating point), except that
``decode_boxes`` clamps the log-size deltas at ``log(1000 / 16)`` (as torchvision does) so that a
wild prediction cannot overflow ``exp``; ratios beyond 62.5 are therefore not representable.
Everything runs in the dtype of its inputs (float64 round-trips are exact to ~1e-12).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facelit.geometry.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh

__all__ = [
    "BOX_VARIANCES",
    "LOG_WH_CLAMP",
    "encode_boxes",
    "decode_boxes",
    "encode_landmarks",
    "decode_landmarks",
    "encode_mesh",
    "decode_mesh",
]

BOX_VARIANCES: tuple[float, float] = (0.1, 0.2)
LOG_WH_CLAMP: float = math.log(1000.0 / 16)


def _anchor_centre_size(anchors: Tensor) -> tuple[Tensor, Tensor]:
    if anchors.shape[-1] != 4:
        raise ValueError(f"anchors must have shape (..., 4), got {tuple(anchors.shape)}")
    c = box_xyxy_to_cxcywh(anchors)
    return c[..., :2], c[..., 2:]


def encode_boxes(boxes: Tensor, anchors: Tensor, variances: tuple[float, float] = BOX_VARIANCES) -> Tensor:
    """Encode ``xyxy`` boxes relative to ``xyxy`` anchors.

    Args:
        boxes: (..., 4) xyxy with positive width and height.
        anchors: (..., 4) xyxy, broadcastable to ``boxes``.
        variances: (v0, v1).

    Returns:
        (..., 4) deltas (dx, dy, dw, dh).
    """
    a_c, a_wh = _anchor_centre_size(anchors)
    b = box_xyxy_to_cxcywh(boxes)
    d_xy = (b[..., :2] - a_c) / (variances[0] * a_wh)
    d_wh = torch.log(b[..., 2:] / a_wh) / variances[1]
    return torch.cat((d_xy, d_wh), dim=-1)


def decode_boxes(deltas: Tensor, anchors: Tensor, variances: tuple[float, float] = BOX_VARIANCES) -> Tensor:
    """Inverse of :func:`encode_boxes`.

    Args:
        deltas: (..., 4).
        anchors: (..., 4) xyxy, broadcastable to ``deltas``.

    Returns:
        (..., 4) xyxy boxes.
    """
    if deltas.shape[-1] != 4:
        raise ValueError(f"box deltas must have shape (..., 4), got {tuple(deltas.shape)}")
    a_c, a_wh = _anchor_centre_size(anchors)
    c = a_c + deltas[..., :2] * variances[0] * a_wh
    wh = a_wh * torch.exp((deltas[..., 2:] * variances[1]).clamp(max=LOG_WH_CLAMP))
    return box_cxcywh_to_xyxy(torch.cat((c, wh), dim=-1))


def encode_landmarks(
    points: Tensor, anchors: Tensor, variances: tuple[float, float] = BOX_VARIANCES
) -> Tensor:
    """Encode points relative to anchors.

    Args:
        points: (..., K, 2) (x, y) in pixels.
        anchors: (..., 4) xyxy, one anchor per point set (broadcast over K).

    Returns:
        (..., K, 2) deltas.
    """
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., K, 2), got {tuple(points.shape)}")
    a_c, a_wh = _anchor_centre_size(anchors)
    return (points - a_c.unsqueeze(-2)) / (variances[0] * a_wh.unsqueeze(-2))


def decode_landmarks(
    deltas: Tensor, anchors: Tensor, variances: tuple[float, float] = BOX_VARIANCES
) -> Tensor:
    """Inverse of :func:`encode_landmarks`: (..., K, 2) deltas, (..., 4) anchors -> (..., K, 2) points."""
    if deltas.shape[-1] != 2:
        raise ValueError(f"landmark deltas must have shape (..., K, 2), got {tuple(deltas.shape)}")
    a_c, a_wh = _anchor_centre_size(anchors)
    return a_c.unsqueeze(-2) + deltas * (variances[0] * a_wh.unsqueeze(-2))


def _mesh_frame(vertices: Tensor, anchors: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    if vertices.shape[-1] != 3:
        raise ValueError(f"mesh vertices must have shape (..., V, 3), got {tuple(vertices.shape)}")
    a_c, _ = _anchor_centre_size(anchors)
    origin = torch.cat((a_c, torch.zeros_like(a_c[..., :1])), dim=-1).unsqueeze(-2)  # (..., 1, 3)
    return origin, scales[..., None, None]


def encode_mesh(vertices: Tensor, anchors: Tensor, scales: Tensor) -> Tensor:
    """Normalise mesh vertices by the anchor: ``((x - cx) / s, (y - cy) / s, z / s)``.

    Args:
        vertices: (..., V, 3) x, y in pixels, z relative to the nose tip in pixels.
        anchors: (..., 4) xyxy.
        scales: (...) anchor scales (``AnchorSet.scales``).

    Returns:
        (..., V, 3).
    """
    origin, s = _mesh_frame(vertices, anchors, scales)
    return (vertices - origin) / s


def decode_mesh(deltas: Tensor, anchors: Tensor, scales: Tensor) -> Tensor:
    """Inverse of :func:`encode_mesh`: (..., V, 3) -> (..., V, 3) pixels (z relative to the nose tip)."""
    origin, s = _mesh_frame(deltas, anchors, scales)
    return deltas * s + origin
