"""Video landmark metrics (facelit.metrics.video) on hand-computed cases: frame, clip and category
NME (300-VW pools frames, not clip means), CED per category, temporal jitter, the Metric."""

from __future__ import annotations

import math

import pytest
import torch

from facelit.metrics.video import (
    VideoLandmarkMetrics,
    category_ced,
    category_nme,
    clip_nme,
    nme_per_frame,
    scheme_for,
    temporal_jitter,
)

IOD = 10.0


def face7() -> torch.Tensor:
    """rednet7 points with the outer eye corners (points 0 and 3) 10 px apart."""
    return torch.tensor([[0.0, 0.0], [3.0, 0.0], [7.0, 0.0], [IOD, 0.0], [5.0, 5.0], [2.0, 9.0], [8.0, 9.0]])


def clip(t: int) -> torch.Tensor:
    return face7().expand(1, t, 7, 2).clone()


def test_nme_per_frame_hand_case():
    target = clip(3)
    pred = target.clone()
    pred[0, 0, 0] += torch.tensor([3.0, 4.0])  # one point 5 px off in frame 0
    mask = torch.tensor([[True, True, False]])
    out = nme_per_frame(pred, target, mask)
    assert out.shape == (1, 3)
    assert math.isclose(float(out[0, 0]), 5 / 7 / IOD, rel_tol=1e-6)
    assert float(out[0, 1]) == 0.0 and math.isnan(float(out[0, 2]))  # padding frame
    only_visible = nme_per_frame(
        pred, target, mask, visible=torch.tensor([True] + [False] * 6).expand(1, 3, 7)
    )
    assert math.isclose(float(only_visible[0, 0]), 5 / IOD, rel_tol=1e-6)


def test_the_ibug68_outer_corners_are_the_normaliser():
    target = torch.zeros(1, 1, 68, 2)
    target[0, 0, :, 0] = torch.arange(68.0)  # distinct points on a line
    target[0, 0, 36], target[0, 0, 45] = torch.tensor([0.0, 0.0]), torch.tensor([20.0, 0.0])
    pred = target + torch.tensor([0.0, 1.0])  # every point 1 px off
    assert math.isclose(float(nme_per_frame(pred, target)[0, 0]), 1 / 20, rel_tol=1e-6)
    assert scheme_for(68).name == "ibug68" and scheme_for(7).name == "rednet7"
    with pytest.raises(ValueError, match="no default scheme for K=5"):
        scheme_for(5)


def test_clip_and_category_pool_frames():
    frames = torch.tensor([[0.05, 0.15], [0.35, float("nan")], [0.3, 0.3]])
    assert torch.allclose(clip_nme(frames), torch.tensor([0.1, 0.35, 0.3]))
    cats = torch.tensor([1, 1, 3])
    per_cat = category_nme(frames, cats)
    assert math.isclose(per_cat[1], (0.05 + 0.15 + 0.35) / 3, rel_tol=1e-6)  # not (0.1 + 0.35) / 2
    assert math.isclose(per_cat[3], 0.3, rel_tol=1e-6) and set(per_cat) == {1, 3}
    ced = category_ced(frames, cats, max_threshold=0.4, steps=5)  # thresholds 0, .1, .2, .3, .4
    t, frac = ced[1]
    assert torch.allclose(t, torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    assert torch.allclose(frac, torch.tensor([0.0, 1 / 3, 2 / 3, 2 / 3, 1.0], dtype=torch.float64))


def test_temporal_jitter_hand_cases():
    target = clip(4)
    wobble = target.clone()
    wobble[..., 0] += torch.tensor([0.0, 1.0, 0.0, 1.0])[None, :, None]  # x: 0, 1, 0, 1 px off
    # accelerations of the error: frame 1: 0 - 2 + 0 = -2, frame 2: 1 - 0 + 1 = 2 -> |a| = 2 px
    assert math.isclose(float(temporal_jitter(wobble, target)[0]), 2 / IOD, rel_tol=1e-6)
    rigid = target + torch.tensor([3.0, -2.0])
    drift = target + torch.arange(4.0)[None, :, None, None] * torch.tensor([1.0, 0.5])
    assert float(temporal_jitter(rigid, target)[0]) == 0.0
    assert float(temporal_jitter(drift, target)[0]) == pytest.approx(0.0, abs=1e-6)  # NME grows, no jitter
    holes = torch.tensor([[True, True, False, True]])  # no three consecutive valid frames
    assert math.isnan(float(temporal_jitter(wobble, target, holes)[0]))
    assert math.isnan(float(temporal_jitter(wobble[:, :2], target[:, :2])[0]))
    with pytest.raises(ValueError, match=r"\(B, T, K, 2\)"):
        temporal_jitter(wobble[0], target[0])


def test_video_metric_accumulates_frames():
    m = VideoLandmarkMetrics(threshold=0.08)
    target = clip(3).repeat(2, 1, 1, 1)
    pred = target.clone()
    pred[1, :, :, 1] += 0.4  # clip 1: every point 0.4 px off -> NME 0.04
    m.update(
        pred,
        target,
        torch.tensor([[True, True, True], [True, True, False]]),
        torch.tensor([1, 2]),
        torch.tensor([[False, False, False], [True, True, False]]),
    )
    out = m.compute()
    nmes = torch.tensor([0, 0, 0, 0.04, 0.04], dtype=torch.float64)
    assert math.isclose(float(out["nme"]), float(nmes.mean()), rel_tol=1e-6)
    assert math.isclose(float(out["auc@0.08"]), float((1 - nmes / 0.08).mean()), abs_tol=2e-3)
    assert float(out["fr@0.08"]) == 0.0 and float(out["jitter"]) == pytest.approx(0.0, abs=1e-6)
    assert (
        math.isclose(float(out["nme_occluded"]), 0.04, rel_tol=1e-6) and float(out["nme_unoccluded"]) == 0.0
    )
    assert float(out["nme_cat1"]) == 0.0 and math.isclose(float(out["nme_cat2"]), 0.04, rel_tol=1e-6)
    assert int(out["skipped"]) == 0


def test_video_metric_jitter_of_clips_with_and_without_an_occluded_frame():
    m = VideoLandmarkMetrics()
    target = clip(3).repeat(2, 1, 1, 1)
    pred = target.clone()
    pred[0, 1, :, 1] += 0.5  # clip 0: acceleration error 1 px at frame 1 on every point -> 1 / IOD
    occluded = torch.tensor([[False, False, False], [False, False, True]])
    m.update(pred, target, torch.ones(2, 3, dtype=torch.bool), occluded=occluded)
    out = m.compute()
    assert float(out["jitter_unoccluded"]) == pytest.approx(1 / IOD, rel=1e-6)
    assert float(out["jitter_occluded"]) == pytest.approx(0.0, abs=1e-9)
    assert float(out["jitter"]) == pytest.approx(0.5 / IOD, rel=1e-6)
    m.reset()
    m.update(pred, target, occluded=torch.zeros(2, 3, dtype=torch.bool))
    assert "jitter_occluded" not in m.compute()
