"""Five-point alignment: template frame, Umeyama closed form, warped pixels land on the template."""

from __future__ import annotations

import math

import pytest
import torch

from facelit.augment.geometry import dot_centroids, render_gaussian_dots, transform_points
from facelit.geometry.align import align_faces, alignment_template, umeyama_similarity


def test_template_in_area_frame() -> None:
    t = alignment_template()
    # MATLAB pixel 30.2946 (1-based centre coordinates) is 29.7946 in the area frame
    assert t[0].tolist() == pytest.approx([29.7946, 51.1963], abs=1e-4)
    assert t[4].tolist() == pytest.approx([62.2299, 91.7041], abs=1e-4)
    wide = alignment_template(name="112x112")
    assert torch.allclose(wide[:, 0], t[:, 0] + 8) and torch.allclose(wide[:, 1], t[:, 1])
    assert torch.allclose(alignment_template(56, 48), t / 2)


def _similarity(angle: float, scale: float, tx: float, ty: float) -> torch.Tensor:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_umeyama_recovers_exact_similarity() -> None:
    torch.manual_seed(0)
    src = torch.rand(3, 5, 2, dtype=torch.float64) * 100
    truth = torch.stack(
        [
            _similarity(0.3, 1.7, 5.0, -3.0),
            _similarity(-2.0, 0.4, 40.0, 2.0),
            _similarity(math.pi, 1.0, 0.0, 0.0),
        ]
    )
    dst = transform_points(truth, src)
    assert torch.allclose(umeyama_similarity(src, dst), truth, atol=1e-9)


def test_umeyama_equals_linear_least_squares() -> None:
    """A similarity is linear in (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty."""
    torch.manual_seed(1)
    src = torch.rand(1, 5, 2, dtype=torch.float64) * 50
    dst = torch.rand(5, 2, dtype=torch.float64) * 50
    x, y = src[0, :, 0], src[0, :, 1]
    one, zero = torch.ones(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    design = torch.cat([torch.stack([x, -y, one, zero], 1), torch.stack([y, x, zero, one], 1)])
    a, b, tx, ty = torch.linalg.lstsq(design, torch.cat([dst[:, 0], dst[:, 1]])[:, None]).solution[:, 0]
    expected = torch.tensor([[a, -b, tx], [b, a, ty], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(umeyama_similarity(src, dst)[0], expected, atol=1e-9)


def test_umeyama_never_reflects_and_ignores_zero_weights() -> None:
    src = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    mirrored = src * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    m = umeyama_similarity(src, mirrored[0])
    assert torch.linalg.det(m[0, :2, :2]) >= 0
    outlier = torch.cat([src, torch.tensor([[[9.0, 9.0]]], dtype=torch.float64)], 1)
    target = torch.cat([src, torch.tensor([[[-50.0, 70.0]]], dtype=torch.float64)], 1)
    weights = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(umeyama_similarity(outlier, target, weights)[0], torch.eye(3, dtype=torch.float64))


def test_aligned_pixels_land_on_the_template() -> None:
    """Dots drawn at the landmarks of a rotated, scaled face end up at the template positions."""
    template = alignment_template(112, 96).double()
    truth = torch.stack([_similarity(0.4, 1.6, 30.0, -20.0), _similarity(-0.2, 2.2, -40.0, 10.0)])
    landmarks = transform_points(torch.linalg.inv(truth), template.expand(2, 5, 2)).float()
    dots = render_gaussian_dots(landmarks, 200, 180, sigma=3.0)  # (2, 5, H, W), one channel per point
    aligned, _, moved = align_faces(dots, landmarks, size=(112, 96))  # any channel count warps
    got = dot_centroids(aligned)
    assert torch.allclose(got, template.float().expand(2, 5, 2), atol=0.05)
    assert torch.allclose(moved, template.float().expand(2, 5, 2), atol=1e-3)
    assert aligned.shape == (2, 5, 112, 96)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown alignment template"):
        alignment_template(name="128x128")
    with pytest.raises(ValueError, match=r"landmarks must be \(B, 5, 2\)"):
        align_faces(torch.rand(1, 3, 20, 20), torch.rand(1, 68, 2))
    with pytest.raises(ValueError, match="at least two weighted points"):
        umeyama_similarity(torch.rand(1, 5, 2), torch.rand(5, 2), torch.tensor([[1.0, 0, 0, 0, 0]]))
