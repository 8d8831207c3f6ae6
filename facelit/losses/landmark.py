"""Landmark regression losses: L2, L1, smooth L1 and Wing, masked by point visibility.

Convention
----------
Prediction and target are (B, K, 2) points in one frame; the landmark networks of facelit output
coordinates normalised to the crop (x / W, y / H in [0, 1]). ``scale`` multiplies the errors
before the loss, so that the Wing parameters can be given in crop pixels as in the paper
(``scale = crop size``), while ``scale = 1`` applies them to the normalised errors directly.

Per point, the loss sums over the two coordinates: ``l2`` is the squared Euclidean error,
``l1`` the sum of absolute errors, ``smooth_l1`` (Huber with ``beta``) and ``wing`` apply per
coordinate. The batch loss is the mean over all visible points of the batch (every visible point
weighs the same; a batch without a visible point gives 0 with a gradient path kept).

Wing loss (Feng et al., "Wing Loss for Robust Facial Landmark Localisation with Convolutional
Neural Networks", CVPR 2018): ``wing(x) = w * ln(1 + |x| / eps)`` for ``|x| < w`` and
``|x| - C`` otherwise, with ``C = w - w * ln(1 + w / eps)`` making it continuous at ``|x| = w``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOSS_KINDS", "wing", "landmark_loss", "LandmarkLoss"]

LOSS_KINDS = ("l2", "l1", "smooth_l1", "wing")


def wing(x: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """Elementwise Wing loss of errors ``x`` (any shape)."""
    if w <= 0 or eps <= 0:
        raise ValueError(f"wing needs w > 0 and eps > 0, got w={w}, eps={eps}")
    a = x.abs()
    c = w - w * math.log1p(w / eps)
    return torch.where(a < w, w * torch.log1p(a / eps), a - c)


def _point_losses(
    diff: torch.Tensor, kind: str, wing_w: float, wing_eps: float, smooth_l1_beta: float
) -> torch.Tensor:
    """(B, K) per-point loss from (B, K, 2) errors."""
    if kind == "l2":
        return diff.square().sum(dim=-1)
    if kind == "l1":
        return diff.abs().sum(dim=-1)
    if kind == "smooth_l1":
        zero = torch.zeros_like(diff)
        return F.smooth_l1_loss(diff, zero, reduction="none", beta=smooth_l1_beta).sum(dim=-1)
    if kind == "wing":
        return wing(diff, wing_w, wing_eps).sum(dim=-1)
    raise ValueError(f"unknown landmark loss kind {kind!r}; known: {LOSS_KINDS}")


def landmark_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    visible: torch.Tensor | None,
    kind: str = "wing",
    *,
    wing_w: float = 10.0,
    wing_eps: float = 2.0,
    smooth_l1_beta: float = 1.0,
    scale: float = 1.0,
) -> torch.Tensor:
    """Mean landmark loss over the visible points of a batch.

    Args:
        pred: (B, K, 2) predicted points.
        target: (B, K, 2) target points.
        visible: (B, K) bool; ``None`` means all points count.
        kind: one of :data:`LOSS_KINDS`.
        wing_w, wing_eps: Wing parameters (in units of ``scale``-multiplied errors).
        smooth_l1_beta: transition point of the smooth L1 loss.
        scale: errors are multiplied by it before the loss (e.g. the crop size in pixels).

    Returns:
        scalar loss.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown landmark loss kind {kind!r}; known: {LOSS_KINDS}")
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and target must both be (B, K, 2), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if visible is None:
        visible = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    if visible.shape != pred.shape[:2]:
        raise ValueError(f"visible must be (B, K) = {tuple(pred.shape[:2])}, got {tuple(visible.shape)}")
    diff = (pred - target.to(pred.dtype)) * scale
    per_point = _point_losses(diff, kind, wing_w, wing_eps, smooth_l1_beta)
    weights = visible.to(per_point.dtype)
    return (per_point * weights).sum() / weights.sum().clamp(min=1.0)


class LandmarkLoss(nn.Module):
    """Module form of :func:`landmark_loss` with its parameters fixed at construction."""

    def __init__(
        self,
        kind: str = "wing",
        wing_w: float = 10.0,
        wing_eps: float = 2.0,
        smooth_l1_beta: float = 1.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"unknown landmark loss kind {kind!r}; known: {LOSS_KINDS}")
        if wing_w <= 0 or wing_eps <= 0 or smooth_l1_beta < 0 or scale <= 0:
            raise ValueError(
                f"invalid loss parameters: wing_w={wing_w}, wing_eps={wing_eps}, "
                f"smooth_l1_beta={smooth_l1_beta}, scale={scale}"
            )
        self.kind = kind
        self.wing_w = wing_w
        self.wing_eps = wing_eps
        self.smooth_l1_beta = smooth_l1_beta
        self.scale = scale

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor | None = None
    ) -> torch.Tensor:
        return landmark_loss(
            pred,
            target,
            visible,
            self.kind,
            wing_w=self.wing_w,
            wing_eps=self.wing_eps,
            smooth_l1_beta=self.smooth_l1_beta,
            scale=self.scale,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, wing_w={self.wing_w}, wing_eps={self.wing_eps}, scale={self.scale}"
