"""Affine geometry in the pixel-area frame and its conversion to kornia's pixel-centre frame."""

from __future__ import annotations

import math

import kornia
import pytest
import torch
from kornia.geometry.subpix import render_gaussian2d, spatial_expectation2d

from facelit.augment.crop import crop_resize
from facelit.augment.geometry import (
    about_point,
    crop_resize_matrix,
    dot_centroids,
    from_kornia_frame,
    hflip_matrix,
    points_inside,
    render_gaussian_dots,
    rotation_matrix,
    scaling_matrix,
    similarity_scale,
    to_kornia_frame,
    transform_boxes,
    transform_points,
    translation_matrix,
    warp_image,
)


def _random_affine(batch: int, generator: torch.Generator) -> torch.Tensor:
    m = torch.eye(3).repeat(batch, 1, 1)
    m[:, :2, :] = torch.randn(batch, 2, 3, generator=generator)
    return m


def test_kornia_frame_round_trip_and_half_pixel() -> None:
    g = torch.Generator().manual_seed(0)
    m = _random_affine(4, g)
    assert torch.allclose(from_kornia_frame(to_kornia_frame(m)), m, atol=1e-6)
    # A pure scaling about our origin (the image corner) moves kornia's origin (the first pixel centre).
    k = to_kornia_frame(scaling_matrix(torch.tensor([2.0])))
    assert torch.allclose(k[0, :2, 2], torch.tensor([0.5, 0.5]))


def test_flip_matches_kornia_flip_matrix_and_image_flip() -> None:
    width = 7
    image = torch.rand(2, 3, 5, width)
    aug = kornia.augmentation.RandomHorizontalFlip(p=1.0)
    flipped = aug(image)
    ours = hflip_matrix(torch.full((2,), float(width)))
    assert torch.allclose(from_kornia_frame(aug.transform_matrix), ours)
    assert torch.allclose(warp_image(image, ours, (5, width)), flipped, atol=1e-6)
    assert torch.equal(flipped, image.flip(-1))
    pts = torch.tensor([[[0.0, 1.0], [7.0, 2.0], [3.25, 4.0]]]).repeat(2, 1, 1)
    assert torch.allclose(transform_points(ours, pts)[..., 0], width - pts[..., 0])


def test_warp_moves_dot_to_transformed_point_subpixel() -> None:
    h, w = 48, 56
    point = torch.tensor([[[20.3, 17.8]]])
    image = render_gaussian_dots(point, h, w, sigma=2.0)  # (1, 1, H, W)
    m = translation_matrix(torch.tensor([3.7]), torch.tensor([-2.2])) @ about_point(
        rotation_matrix(torch.tensor([25.0])) @ scaling_matrix(torch.tensor([1.3])),
        torch.tensor([[28.0, 24.0]]),
    )
    expected = transform_points(m, point)
    found = dot_centroids(warp_image(image, m, (h, w)))
    assert torch.allclose(found, expected, atol=0.05), (found, expected)
    # The same matrix given to kornia without the frame conversion misses by a visible fraction of a pixel.
    naive = kornia.geometry.transform.warp_affine(image, m[:, :2], (h, w), align_corners=True)
    assert (dot_centroids(naive) - expected).norm() > 0.2


def test_dot_helpers_agree_with_kornia_centre_frame() -> None:
    pts = torch.tensor([[[10.25, 7.5], [20.0, 14.75]]])
    ours = render_gaussian_dots(pts, 24, 32, sigma=1.5)
    theirs = render_gaussian2d(pts[0] - 0.5, torch.full((2, 2), 1.5), (24, 32), normalized_coordinates=False)
    prob = ours / ours.sum(dim=(-2, -1), keepdim=True)
    assert torch.allclose(prob[0], theirs / theirs.sum(dim=(-2, -1), keepdim=True), atol=1e-6)
    centre = spatial_expectation2d(prob, normalized_coordinates=False)
    assert torch.allclose(dot_centroids(ours), centre + 0.5, atol=1e-4)
    assert torch.allclose(dot_centroids(ours), pts, atol=1e-3)


def test_crop_resize_equals_warp_with_crop_matrix() -> None:
    """The one crop/resize (facelit.augment.crop) and the affine warp agree on the same crop matrix."""
    image = torch.rand(1, 3, 30, 40)
    x0, y0, side, out = 5, 3, 20, 32
    m = crop_resize_matrix(
        torch.tensor([float(x0)]),
        torch.tensor([float(y0)]),
        torch.tensor([float(side)]),
        torch.tensor([float(side)]),
        out,
        out,
    )
    warped = warp_image(image, m, (out, out))
    cropped = crop_resize(image, torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float32), out)
    assert torch.allclose(warped, cropped, atol=1e-5)


def test_crop_resize_pads_outside_with_fill() -> None:
    image = torch.rand(3, 10, 20)
    out = crop_resize(image, torch.tensor([0.0, 0.0, 20.0, 20.0]), (20, 20), fill=0.25)
    assert torch.allclose(out[:, :9], image[:, :9], atol=1e-6)
    assert torch.all(out[:, 11:] == 0.25)
    warped = warp_image(image[None], torch.eye(3)[None], (20, 20), fill=0.25)
    assert torch.allclose(warped[0], out, atol=1e-5)


def test_rotation_direction_and_scale() -> None:
    # Counter-clockwise on the screen (y down): a point to the right of the origin moves up.
    p = transform_points(rotation_matrix(torch.tensor([90.0])), torch.tensor([[[1.0, 0.0]]]))
    assert torch.allclose(p, torch.tensor([[[0.0, -1.0]]]), atol=1e-6)
    m = (
        rotation_matrix(torch.tensor([33.0]))
        @ scaling_matrix(torch.tensor([1.7]))
        @ hflip_matrix(torch.tensor([9.0]))
    )
    assert math.isclose(similarity_scale(m).item(), 1.7, rel_tol=1e-5)


def test_transform_boxes_flip_and_rotation() -> None:
    boxes = torch.tensor([[[2.0, 3.0, 6.0, 9.0]]])
    flipped = transform_boxes(hflip_matrix(torch.tensor([10.0])), boxes)
    assert torch.allclose(flipped, torch.tensor([[[4.0, 3.0, 8.0, 9.0]]]))
    rot = about_point(rotation_matrix(torch.tensor([90.0])), torch.tensor([[4.0, 6.0]]))
    # A 4 x 6 box rotated by 90 degrees about its centre becomes 6 x 4 around the same centre.
    assert torch.allclose(transform_boxes(rot, boxes), torch.tensor([[[1.0, 4.0, 7.0, 8.0]]]), atol=1e-5)


def test_points_inside_uses_half_open_area_frame() -> None:
    pts = torch.tensor([[0.0, 0.0], [9.999, 4.9], [10.0, 1.0], [-0.01, 1.0]])
    assert points_inside(pts, 5, 10).tolist() == [True, True, False, False]


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="points"):
        transform_points(torch.eye(3)[None], torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="matrices"):
        transform_points(torch.eye(3), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="boxes"):
        transform_boxes(torch.eye(3)[None], torch.zeros(1, 3))
    with pytest.raises(ValueError, match="image"):
        warp_image(torch.zeros(3, 4, 4), torch.eye(3)[None], (4, 4))
