"""Head-pose plots: error by yaw bin (hand-computed), plot images, pose axes through the overlay helper."""

from __future__ import annotations

import numpy as np
import torch

from callbacks.headpose import error_by_yaw, plot_error_by_yaw, plot_weight_histogram
from facelit.viz import draw_overlay


def test_error_by_yaw_bins_by_ground_truth_yaw():
    target = torch.tensor([[-15.0, 0, 0], [-12.0, 0, 0], [3.0, 0, 0], [25.0, 0, 0]])
    pred = target + torch.tensor([[3.0, 0, 0], [0, 6, 0], [0, 0, 0], [3, 3, 3]])
    centres, mae = error_by_yaw(pred, target, width=10.0)
    np.testing.assert_allclose(centres, [-15.0, 5.0, 25.0])
    np.testing.assert_allclose(mae, [1.5, 0.0, 3.0])  # (1 + 2) / 2, 0, 3


def test_plots_are_images():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(50, 3, generator=g) * 120 - 60
    img = plot_error_by_yaw({"source": (target + 1, target), "target": (target - 2, target)})
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    hist = plot_weight_histogram(target, torch.rand(50, generator=g))
    assert hist.dtype == np.uint8 and hist.shape[1] > hist.shape[0]


def test_pose_axes_drawn_from_predict_overlay_items():
    image = torch.zeros(3, 32, 32)
    items = {
        "pose": torch.tensor([[0.0, 0, 0]]),
        "anchor": torch.tensor([[16.0, 16]]),
        "axis_length": torch.tensor(10.0),
    }
    out = draw_overlay(image, items)
    # frontal pose: the x axis (red) runs to the image right of the anchor
    assert out[16, 20, 0] > 200 and out[16, 20, 1] < 50
