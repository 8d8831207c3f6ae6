"""Drawing of predictions and ground truth over images (boxes, landmarks, head-pose axes), and
evaluation plots (the landmark CED curve).

Convention
----------
Inputs follow DESIGN.md section 2: image (3, H, W) float in [0, 1]; boxes xyxy and points (x, y)
in the pixel-area frame; pose (yaw, pitch, roll) in degrees, turned into axes with
``facelit.geometry.pose.matrix_from_euler`` (camera frame x right, y down). Drawing uses PIL and
returns uint8 (H, W, 3) arrays that every logger accepts. Plots use matplotlib's Agg canvas on a
bare ``Figure`` (no pyplot state: safe in DataLoader workers, DDP ranks and headless runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw

from facelit.metrics.landmarks import DEFAULT_CED_STEPS, auc_from_nmes, ced_curve, failure_rate

if TYPE_CHECKING:  # matplotlib is imported by the plotting functions only (import time)
    from matplotlib.figure import Figure

__all__ = ["to_uint8", "draw_overlay", "grid", "plot_ced", "figure_to_uint8"]

PRED_COLOUR = (0, 255, 0)
GT_COLOUR = (255, 60, 60)
AXIS_COLOURS = ((255, 0, 0), (0, 200, 0), (0, 90, 255))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(image.shape)}")
    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def _draw_items(draw: ImageDraw.ImageDraw, items: Mapping[str, torch.Tensor], prefix: str,
                colour: tuple[int, int, int], radius: float) -> None:
    boxes = items.get(f"{prefix}boxes")
    if boxes is not None:
        for b in boxes.detach().cpu().reshape(-1, 4).tolist():
            draw.rectangle(b, outline=colour, width=1)
        scores = items.get(f"{prefix}scores")
        if scores is not None:
            for b, s in zip(boxes.detach().cpu().reshape(-1, 4).tolist(), scores.detach().cpu().tolist()):
                draw.text((b[0], max(0.0, b[1] - 10)), f"{s:.2f}", fill=colour)
    points = items.get(f"{prefix}landmarks")
    if points is not None:
        pts = points.detach().cpu().reshape(-1, 2).tolist()
        for x, y in pts:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, fill=colour)
    pose = items.get(f"{prefix}pose")
    anchor = items.get(f"{prefix}anchor")
    if pose is not None and anchor is not None:
        from facelit.geometry.pose import matrix_from_euler

        rot = matrix_from_euler(pose.detach().cpu().float().reshape(-1, 3))
        length = items.get(f"{prefix}axis_length", torch.tensor(30.0)).item()
        for r, (ax, ay) in zip(rot, anchor.detach().cpu().reshape(-1, 2).tolist()):
            for k in range(3):
                dx, dy = (r[0, k] * length).item(), (r[1, k] * length).item()
                draw.line((ax, ay, ax + dx, ay + dy), fill=AXIS_COLOURS[k], width=2)


def draw_overlay(image: torch.Tensor, items: Mapping[str, torch.Tensor], scale: int = 1) -> np.ndarray:
    """Draw ground truth (``gt_*`` keys, red) and predictions (green) over ``image``.

    Args:
        image: (3, H, W) float [0, 1].
        items: any of boxes (N, 4), scores (N,), landmarks (N, K, 2) or (K, 2), pose (N, 3) with
            anchor (N, 2), each also with the ``gt_`` prefix.
        scale: integer upscaling for small crops (points are scaled alike).

    Returns:
        (H * scale, W * scale, 3) uint8.
    """
    pil = Image.fromarray(to_uint8(image))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
        items = {k: (v * scale if k.endswith(("boxes", "landmarks", "anchor")) else v) for k, v in items.items()}
    draw = ImageDraw.Draw(pil)
    radius = max(1.0, min(pil.width, pil.height) / 160)
    _draw_items(draw, items, "gt_", GT_COLOUR, radius)
    _draw_items(draw, items, "", PRED_COLOUR, radius)
    return np.asarray(pil)


def grid(images: list[np.ndarray], columns: int = 4, pad: int = 2) -> np.ndarray:
    """Tile (H, W, 3) uint8 images (any sizes) into one image, row-major."""
    if not images:
        raise ValueError("grid needs at least one image")
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    rows = (len(images) + columns - 1) // columns
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for n, img in enumerate(images):
        r, c = divmod(n, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + img.shape[0], x : x + img.shape[1]] = img
    return out


def plot_ced(
    curves: Mapping[str, torch.Tensor | np.ndarray | Sequence[float]],
    thr: float = 0.08,
    steps: int = DEFAULT_CED_STEPS,
    title: str | None = None,
) -> Figure:
    """CED plot of several methods: ``curves`` maps a name to its (N,) per-sample NMEs.

    The curves, AUC@thr and FR@thr in each legend entry come from
    :mod:`facelit.metrics.landmarks` (:func:`ced_curve`, :func:`auc_from_nmes`, :func:`failure_rate`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, values in curves.items():
        t, frac = ced_curve(values, thr, steps)
        label = f"{name} (AUC {auc_from_nmes(values, thr, steps):.3f}, FR {failure_rate(values, thr):.3f})"
        ax.plot(t.numpy(), frac.numpy(), label=label)
    ax.set_xlim(0.0, thr)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("NME")
    ax.set_ylabel("fraction of samples")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def figure_to_uint8(fig: Figure) -> np.ndarray:
    """Render a matplotlib figure on its Agg canvas -> (H, W, 3) uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
