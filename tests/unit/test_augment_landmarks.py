"""Face-crop augmentation: points follow the pixels, flips swap indices, pose labels stay exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from facelit.augment.geometry import dot_centroids, points_inside, render_gaussian_dots, rotation_matrix
from facelit.augment.landmarks import BatchedLandmarkAugment, LandmarkAugment, augment_pose
from facelit.batch import collate_crops
from facelit.geometry.pose import head_to_camera
from facelit.geometry.schemes import AFLW19, AFLW21, ANIMAL5, FIVE_POINT, IBUG68, LandmarkScheme

H, W = 48, 56
SIGMA = 1.5
PATHS = ("sample", "batch")


def _crop(seed: int, scheme: LandmarkScheme, dots: bool = True) -> dict[str, Any]:
    """A face-crop sample; with ``dots`` its image has one Gaussian dot per landmark channel."""
    g = torch.Generator().manual_seed(seed)
    k = scheme.num_points
    points = torch.stack(
        [W * (0.25 + 0.5 * torch.rand(k, generator=g)), H * (0.25 + 0.5 * torch.rand(k, generator=g))], -1
    )
    image = render_gaussian_dots(points[None], H, W, SIGMA)[0] if dots else torch.rand(3, H, W, generator=g)
    return {
        "image": image,
        "landmarks": points,
        "landmarks_visible": torch.rand(k, generator=g) > 0.2,
        "pose": torch.tensor([60.0, 40.0, 40.0]) * (2 * torch.rand(3, generator=g) - 1),
        "boxes": torch.tensor([W * 0.2, H * 0.2, W * 0.8, H * 0.8]),
        "identity": torch.tensor(seed),
    }


def _run(
    path: str, samples: list[dict[str, Any]], seed: int, scheme: LandmarkScheme, **kwargs: Any
) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    if path == "sample":
        aug = LandmarkAugment(scheme, **kwargs)
        return [aug(s, g) for s in samples]
    out = BatchedLandmarkAugment(scheme, **kwargs)(collate_crops(samples), g)
    return [{k: v[i] for k, v in out.items()} for i in range(len(samples))]


@pytest.mark.parametrize("path", PATHS)
def test_points_follow_dots(path: str) -> None:
    scheme = AFLW19
    perm = list(scheme.flip_perm)
    samples = [_crop(s, scheme) for s in range(6)]
    flips, checked = set(), 0
    for sample, out in zip(samples, _run(path, samples, 0, scheme, photometric=False), strict=True):
        flipped = bool(out["flipped"])
        flips.add(flipped)
        order = perm if flipped else list(range(scheme.num_points))
        found = dot_centroids(out["image"][None])[0][order]
        pts = out["landmarks"]
        scale = torch.linalg.det(out["affine"][:2, :2]).abs().sqrt()
        margin = 4 * SIGMA * scale + 1
        inside = (
            (pts[:, 0] > margin) & (pts[:, 0] < W - margin) & (pts[:, 1] > margin) & (pts[:, 1] < H - margin)
        )
        err = (found - pts).norm(dim=-1)[inside]
        assert (err < 1.0).all(), err
        checked += int(inside.sum())
        expected_visible = sample["landmarks_visible"][order] & points_inside(pts, H, W)
        assert torch.equal(out["landmarks_visible"], expected_visible)
        assert int(out["identity"]) == int(sample["identity"])
    assert flips == {True, False}
    assert checked >= 60


@pytest.mark.parametrize("scheme", [IBUG68, FIVE_POINT, AFLW21, AFLW19, ANIMAL5], ids=lambda s: s.name)
@pytest.mark.parametrize("path", PATHS)
def test_flip_mirrors_and_swaps_every_scheme(path: str, scheme: LandmarkScheme) -> None:
    sample = _crop(1, scheme, dots=False)
    out = _run(
        path,
        [sample],
        0,
        scheme,
        flip_p=1.0,
        rotation=0.0,
        scales=(1.0, 1.0),
        translation=0.0,
        photometric=False,
        hide_outside=False,
    )[0]
    perm = list(scheme.flip_perm)
    mirrored = sample["landmarks"].clone()
    mirrored[:, 0] = W - mirrored[:, 0]
    assert torch.allclose(out["landmarks"], mirrored[perm], atol=1e-4)
    assert torch.equal(out["landmarks_visible"], sample["landmarks_visible"][perm])
    assert torch.allclose(out["image"], sample["image"].flip(-1), atol=1e-4)
    b = sample["boxes"]
    assert torch.allclose(out["boxes"], torch.stack([W - b[2], b[1], W - b[0], b[3]]), atol=1e-4)
    y, p, r = sample["pose"].tolist()
    assert torch.allclose(out["pose"], torch.tensor([-y, p, -r]), atol=1e-3)


@pytest.mark.parametrize("path", PATHS)
def test_identity_settings_change_nothing(path: str) -> None:
    sample = _crop(2, FIVE_POINT, dots=False)
    out = _run(
        path,
        [sample],
        0,
        FIVE_POINT,
        flip_p=0.0,
        rotation=0.0,
        scales=(1.0, 1.0),
        translation=0.0,
        photometric=False,
    )[0]
    assert torch.allclose(out["image"], sample["image"], atol=1e-4)
    assert torch.allclose(out["landmarks"], sample["landmarks"], atol=1e-4)
    assert torch.allclose(out["pose"], sample["pose"], atol=1e-3)
    assert torch.equal(out["landmarks_visible"], sample["landmarks_visible"])


@pytest.mark.parametrize("path", PATHS)
def test_points_leaving_the_image_become_invisible(path: str) -> None:
    samples = [_crop(s, IBUG68, dots=False) for s in range(4)]
    kwargs = dict(translation=0.6, photometric=True)
    hidden = _run(path, samples, 3, IBUG68, **kwargs)
    kept = _run(path, samples, 3, IBUG68, hide_outside=False, **kwargs)
    outside = 0
    for sample, a, b in zip(samples, hidden, kept, strict=True):
        order = list(IBUG68.flip_perm) if bool(a["flipped"]) else list(range(68))
        inside = points_inside(a["landmarks"], H, W)
        outside += int((~inside).sum())
        assert torch.equal(a["landmarks_visible"], sample["landmarks_visible"][order] & inside)
        assert torch.equal(b["landmarks_visible"], sample["landmarks_visible"][order])
        assert 0.0 <= a["image"].min() and a["image"].max() <= 1.0
    assert outside > 0


def test_in_plane_rotation_sign_against_pose_convention() -> None:
    # A frontal head: rotating the image counter-clockwise by theta shows a head rolled by -theta
    # (facelit.geometry.pose: positive roll turns the face clockwise in the image).
    theta = torch.tensor([20.0])
    head = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.5, 0.3, 0.2]]).T  # (3, N) head points
    rotated_image = rotation_matrix(theta)[0, :2, :2] @ (head_to_camera(torch.zeros(3)) @ head)[:2]
    new_pose = augment_pose(torch.zeros(1, 3), theta, torch.tensor([False]))
    assert torch.allclose(new_pose, torch.tensor([[0.0, 0.0, -20.0]]), atol=1e-4)
    assert torch.allclose((head_to_camera(new_pose[0]) @ head)[:2], rotated_image, atol=1e-5)


def test_augment_pose_is_exact_for_any_pose() -> None:
    g = torch.Generator().manual_seed(0)
    n = 16
    pose = torch.tensor([60.0, 40.0, 40.0]) * (2 * torch.rand(n, 3, generator=g) - 1)
    angle = 60 * torch.rand(n, generator=g) - 30
    flipped = torch.rand(n, generator=g) > 0.5
    new_pose = augment_pose(pose, angle, flipped)
    head = torch.randn(3, 7, generator=g)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    fx = torch.where(flipped[:, None, None], mirror, torch.eye(3))
    image = (head_to_camera(pose) @ head)[:, :2]  # (n, 2, 7) orthographic projection
    expected = rotation_matrix(angle)[:, :2, :2] @ fx[:, :2, :2] @ image
    # The flipped image shows the mirrored head model under the new (proper) rotation.
    assert torch.allclose((head_to_camera(new_pose) @ fx @ head)[:, :2], expected, atol=1e-4)


@pytest.mark.parametrize("path", PATHS)
def test_pose_labels_follow_the_image_end_to_end(path: str) -> None:
    samples = [_crop(s, FIVE_POINT, dots=False) for s in range(6)]
    head = torch.randn(3, 5, generator=torch.Generator().manual_seed(4))
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    for sample, out in zip(samples, _run(path, samples, 1, FIVE_POINT), strict=True):
        linear = out["affine"][:2, :2]  # = scale * R(angle) * Fx: what the warp did to image vectors
        scale = torch.linalg.det(linear).abs().sqrt()
        model = mirror @ head if bool(out["flipped"]) else head
        before = (head_to_camera(sample["pose"]) @ head)[:2]
        after = (head_to_camera(out["pose"]) @ model)[:2]
        assert torch.allclose(linear @ before, scale * after, atol=1e-3)


@pytest.mark.parametrize("path", PATHS)
def test_deterministic_with_generator(path: str) -> None:
    samples = [_crop(s, FIVE_POINT, dots=False) for s in range(3)]
    a = _run(path, samples, 7, FIVE_POINT)
    b = _run(path, samples, 7, FIVE_POINT)
    c = _run(path, samples, 8, FIVE_POINT)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["landmarks"], y["landmarks"])
    assert any(not torch.equal(x["affine"], z["affine"]) for x, z in zip(a, c, strict=True))


def test_output_size_and_bad_input() -> None:
    sample = _crop(3, FIVE_POINT, dots=False)
    out = LandmarkAugment(
        "five_point", output_size=(32, 40), flip_p=0.0, rotation=0.0, scales=(1.0, 1.0), translation=0.0
    )(sample)
    assert out["image"].shape == (3, 32, 40)
    # Centred: the input centre maps to the output centre.
    assert torch.allclose(out["affine"][:2, 2], torch.tensor([20.0 - W / 2, 16.0 - H / 2]), atol=1e-5)
    aug = LandmarkAugment(IBUG68)
    with pytest.raises(ValueError, match="landmarks"):
        aug(sample)
    with pytest.raises(ValueError, match="visible"):
        LandmarkAugment(FIVE_POINT)({**sample, "landmarks_visible": torch.ones(5)})
    with pytest.raises(KeyError, match="unknown landmark scheme"):
        LandmarkAugment("ibug69")
    with pytest.raises(ValueError, match="scales"):
        BatchedLandmarkAugment(FIVE_POINT, scales=(0.0, 1.0))
