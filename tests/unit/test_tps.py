"""TPS helpers: frame conversion, exact landing of keypoints, the image warp's output -> input
direction against kornia, masked/anchored fits, mean fill, folds."""

from __future__ import annotations

import pytest
import torch
from kornia.geometry.transform import warp_image_tps

from facelit.geometry.tps import (
    border_anchors,
    control_grid,
    fit_tps,
    fit_tps_anchored,
    fit_tps_masked,
    folds,
    from_normalised,
    map_points,
    pixel_grid,
    sampling_grid,
    similarity_lstsq,
    to_normalised,
    warp_image,
)

S = (48, 64)  # (H, W)
HUMAN = torch.tensor([[[24.5, 20.5], [39.5, 20.5], [32.0, 28.0], [26.0, 36.0], [38.0, 36.5]]])
ANIMAL = torch.tensor([[[18.3, 12.2], [45.2, 13.3], [30.6, 38.8], [27.1, 43.4], [36.6, 44.0]]])


def ramp(size: tuple[int, int]) -> torch.Tensor:
    """(1, 2, H, W) image whose channels hold the pixel-area x and y of each pixel centre."""
    ys, xs = torch.meshgrid(torch.arange(size[0]) + 0.5, torch.arange(size[1]) + 0.5, indexing="ij")
    return torch.stack([xs, ys])[None].double()


def test_normalised_frame_is_grid_sample_half_pixel():
    centres = torch.tensor([[0.5, 0.5], [63.5, 47.5]])
    expected = torch.tensor([[1 / 64 - 1, 1 / 48 - 1], [1 - 1 / 64, 1 - 1 / 48]])
    assert torch.allclose(to_normalised(centres, S), expected)
    assert torch.allclose(from_normalised(to_normalised(ANIMAL, S), S), ANIMAL)
    assert torch.allclose(pixel_grid(S, centres)[0], expected[0]) and pixel_grid(S, centres).shape == (
        48 * 64,
        2,
    )


@pytest.mark.parametrize("solver", ["standard", "kornia"])
def test_warped_keypoints_land_on_targets(solver):
    warp = fit_tps(to_normalised(HUMAN, S), to_normalised(ANIMAL, S), solver=solver)
    assert (map_points(warp, HUMAN, S, S) - ANIMAL).abs().max() < 1e-3  # pixels


def test_image_warp_is_fitted_output_to_input_and_matches_kornia():
    # The warped image shows, at every human keypoint, the input content at the animal keypoint.
    human = HUMAN.double().round() - 0.5 + 1.0  # on pixel centres of the output
    warp = fit_tps(to_normalised(human, S), to_normalised(ANIMAL.double(), S))
    out = warp_image(ramp(S), sampling_grid(warp, S), fill="zeros")
    cols, rows = (human[0] - 0.5).long().unbind(-1)
    assert (out[0][:, rows, cols].T - ANIMAL[0].double()).abs().max() < 1e-6
    # kornia's own image warp with the same spline (its convention: fitted output -> input, normalised frame)
    kornia_out = warp_image_tps(
        ramp(S), warp.centres, warp.kernel_weights, warp.affine_weights, align_corners=False
    )
    assert torch.allclose(out, kornia_out, atol=1e-6)


def test_identity_control_grid_gives_identity_warp():
    c = control_grid(5)[None]
    warp = fit_tps(c, c.clone())
    image = torch.rand(1, 3, *S)
    assert torch.allclose(sampling_grid(warp, S).reshape(-1, 2), pixel_grid(S, image), atol=1e-6)
    assert torch.allclose(warp_image(image, sampling_grid(warp, S)), image, atol=1e-5)


def test_masked_fit_equals_fit_on_used_pairs():
    src, dst = to_normalised(HUMAN, S).repeat(2, 1, 1), to_normalised(ANIMAL, S).repeat(2, 1, 1)
    mask = torch.tensor([[True, True, True, True, True], [True, False, True, True, False]])
    masked = fit_tps_masked(src, dst, mask)
    probe = torch.rand(2, 50, 2) * 2 - 1
    assert torch.allclose(masked(probe)[:1], fit_tps(src[:1], dst[:1])(probe[:1]), atol=1e-5)
    used = mask[1]
    assert torch.allclose(masked(probe)[1:], fit_tps(src[1:, used], dst[1:, used])(probe[1:]), atol=1e-5)
    with pytest.raises(ValueError, match="fewer than 3"):
        fit_tps_masked(src, dst, torch.tensor([[True] * 5, [True, True, False, False, False]]))


def test_similarity_and_anchored_fit():
    angle, scale, shift = torch.tensor(0.3), 1.7, torch.tensor([0.1, -0.2])
    rot = scale * torch.stack(
        [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
    )
    src = to_normalised(HUMAN, S).double()
    dst = src @ rot.double().T + shift.double()
    mask = torch.ones(1, 5, dtype=torch.bool)
    sim = similarity_lstsq(src, dst, mask)
    assert torch.allclose(sim[0, :, :2], rot.double(), atol=1e-9) and torch.allclose(
        sim[0, :, 2], shift.double()
    )
    # an exact similarity is reproduced everywhere, border anchors included
    warp = fit_tps_anchored(src, dst, mask)
    probe = torch.rand(1, 40, 2).double() * 2 - 1
    assert torch.allclose(warp(probe), probe @ rot.double().T + shift.double(), atol=1e-6)
    # a deformation: still exact on the used pairs, and the border follows the similarity of the pairs
    bent = to_normalised(ANIMAL, S).double()
    mask = torch.tensor([[True, True, True, False, True]])
    warp = fit_tps_anchored(src, bent, mask)
    assert (warp(src)[mask] - bent[mask]).abs().max() < 1e-6
    sim = similarity_lstsq(src, bent, mask)
    anchors = border_anchors(src)[None]
    assert torch.allclose(
        warp(anchors), anchors @ sim[:, :, :2].transpose(1, 2) + sim[:, None, :, 2], atol=1e-6
    )


def test_mean_fill_outside_the_input():
    image = torch.rand(2, 3, *S)
    far = torch.full((2, *S, 2), 5.0)  # every output pixel samples far outside the input
    assert torch.allclose(
        warp_image(image, far), image.mean(dim=(2, 3), keepdim=True).expand_as(image), atol=1e-6
    )
    assert warp_image(image, far, fill="zeros").abs().max() == 0


def test_folds():
    grid = pixel_grid(S, torch.zeros(())).reshape(1, *S, 2)
    mirrored = grid * torch.tensor([-1.0, 1.0])
    assert folds(torch.cat([grid, mirrored])).tolist() == [False, True]


def test_gradients_reach_the_control_offsets():
    c = control_grid(5)[None]
    offsets = torch.zeros_like(c, requires_grad=True)
    warp = fit_tps(c, c + offsets)
    warp_image(torch.rand(1, 3, 16, 16), sampling_grid(warp, (16, 16))).sum().backward()
    assert offsets.grad is not None and offsets.grad.abs().sum() > 0


def test_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        fit_tps(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="one shape"):
        fit_tps(torch.zeros(1, 4, 2), torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="solver"):
        fit_tps(HUMAN, ANIMAL, solver="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fill"):
        warp_image(torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4, 2), fill="edge")  # type: ignore[arg-type]
