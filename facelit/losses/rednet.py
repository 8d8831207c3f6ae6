"""RED-Net's per-pixel landmark classes: label maps of small squares, the class-balanced softmax
loss, and the inverse (class map -> landmark centroids, combined with the regression branch).

Label map
---------
For L landmarks a label map holds L + 1 classes per pixel: 0 = background, k + 1 = landmark k. Each
landmark marks a ``side`` x ``side`` square (``side`` odd) of pixels centred on the pixel that
contains it (pixel-area frame: point x lies in pixel ``floor(x)``). Where squares overlap, a pixel
belongs to the landmark whose centre pixel is nearest (ties: the lower index). Squares are clipped
at the image border; a landmark outside the image marks only the part of its square inside.

Landmarks with ``landmarks_visible`` False (occluded by an object, or self-occluded) are labelled
like visible ones by default: their position is known (300-VW annotates occluded points; the
synthetic world projects them exactly), so the network learns to infer them from context and from
the previous frames, which is what the temporal recurrence is for. ``label_invisible=False`` leaves
them background instead.

Class balance
-------------
A 128 x 128 map with 7 squares of 3 x 3 pixels is > 99 % background. The loss is the mean over
the classes present in the batch of each class's mean per-pixel cross-entropy (inverse-frequency
weights computed per batch), so every landmark counts as much as the background.

Decoding
--------
The merged map is the argmax over the L + 1 maps; landmark k is the centroid of the pixels of
class k + 1 (pixel centres, ``index + 0.5``). When no pixel has class k + 1 the landmark falls back
to the centre of the pixel where its own probability map peaks. Its confidence is that peak
probability.

Merging detection and regression
--------------------------------
How the paper merges the two branches could not be checked (only its abstract was reachable: "heat
maps regularized by both detection and regression loss"); both rules here are ours.

* ``window`` (:func:`refine_in_window`, the default): the regression sub-network gives the shape
  (a global, shape-constrained estimate) and detection refines it: landmark k is the
  probability-weighted mean of the pixel centres of its own softmax map inside a square window
  around its regressed point. A map that is confident somewhere else (a position prior, an
  occluder) cannot pull the point out of the window.
* ``threshold`` (:func:`combine_detection_regression`): the detected centroid where its peak
  confidence reaches a threshold, the regressed point elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BACKGROUND",
    "DEFAULT_SQUARE_SIDES",
    "label_maps",
    "class_balanced_cross_entropy",
    "decode_maps",
    "combine_detection_regression",
    "refine_in_window",
]

BACKGROUND = 0
# Square sides of the three spatial recurrence steps (coarse to fine), as in the paper.
DEFAULT_SQUARE_SIDES = (7, 5, 3)
PIXEL_CENTRE = 0.5


def label_maps(
    points: Tensor,
    size: tuple[int, int],
    side: int,
    visible: Tensor | None = None,
    label_invisible: bool = True,
) -> Tensor:
    """Per-pixel landmark classes from points.

    Args:
        points: (N, L, 2) landmarks (x, y) in pixels.
        size: (H, W) of the map.
        side: odd square side in pixels.
        visible: (N, L) bool; with ``label_invisible=False`` invisible points mark nothing.
        label_invisible: label occluded points too (the default; see the module docstring).

    Returns:
        (N, H, W) int64 labels in [0, L].
    """
    if side < 1 or side % 2 == 0:
        raise ValueError(f"square side must be a positive odd number of pixels, got {side}")
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"expected points (N, L, 2), got {tuple(points.shape)}")
    n, num, _ = points.shape
    h, w = size
    r = side // 2
    offs = torch.arange(-r, r + 1, device=points.device)
    dy, dx = torch.meshgrid(offs, offs, indexing="ij")
    dx, dy = dx.reshape(1, 1, -1), dy.reshape(1, 1, -1)  # (1, 1, S*S)
    centre = torch.floor(points).long()
    cols, rows = centre[..., 0:1] + dx, centre[..., 1:2] + dy  # (N, L, S*S)
    valid = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    if visible is not None and not label_invisible:
        valid &= visible.bool().unsqueeze(-1)
    classes = num + 1
    # Nearest centre wins, ties to the lower index: key = squared offset * (L + 1) + class.
    key = (dx * dx + dy * dy) * classes + torch.arange(1, classes, device=points.device).view(1, -1, 1)
    empty = (2 * r * r + 1) * classes  # larger than every key
    key = torch.where(valid, key, torch.full_like(key, empty))
    index = torch.where(valid, rows * w + cols, torch.zeros_like(rows))
    flat = torch.full((n, h * w), empty, dtype=torch.long, device=points.device)
    flat = flat.scatter_reduce(1, index.reshape(n, -1), key.reshape(n, -1), reduce="amin", include_self=True)
    labels = torch.where(flat == empty, torch.full_like(flat, BACKGROUND), flat % classes)
    return labels.view(n, h, w)


def class_balanced_cross_entropy(logits: Tensor, labels: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
    """Mean over present classes of each class's mean per-pixel softmax cross-entropy.

    Args:
        logits: (N, C, H, W) response maps.
        labels: (N, H, W) int64 classes in [0, C).
        pixel_mask: (N,) or (N, H, W) bool, pixels that count (e.g. valid frames); None = all.

    Returns:
        scalar loss (0 when no pixel counts).
    """
    if logits.shape[0] != labels.shape[0] or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    ce = F.cross_entropy(logits.float(), labels, reduction="none")  # (N, H, W)
    weight = torch.ones_like(ce)
    if pixel_mask is not None:
        mask = pixel_mask.view(-1, 1, 1) if pixel_mask.ndim == 1 else pixel_mask
        weight = weight * mask.to(ce.dtype)
    num_classes = logits.shape[1]
    flat = labels.reshape(-1)
    sums = ce.new_zeros(num_classes).index_add_(0, flat, (ce * weight).reshape(-1))
    counts = ce.new_zeros(num_classes).index_add_(0, flat, weight.reshape(-1))
    present = counts > 0
    if not bool(present.any()):
        return (logits * 0.0).sum()
    return (sums[present] / counts[present]).mean()


def decode_maps(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Landmarks from response maps: centroid of each class of the merged (argmax) map.

    Args:
        logits: (N, L+1, H, W).

    Returns:
        points (N, L, 2) in pixels (pixel-area frame) and confidence (N, L): each landmark's peak
        softmax probability. A landmark with an empty class sits at its map's peak pixel centre.
    """
    n, classes, h, w = logits.shape
    prob = logits.float().softmax(dim=1)
    labels = prob.argmax(dim=1).view(n, -1)  # (N, H*W)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=logits.device, dtype=prob.dtype) + PIXEL_CENTRE,
        torch.arange(w, device=logits.device, dtype=prob.dtype) + PIXEL_CENTRE,
        indexing="ij",
    )
    coords = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).expand(n, -1, -1)  # (N, HW, 2)
    sums = prob.new_zeros(n, classes, 2).scatter_add_(1, labels.unsqueeze(-1).expand(-1, -1, 2), coords)
    counts = prob.new_zeros(n, classes).scatter_add_(1, labels, torch.ones_like(labels, dtype=prob.dtype))
    conf, peak = prob[:, 1:].flatten(2).max(dim=2)  # (N, L)
    peak_xy = torch.stack([peak % w, torch.div(peak, w, rounding_mode="floor")], dim=-1).to(prob.dtype)
    peak_xy = peak_xy + PIXEL_CENTRE
    counts = counts[:, 1:].unsqueeze(-1)
    centroid = sums[:, 1:] / counts.clamp(min=1.0)
    return torch.where(counts > 0, centroid, peak_xy), conf


def combine_detection_regression(
    detected: Tensor, confidence: Tensor, regressed: Tensor, threshold: float
) -> Tensor:
    """The detected point where its confidence reaches ``threshold``, the regressed one elsewhere.

    Args:
        detected: (..., L, 2) centroids from :func:`decode_maps`.
        confidence: (..., L) their confidences.
        regressed: (..., L, 2) the regression sub-network's points.
        threshold: confidence in [0, 1]; 0 always keeps detection, > 1 always regression.
    """
    return torch.where((confidence >= threshold).unsqueeze(-1), detected, regressed)


def refine_in_window(logits: Tensor, anchors: Tensor, half_width: float) -> Tensor:
    """Each landmark detected only near its anchor (the regressed point): the probability-weighted
    mean of the pixel centres of landmark k's softmax map over the pixels whose centre lies within
    ``half_width`` pixels of anchor k in x and in y.

    Args:
        logits: (N, L+1, H, W) response maps (channel 0 background).
        anchors: (N, L, 2) anchor points (x, y) in pixels (pixel-area frame).
        half_width: window half-side in pixels (> 0).

    Returns:
        (N, L, 2) refined points; a landmark whose window holds no pixel of the map (anchor far
        outside the crop) keeps its anchor.
    """
    if half_width <= 0:
        raise ValueError(f"window half-width must be positive, got {half_width}")
    n, classes, h, w = logits.shape
    if anchors.shape != (n, classes - 1, 2):
        raise ValueError(f"anchors {tuple(anchors.shape)} do not match logits {tuple(logits.shape)}")
    prob = logits.float().softmax(dim=1)[:, 1:]  # (N, L, H, W)
    anchors = anchors.to(prob.dtype)
    xs = torch.arange(w, device=prob.device, dtype=prob.dtype) + PIXEL_CENTRE
    ys = torch.arange(h, device=prob.device, dtype=prob.dtype) + PIXEL_CENTRE
    in_x = ((xs - anchors[..., 0:1]).abs() <= half_width).to(prob.dtype)  # (N, L, W)
    in_y = ((ys - anchors[..., 1:2]).abs() <= half_width).to(prob.dtype)  # (N, L, H)
    mass = torch.einsum("nlhw,nlh,nlw->nl", prob, in_y, in_x)
    x = torch.einsum("nlhw,nlh,nlw->nl", prob, in_y, in_x * xs)
    y = torch.einsum("nlhw,nlh,nlw->nl", prob, in_y * ys, in_x)
    refined = torch.stack([x, y], dim=-1) / mass.clamp(min=torch.finfo(prob.dtype).tiny).unsqueeze(-1)
    return torch.where((mass > 0).unsqueeze(-1), refined, anchors)
