"""NME normalisers, CED/AUC/FR, NME by yaw and the DDP-mergeable LandmarkMetrics, on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from facelit.geometry.schemes import AFLW21, FIVE_POINT, IBUG68
from facelit.metrics.landmarks import (
    LandmarkMetrics,
    auc_from_nmes,
    ced_curve,
    failure_rate,
    nme,
    nme_by_yaw,
)


def face68() -> torch.Tensor:
    """(68, 2) points: all at (30, 50) except a box-defining jaw and two symmetric hexagon eyes.

    Outer eye corners: p36 = (10, 20), p45 = (50, 20) -> inter-ocular 40. Eye centres: (15, 20) and
    (45, 20) -> inter-pupil 30. Tight box: x in [10, 50], y in [10, 90] -> sqrt(40 * 80).
    """
    p = torch.full((68, 2), 30.0)
    p[:, 1] = 50.0
    p[0] = torch.tensor([20.0, 10.0])
    p[8] = torch.tensor([30.0, 90.0])
    hexagon = torch.tensor([[-5.0, 0.0], [-2.0, -2.0], [2.0, -2.0], [5.0, 0.0], [2.0, 2.0], [-2.0, 2.0]])
    p[36:42] = torch.tensor([15.0, 20.0]) + hexagon  # p36 = (10, 20)
    p[42:48] = torch.tensor([45.0, 20.0]) + hexagon  # p45 = (50, 20)
    return p


def test_nme_normalisers_hand_computed():
    t = face68().expand(2, 68, 2).clone()
    pred = t.clone()
    pred[0] += torch.tensor([3.0, 4.0])  # every point off by 5
    pred[1, 10] += torch.tensor([0.0, 68.0])  # one point off by 68 -> mean error 1
    expected_err = torch.tensor([5.0, 1.0])
    for normaliser, norm in [("inter_ocular", 40.0), ("inter_pupil", 30.0), ("landmark_box", math.sqrt(40 * 80))]:
        got = nme(pred, t, None, normaliser, "ibug68")
        assert torch.allclose(got, expected_err / norm), normaliser
    boxes = torch.tensor([[0.0, 0.0, 10.0, 40.0], [5.0, 5.0, 25.0, 25.0]])  # sqrt(400) = 20 for both
    assert torch.allclose(nme(pred, t, None, "face_box", IBUG68, face_box=boxes), expected_err / 20.0)
    assert torch.allclose(
        nme(pred, t, None, "face_box", IBUG68, face_box=torch.tensor([5.0, 2.0])), torch.tensor([1.0, 0.5])
    )


@pytest.mark.parametrize(("old", "new"), [("bbox", "landmark_box"), ("box", "face_box")])
def test_old_normaliser_names_are_refused_naming_the_new_ones(old: str, new: str):
    t = face68()[None]
    with pytest.raises(ValueError, match=f"'{old}' was renamed '{new}'.*landmark_box.*face_box"):
        nme(t, t, None, old, IBUG68, face_box=torch.tensor([1.0]))
    with pytest.raises(ValueError, match=f"renamed '{new}'"):
        LandmarkMetrics(normaliser=old)


def test_nme_visible_mask_and_undefined_normaliser():
    t = face68().expand(3, 68, 2).clone()
    pred = t.clone()
    vis = torch.ones(3, 68, dtype=torch.bool)
    pred[0, 5] += 1000.0  # invisible: ignored
    vis[0, 5] = False
    pred[0, 6] += torch.tensor([6.0, 8.0])  # visible: 10 px over 67 visible points
    vis[2, 45] = False  # outer corner not annotated: inter-ocular undefined
    got = nme(pred, t, vis, "inter_ocular", "ibug68", annotated=vis)
    assert torch.isclose(got[0], torch.tensor(10.0 / 67 / 40.0))
    assert got[1] == 0 and torch.isnan(got[2])
    # landmark_box uses the annotated ground-truth points only: dropping p8 (y = 90) shrinks the box to y in [10, 50]
    vis_b = torch.ones(1, 68, dtype=torch.bool)
    vis_b[0, 8] = False
    p = face68()[None].clone()
    q = p + torch.tensor([3.0, 4.0])
    assert torch.isclose(nme(q, p, vis_b, "landmark_box", "ibug68", annotated=vis_b)[0], torch.tensor(5.0 / math.sqrt(40 * 40)))
    none = torch.zeros(1, 68, dtype=torch.bool)
    assert torch.isnan(nme(q, p, none, "landmark_box", "ibug68", annotated=none)[0])


def test_nme_other_schemes_by_point_names():
    t = torch.zeros(1, 21, 2)
    t[0, AFLW21.index("left_eye_left")] = torch.tensor([0.0, 0.0])
    t[0, AFLW21.index("right_eye_right")] = torch.tensor([30.0, 40.0])
    t[0, AFLW21.index("left_eye_center")] = torch.tensor([5.0, 5.0])
    t[0, AFLW21.index("right_eye_center")] = torch.tensor([25.0, 5.0])
    pred = t + torch.tensor([0.0, 2.0])
    assert torch.isclose(nme(pred, t, None, "inter_ocular", "aflw21")[0], torch.tensor(2.0 / 50.0))
    assert torch.isclose(nme(pred, t, None, "inter_pupil", AFLW21)[0], torch.tensor(2.0 / 20.0))
    t5 = torch.tensor([[[10.0, 10.0], [30.0, 10.0], [20.0, 20.0], [12.0, 30.0], [28.0, 30.0]]])
    assert torch.isclose(
        nme(t5 + 1.0, t5, None, "inter_pupil", FIVE_POINT)[0], torch.tensor(math.sqrt(2) / 20.0)
    )
    with pytest.raises(ValueError, match="no eye points"):
        nme(t5, t5, None, "inter_ocular", FIVE_POINT)
    with pytest.raises(ValueError, match="unknown normaliser"):
        nme(t5, t5, None, "diag", FIVE_POINT)
    with pytest.raises(ValueError, match="has 68 points, got K=5"):
        nme(t5, t5, None, "landmark_box", "ibug68")
    with pytest.raises(ValueError, match="needs the per-sample face box"):
        nme(t5, t5, None, "face_box", FIVE_POINT)


def test_ced_auc_fr_hand_computed():
    nmes = [0.02, 0.04, 0.1]
    t, frac = ced_curve(nmes, 0.08, steps=9)
    assert torch.allclose(t, torch.arange(9, dtype=torch.float64) * 0.01)
    third = 1.0 / 3.0
    expected = torch.tensor(
        [0, 0, third, third, 2 * third, 2 * third, 2 * third, 2 * third, 2 * third], dtype=torch.float64
    )
    assert torch.allclose(frac, expected)
    # trapezoid on 0, 0.01, ..., 0.08: (0 + 1/6 + 1/3 + 1/2 + 4 * 2/3) * 0.01 / 0.08 = 0.458333
    assert math.isclose(auc_from_nmes(nmes, 0.08, steps=9), 0.0366666667 / 0.08, rel_tol=1e-6)
    # fine grid -> exact area: (1/3 * 0.02 + 2/3 * 0.04) / 0.08 = mean(max(0, 1 - nme / 0.08)) = 0.416667
    assert math.isclose(auc_from_nmes(nmes, 0.08, steps=8001), 5.0 / 12.0, abs_tol=2e-4)
    assert math.isclose(failure_rate(nmes, 0.08), third)
    assert failure_rate(nmes, 0.10) == 0.0  # 0.1 is not > 0.1
    with pytest.raises(ValueError, match="NaN"):
        ced_curve([0.1, float("nan")])


def test_nme_by_yaw_bins_and_balanced_mean():
    nmes = torch.tensor([0.01, 0.03, 0.05, 0.07, 0.2, 0.4])
    # 30 is in the first bin, 60 in the second; 95 is above 90: the AFLW2000-3D protocol (3DDFA's
    # |yaw| > 60) puts it in the last bin, so every image is scored
    yaws = torch.tensor([10.0, -30.0, 45.0, -60.0, 95.0, float("nan")])
    by_yaw = nme_by_yaw(nmes, yaws)
    assert by_yaw.means == pytest.approx([0.02, 0.06, 0.2])
    assert by_yaw.counts == [2, 2, 1]
    assert by_yaw.balanced == pytest.approx((0.02 + 0.06 + 0.2) / 3)
    closed = nme_by_yaw(nmes, yaws, open_last=False)  # 95 left out
    assert closed.counts == [2, 2, 0] and math.isnan(closed.means[2])
    assert closed.balanced == pytest.approx((0.02 + 0.06) / 2)


def test_nme_by_yaw_scores_every_aflw2000_image_in_the_published_bins():
    """1,312 / 383 / 305 images of AFLW2000-3D: yaws drawn with those bin sizes, including the
    |yaw| > 90 and exact-boundary cases; the bins partition all 2,000 samples."""
    g = torch.Generator().manual_seed(0)
    yaws = torch.cat([
        torch.rand(1310, generator=g) * 30, torch.tensor([0.0, -30.0]),
        30 + torch.rand(382, generator=g).clamp(min=1e-3) * 30, torch.tensor([60.0]),
        60 + torch.rand(300, generator=g).clamp(min=1e-3) * 30, torch.tensor([90.0, 95.0, -97.5, 120.0, -179.0]),
    ])
    signs = torch.where(torch.rand(2000, generator=g) < 0.5, -1.0, 1.0)
    nmes = torch.rand(2000, generator=g) * 0.1
    by_yaw = nme_by_yaw(nmes, yaws * signs)
    assert by_yaw.counts == [1312, 383, 305] and sum(by_yaw.counts) == 2000
    metric = LandmarkMetrics(normaliser="face_box")
    target = face68().expand(2000, 68, 2)
    pred = target + (nmes * 10.0)[:, None, None] * torch.tensor([0.6, 0.8])
    metric.update(pred, target, face_box=torch.full((2000,), 10.0), yaw=yaws * signs)
    out = metric.compute()
    assert [out[f"num_yaw_{k}"].item() for k in ("0_30", "30_60", "60_90")] == [1312, 383, 305]
    assert out["nme_yaw_balanced"].item() == pytest.approx(by_yaw.balanced, rel=1e-5)
    assert out["nme"].item() == pytest.approx(float(nmes.mean()), rel=1e-5)


def _batch(errors_px: list[float], size: float = 100.0):
    """Samples whose NME under the 'face_box' normaliser with box size ``size`` is ``errors_px / size``."""
    b = len(errors_px)
    target = face68().expand(b, 68, 2).clone()
    pred = target + torch.tensor(errors_px)[:, None, None] * torch.tensor([0.6, 0.8])
    return pred, target, torch.full((b,), size)


def test_landmark_metrics_compute():
    metric = LandmarkMetrics(normaliser="face_box", scheme="ibug68", auc_thresholds=(0.08, 0.096), ced_steps=9)
    # NMEs 0.025, 0.045, 0.09 (off the threshold grids, so float rounding cannot move a CED step)
    pred, target, box = _batch([2.5, 4.5, 9.0])
    vis = torch.ones(3, 68, dtype=torch.bool)
    metric.update(pred, target, vis, face_box=box, yaw=torch.tensor([10.0, 40.0, -80.0]))
    out = metric.compute()
    assert out["nme"].item() == pytest.approx((0.025 + 0.045 + 0.09) / 3, rel=1e-5)
    # CED on 0, 0.01, ..., 0.08: 0, 0, 0, 1/3, 1/3, 2/3, 2/3, 2/3, 2/3 -> trapezoid 0.03 / 0.08
    assert out["auc@0.08"].item() == pytest.approx(0.375, rel=1e-5)
    # on 0, 0.012, ..., 0.096: 0, 0, 0, 1/3, 2/3, 2/3, 2/3, 2/3, 1
    # -> (1/6 + 1/2 + 3 * 2/3 + 5/6) * 0.012 / 0.096
    assert out["auc@0.096"].item() == pytest.approx(0.042 / 0.096, rel=1e-5)
    assert out["fr@0.08"].item() == pytest.approx(1 / 3) and out["fr@0.10"].item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert out["nme_yaw_0_30"].item() == pytest.approx(0.025, rel=1e-5)
    assert out["nme_yaw_30_60"].item() == pytest.approx(0.045, rel=1e-5)
    assert out["nme_yaw_60_90"].item() == pytest.approx(0.09, rel=1e-5)
    assert out["nme_yaw_balanced"].item() == pytest.approx((0.025 + 0.045 + 0.09) / 3, rel=1e-5)
    assert out["num_samples"].item() == 3 and out["num_skipped"].item() == 0
    # a sample with an undefined normaliser is skipped and counted
    metric2 = LandmarkMetrics(normaliser="inter_ocular")
    vis[1, 36] = False
    metric2.update(pred, target, vis, annotated=vis)
    out2 = metric2.compute()
    assert out2["num_samples"].item() == 2 and out2["num_skipped"].item() == 1
    assert "nme_yaw_balanced" not in out2
    with pytest.raises(ValueError, match="no eye points"):
        LandmarkMetrics(normaliser="inter_ocular", scheme="five_point")


def test_landmark_metrics_merge_equals_single_pass():
    pred, target, box = _batch([1.0, 3.0, 5.0, 7.5, 12.0])
    yaw = torch.tensor([5.0, 35.0, 65.0, -20.0, 50.0])
    single = LandmarkMetrics(normaliser="face_box")
    single.update(pred, target, face_box=box, yaw=yaw)
    a, b = LandmarkMetrics(normaliser="face_box"), LandmarkMetrics(normaliser="face_box")
    a.update(pred[:2], target[:2], face_box=box[:2], yaw=yaw[:2])
    b.update(pred[2:], target[2:], face_box=box[2:], yaw=yaw[2:])
    a.merge_state(b)
    merged, expected = a.compute(), single.compute()
    assert merged.keys() == expected.keys()
    for k in expected:
        assert torch.allclose(merged[k].float(), expected[k].float()), k


def test_normaliser_uses_annotated_points_even_when_occluded():
    from facelit.metrics.landmarks import nme

    target = torch.zeros(1, 68, 2)
    target[0, 36] = torch.tensor([10.0, 50.0])
    target[0, 45] = torch.tensor([50.0, 50.0])
    pred = target.clone()
    pred[0, 0] += torch.tensor([4.0, 0.0])
    visible = torch.zeros(1, 68, dtype=torch.bool)
    visible[0, 0] = True  # the outer eye corners are occluded, the jaw point is visible
    assert torch.allclose(nme(pred, target, visible, "inter_ocular", "ibug68"), torch.tensor([0.1]))
    only_visible = nme(pred, target, visible, "inter_ocular", "ibug68", annotated=visible)
    assert torch.isnan(only_visible).all()
