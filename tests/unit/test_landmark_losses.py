"""Landmark losses: closed forms, Wing continuity, visibility masking, scale, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from facelit.losses.landmark import LandmarkLoss, landmark_loss, wing


def _pair(err: tuple[float, float], b: int = 2, k: int = 3):
    target = torch.rand(b, k, 2)
    return target + torch.tensor(err), target


def test_closed_forms_per_kind():
    pred, target = _pair((3.0, 4.0))
    assert torch.isclose(landmark_loss(pred, target, None, "l2"), torch.tensor(25.0))
    assert torch.isclose(landmark_loss(pred, target, None, "l1"), torch.tensor(7.0))
    # smooth L1 (beta 1): |x| - 0.5 per coordinate above beta, 0.5 x^2 / beta below
    assert torch.isclose(landmark_loss(pred, target, None, "smooth_l1"), torch.tensor(2.5 + 3.5))
    small, t = _pair((0.5, -0.2))
    assert torch.isclose(
        landmark_loss(small, t, None, "smooth_l1"), torch.tensor(0.5 * 0.25 + 0.5 * 0.04), atol=1e-6
    )
    # wing (w 10, eps 2): both coordinates in the log region
    assert torch.isclose(
        landmark_loss(pred, target, None, "wing"), torch.tensor(10 * math.log(2.5) + 10 * math.log(3.0))
    )


def test_wing_closed_form_and_continuity():
    w, eps = 10.0, 2.0
    c = w - w * math.log(1 + w / eps)
    x = torch.tensor([0.0, 1.0, -1.0, 15.0, -15.0], dtype=torch.float64)
    expected = torch.tensor(
        [0.0, 10 * math.log(1.5), 10 * math.log(1.5), 15 - c, 15 - c], dtype=torch.float64
    )
    assert torch.allclose(wing(x, w, eps), expected)
    at = torch.tensor([w - 1e-9, w, w + 1e-9], dtype=torch.float64)
    values = wing(at, w, eps)
    assert torch.allclose(values, torch.full_like(values, w * math.log(1 + w / eps)), atol=1e-7)
    # gradient: w / (eps + |x|) inside, 1 outside; continuity of the value only (the slope jumps)
    g = torch.tensor([1.0, 20.0], dtype=torch.float64, requires_grad=True)
    wing(g, w, eps).sum().backward()
    assert torch.allclose(g.grad, torch.tensor([w / (eps + 1.0), 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="w > 0 and eps > 0"):
        wing(x, 0.0, eps)


def test_visibility_mask_and_empty_batch():
    pred, target = _pair((1.0, 0.0), b=2, k=2)
    pred[0, 1] += 1000.0
    vis = torch.tensor([[True, False], [True, True]])
    assert torch.isclose(landmark_loss(pred, target, vis, "l1"), torch.tensor(1.0))
    pred.requires_grad_(True)
    loss = landmark_loss(pred, target, torch.zeros(2, 2, dtype=torch.bool), "wing")
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all() and torch.all(pred.grad == 0)
    # every visible point weighs the same: 3 visible points with l1 errors 1, 2, 3 -> mean 2
    p = torch.zeros(2, 2, 2)
    p[0, 0, 0], p[1, 0, 0], p[1, 1, 1] = 1.0, 2.0, 3.0
    vis2 = torch.tensor([[True, False], [True, True]])
    assert torch.isclose(landmark_loss(p, torch.zeros(2, 2, 2), vis2, "l1"), torch.tensor(2.0))


def test_scale_and_module_match_function():
    pred, target = _pair((0.01, -0.02))
    assert torch.isclose(
        landmark_loss(pred, target, None, "l1", scale=256.0), 256 * landmark_loss(pred, target, None, "l1")
    )
    module = LandmarkLoss("wing", wing_w=5.0, wing_eps=1.0, scale=128.0)
    expected = landmark_loss(pred, target, None, "wing", wing_w=5.0, wing_eps=1.0, scale=128.0)
    assert torch.isclose(module(pred, target), expected)
    # in pixels: errors 1.28 and 2.56 px, both < w -> 5 ln(1 + e)
    assert torch.isclose(expected, torch.tensor(5 * math.log(2.28) + 5 * math.log(3.56)), atol=1e-4)


def test_bad_input():
    pred, target = _pair((0.0, 0.0))
    with pytest.raises(ValueError, match="unknown landmark loss kind 'l3'"):
        landmark_loss(pred, target, None, "l3")
    with pytest.raises(ValueError, match="unknown landmark loss kind"):
        LandmarkLoss("huber")
    with pytest.raises(ValueError, match="must both be"):
        landmark_loss(pred, target[:, :2], None, "l1")
    with pytest.raises(ValueError, match="visible must be"):
        landmark_loss(pred, target, torch.ones(2, 2, dtype=torch.bool), "l1")
    with pytest.raises(ValueError, match="invalid loss parameters"):
        LandmarkLoss("wing", wing_eps=0.0)
