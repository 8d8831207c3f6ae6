"""RetinaFace detection augmentation: ground truth stays on the pixels, on both paths.

The consistency tests render every face of a scene into its own channels (a filled rectangle for the
box, one Gaussian dot per landmark), augment, and find the rectangles and dots again in the output
image. The per-sample (CPU) and batched (device) paths go through the same parametrised tests.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from kornia.color import hsv_to_rgb, rgb_to_hsv

from facelit.augment.detection import BatchedDetectionAugment, DetectionAugment, sample_square_crops
from facelit.augment.geometry import dot_centroids, render_gaussian_dots
from facelit.augment.photometric import (
    PhotometricDistort,
    adjust_brightness,
    adjust_hue,
    adjust_saturation,
    photometric_distort,
    sample_photometric_params,
)
from facelit.batch import collate_detections
from facelit.geometry.schemes import FIVE_POINT
from tests.unit.test_wider_readers import tiny_root  # noqa: F401  (pytest fixture)

H, W, S = 72, 88, 64
SIGMA = 1.5
CH = 6  # channels per face: rectangle + 5 dots
SLOTS = 4  # faces per scene at most
PATHS = ("sample", "batch")
PERM = list(FIVE_POINT.flip_perm)


def _scene(seed: int, n: int, channels_per_face: bool = True) -> dict[str, Any]:
    """A sample with ``n`` faces; its image holds each face's rectangle and dots in own channels."""
    g = torch.Generator().manual_seed(seed)
    size = torch.randint(14, 30, (n, 2), generator=g).float()
    x1 = torch.floor(torch.rand(n, generator=g) * (W - 8 - size[:, 0])) + 4
    y1 = torch.floor(torch.rand(n, generator=g) * (H - 8 - size[:, 1])) + 4
    boxes = torch.stack([x1, y1, x1 + size[:, 0], y1 + size[:, 1]], dim=-1)
    frac = 0.2 + 0.6 * torch.rand(n, 5, 2, generator=g)
    landmarks = boxes[:, None, :2] + frac * size[:, None]
    landmarks_valid = torch.ones(n, dtype=torch.bool)
    if n > 1:
        landmarks_valid[1] = False
    mesh = torch.cat([landmarks, torch.randn(n, 5, 1, generator=g) * 5], dim=-1)
    sample: dict[str, Any] = {
        "boxes": boxes,
        "landmarks": landmarks * landmarks_valid[:, None, None],
        "landmarks_valid": landmarks_valid,
        "landmarks_visible": torch.rand(n, 5, generator=g) > 0.3,
        "mesh": mesh,
        "mesh_valid": torch.ones(n, dtype=torch.bool),
        "ignore": torch.zeros(n, dtype=torch.bool),
        "difficulty": torch.rand(n, 3, generator=g) > 0.5,
        "meta": {"seed": seed},
    }
    if channels_per_face:
        rect = torch.zeros(n, H, W)
        for f in range(n):  # test fixture only: draw each rectangle
            a, b, c, d = boxes[f].long().tolist()
            rect[f, b:d, a:c] = 1.0
        dots = render_gaussian_dots(landmarks.reshape(1, n * 5, 2), H, W, SIGMA).reshape(n, 5, H, W)
        image = torch.zeros(SLOTS * CH, H, W)  # one channel count for every scene, so scenes collate
        image[: n * CH] = torch.cat([rect[:, None], dots], dim=1).reshape(n * CH, H, W)
        sample["image"] = image
    else:
        sample["image"] = torch.rand(3, H, W, generator=g)
    return sample


def _run(path: str, samples: list[dict[str, Any]], seed: int, **kwargs: Any) -> list[dict[str, Any]]:
    """Augment ``samples`` on one path; return per-sample outputs with kept faces only.

    Batched outputs also carry ``padded_valid`` (M,) so the masks of dropped faces can be checked.
    """
    g = torch.Generator().manual_seed(seed)
    if path == "sample":
        aug = DetectionAugment(**kwargs)
        return [aug(s, g) for s in samples]
    batch = BatchedDetectionAugment(**kwargs)(collate_detections(samples), g)
    outs = []
    for i in range(len(samples)):
        keep = batch["valid"][i]
        out = {
            k: batch[k][i][keep]
            for k in (
                "boxes",
                "landmarks",
                "landmarks_valid",
                "landmarks_visible",
                "mesh",
                "mesh_valid",
                "ignore",
                "difficulty",
            )
        }
        out.update(
            image=batch["image"][i],
            affine=batch["affine"][i],
            flipped=batch["flipped"][i],
            num_small=batch["num_small"][i],
            padded_valid=keep,
            padded=batch,
            index=i,
        )
        outs.append(out)
    return outs


def _expected_keep(sample: dict[str, Any], affine: torch.Tensor) -> torch.Tensor:
    """Faces whose box centre is strictly inside the crop window that ``affine`` maps onto the output."""
    corners = torch.tensor([[0.0, 0.0, 1.0], [S, S, 1.0]]).T
    window = torch.linalg.solve(affine.double(), corners.double())[:2].T  # two opposite corners
    lo = torch.round(window.amin(0) * 1e3) / 1e3
    hi = torch.round(window.amax(0) * 1e3) / 1e3
    centre = (sample["boxes"][:, :2] + sample["boxes"][:, 2:]) / 2
    return ((centre > lo) & (centre < hi)).all(-1)


def _check_faces_on_pixels(sample: dict[str, Any], out: dict[str, Any]) -> int:
    """Assert rectangles, dots, masks and mesh of ``out`` agree with its image; return dots checked."""
    keep = _expected_keep(sample, out["affine"])
    if "padded_valid" in out:
        pv = out["padded_valid"]
        assert torch.equal(pv[: keep.numel()], keep) and not pv[keep.numel() :].any()
        padded = out["padded"]
        for key in ("landmarks_valid", "mesh_valid", "ignore"):
            assert not padded[key][out["index"]][~pv].any(), key
    src = keep.nonzero()[:, 0]
    assert out["boxes"].shape[0] == src.numel()
    flipped = bool(out["flipped"])
    perm = PERM if flipped else list(range(5))
    image = out["image"]
    scale = out["affine"][0, 0].abs().item()
    margin = 4 * SIGMA * scale + 1
    centroids = dot_centroids(image[None])[0].reshape(SLOTS, CH, 2)
    checked = 0
    for row, f in enumerate(src.tolist()):  # a handful of faces: test-side loop over assertions
        region = image[f * CH] > 0.5
        ys, xs = region.nonzero(as_tuple=True)
        extent = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
        assert torch.allclose(out["boxes"][row], extent, atol=1.0), (out["boxes"][row], extent)
        assert bool(out["landmarks_valid"][row]) == bool(sample["landmarks_valid"][f])
        assert torch.equal(out["landmarks_visible"][row], sample["landmarks_visible"][f][perm])
        assert torch.equal(out["difficulty"][row], sample["difficulty"][f])
        pts = out["landmarks"][row]
        if sample["landmarks_valid"][f]:
            found = centroids[f, 1:][perm]  # dot channels in the order of the output points
            inside = ((pts > margin) & (pts < S - margin)).all(-1)
            err = (found - pts).norm(dim=-1)[inside]
            assert (err < 1.0).all(), err
            checked += int(inside.sum())
            # Mesh vertex v sat on landmark v: mirrored in place, so it now sits on output point perm[v].
            assert torch.allclose(out["mesh"][row, :, :2], pts[perm], atol=1e-4)
        moved = sample["mesh"][f, :, :2] @ out["affine"][:2, :2].T + out["affine"][:2, 2]
        assert torch.allclose(out["mesh"][row, :, :2], moved, atol=1e-4)
        assert torch.allclose(out["mesh"][row, :, 2], sample["mesh"][f, :, 2] * scale, atol=1e-4)
    return checked


@pytest.mark.parametrize("path", PATHS)
def test_ground_truth_follows_pixels(path: str) -> None:
    flips, checked = set(), 0
    for seed in range(5):
        samples = [_scene(10 * seed, 3), _scene(10 * seed + 1, 4)]
        for sample, out in zip(
            samples, _run(path, samples, seed, output_size=S, photometric=False), strict=True
        ):
            assert out["image"].shape == (sample["image"].shape[0], S, S)
            checked += _check_faces_on_pixels(sample, out)
            flips.add(bool(out["flipped"]))
    assert flips == {True, False}
    assert checked >= 20


@pytest.mark.parametrize("path", PATHS)
def test_flip_swaps_landmark_indices(path: str) -> None:
    sample = _scene(3, 2)
    kwargs = dict(output_size=S, photometric=False, crop_scales=(1.0, 1.0))
    plain = _run(path, [sample], 0, flip_p=0.0, **kwargs)[0]
    flipped = _run(path, [sample], 0, flip_p=1.0, **kwargs)[0]
    assert bool(flipped["flipped"]) and not bool(plain["flipped"])
    assert torch.isclose(flipped["affine"][0, 0], -plain["affine"][0, 0])
    mirrored = plain["landmarks"].clone()
    mirrored[..., 0] = S - mirrored[..., 0]
    assert torch.allclose(flipped["landmarks"], mirrored[:, PERM], atol=1e-4)
    assert torch.equal(flipped["landmarks_visible"], plain["landmarks_visible"][:, PERM])
    b = plain["boxes"]
    assert torch.allclose(
        flipped["boxes"], torch.stack([S - b[:, 2], b[:, 1], S - b[:, 0], b[:, 3]], -1), atol=1e-4
    )


@pytest.mark.parametrize("path", PATHS)
def test_zero_face_image_passes_through(path: str) -> None:
    empty = _scene(5, 0, channels_per_face=False)
    full = _scene(6, 2, channels_per_face=False)
    outs = _run(path, [empty, full] if path == "batch" else [empty], 1, output_size=S)
    out = outs[0]
    assert out["image"].shape == (3, S, S)
    assert (
        out["boxes"].shape == (0, 4)
        and out["landmarks"].shape == (0, 5, 2)
        and out["mesh"].shape == (0, 5, 3)
    )
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0


@pytest.mark.parametrize("path", PATHS)
def test_deterministic_with_generator(path: str) -> None:
    samples = [_scene(7, 3, channels_per_face=False), _scene(8, 2, channels_per_face=False)]
    a = _run(path, samples, 123, output_size=S)
    b = _run(path, samples, 123, output_size=S)
    c = _run(path, samples, 124, output_size=S)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["boxes"], y["boxes"])
        assert torch.equal(x["landmarks"], y["landmarks"]) and torch.equal(x["affine"], y["affine"])
    assert any(not torch.equal(x["affine"], z["affine"]) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("path", PATHS)
def test_min_face_drops_and_counts_small_faces(path: str) -> None:
    sample = _scene(9, 2, channels_per_face=False)
    sample["boxes"] = torch.tensor([[10.0, 10.0, 40.0, 44.0], [50.0, 20.0, 54.0, 23.0]])
    kwargs = dict(output_size=H, crop_scales=(1.0, 1.0), flip_p=0.0, photometric=False, min_face=5.0)
    sample["image"] = sample["image"][:, :, :H]
    for key in ("landmarks", "mesh"):
        sample[key] = sample[key].clamp(0, H - 1)
    out = _run(path, [sample], 0, **kwargs)[0]
    assert int(out["num_small"]) == 1
    assert torch.allclose(out["boxes"], sample["boxes"][:1])


@pytest.mark.parametrize("path", PATHS)
def test_fallback_pads_full_image_to_square(path: str) -> None:
    sample = _scene(11, 1, channels_per_face=False)
    sample["boxes"] = torch.tensor([[2.0, 2.0, W - 2.0, H - 2.0]])  # fits in no crop below full size
    out = _run(path, [sample], 0, output_size=W, crop_scales=(0.3, 0.5), flip_p=0.0, photometric=False)[0]
    assert torch.allclose(out["affine"], torch.eye(3), atol=1e-6)
    assert torch.allclose(out["boxes"], sample["boxes"])
    assert torch.allclose(out["image"][:, : H - 1], sample["image"][:, : H - 1], atol=1e-5)
    assert torch.all(out["image"][:, H + 1 :] == 0.0)


def test_crop_search_keeps_a_small_face() -> None:
    boxes = torch.tensor([[[70.0, 50.0, 76.0, 56.0]]])
    crops = sample_square_crops(
        boxes,
        torch.ones(1, 1, dtype=torch.bool),
        100,
        100,
        64,
        (0.3, 0.3),
        250,
        generator=torch.Generator().manual_seed(0),
    )
    assert bool(crops.found[0]) and crops.side[0] == 30
    assert crops.x0[0] <= 70 and crops.x0[0] + 30 >= 76 and crops.y0[0] <= 50 and crops.y0[0] + 30 >= 56
    one_try = sample_square_crops(
        boxes,
        torch.ones(1, 1, dtype=torch.bool),
        100,
        100,
        64,
        (0.3, 0.3),
        1,
        generator=torch.Generator().manual_seed(1),
    )
    if not bool(one_try.found[0]):
        assert one_try.side[0] == 100 and one_try.x0[0] == 0


@pytest.mark.parametrize("path", PATHS)
def test_mesh_flip_perm_reorders_vertices(path: str) -> None:
    sample = _scene(12, 2)
    out = _run(
        path,
        [sample],
        0,
        output_size=S,
        photometric=False,
        flip_p=1.0,
        crop_scales=(1.0, 1.0),
        mesh_flip_perm=torch.tensor(PERM),
    )[0]
    assert torch.allclose(out["mesh"][0, :, :2], out["landmarks"][0], atol=1e-4)


def test_bad_input_raises() -> None:
    aug = DetectionAugment(output_size=S, photometric=False)
    sample = _scene(13, 2)
    with pytest.raises(ValueError, match="landmarks"):
        aug({**sample, "landmarks": torch.zeros(2, 4, 2)})
    with pytest.raises(ValueError, match="bool"):
        aug({**sample, "ignore": torch.zeros(2)})
    with pytest.raises(ValueError, match="image"):
        aug({**sample, "image": torch.zeros(H, W)})
    with pytest.raises(ValueError, match="crop_scales"):
        DetectionAugment(crop_scales=(0.0, 1.0))
    with pytest.raises(ValueError, match="RGB"):
        DetectionAugment(output_size=S)(sample)  # photometric on a 24-channel image
    with pytest.raises(ValueError, match="vertices"):
        DetectionAugment(output_size=S, photometric=False, mesh_flip_perm=torch.arange(7))(sample)


# --- photometric distortion (the recipe's colour step) -------------------------------------------


def test_photometric_batched_equals_per_sample() -> None:
    images = torch.rand(4, 3, 8, 9)
    params = sample_photometric_params(4, generator=torch.Generator().manual_seed(0), p=0.7)
    batched = photometric_distort(images, params)
    for i in range(4):
        one = type(params)(*(getattr(params, f)[i : i + 1] for f in params.__dataclass_fields__))
        assert torch.allclose(photometric_distort(images[i], one), batched[i], atol=1e-6)
    assert 0.0 <= batched.min() and batched.max() <= 1.0


def test_photometric_is_pixelwise_and_random_per_sample() -> None:
    images = torch.rand(6, 3, 10, 10)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    shuffled = images.flatten(2)[..., perm].reshape(6, 3, 10, 10)
    distort = PhotometricDistort(p=1.0)
    a = distort(images, torch.Generator().manual_seed(5))
    b = distort(shuffled, torch.Generator().manual_seed(5))
    assert torch.allclose(a.flatten(2)[..., perm], b.flatten(2), atol=1e-5)
    same_input = distort(images[:1].expand(6, -1, -1, -1), torch.Generator().manual_seed(5))
    assert not torch.allclose(same_input[0], same_input[1])


def test_photometric_closed_forms() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).reshape(3, 1, 1)
    assert torch.allclose(
        adjust_hue(red, 1.0 / 3.0), torch.tensor([0.0, 1.0, 0.0]).reshape(3, 1, 1), atol=1e-5
    )
    assert torch.allclose(adjust_brightness(torch.full((3, 2, 2), 0.9), 0.2), torch.ones(3, 2, 2))
    image = torch.rand(2, 3, 5, 5)
    factor = torch.tensor([0.6, 1.4])
    hsv = rgb_to_hsv(image)
    hsv[:, 1] = (hsv[:, 1] * factor[:, None, None]).clamp(0, 1)
    assert torch.allclose(adjust_saturation(image, factor), hsv_to_rgb(hsv), atol=1e-4)
    for shift in (0.05, -0.09, 0.3, -0.45):
        hsv = rgb_to_hsv(image)
        hsv[:, 0] = torch.remainder(hsv[:, 0] + 2 * torch.pi * shift, 2 * torch.pi)
        assert torch.allclose(adjust_hue(image, shift), hsv_to_rgb(hsv), atol=1e-4)
    identity = sample_photometric_params(2, p=0.0)
    assert torch.allclose(photometric_distort(image, identity), image)


def test_gpu_augment_on_real_data_crops_from_the_original_image(tiny_root) -> None:  # noqa: F811
    """WIDER images of different sizes (640x500 red, 320x300 blue, 40x30 grey, solid colours) reach the
    device path at their own size; full-short-side crops then hold only image pixels (a constant
    image), never the bars a letterboxed canvas would add."""
    from datamodules.wider_face import WiderFaceDataModule

    dm = WiderFaceDataModule(
        data_dir=str(tiny_root), image_size=64, augment="gpu", batch_size=3, num_workers=0,
        crop_scales=(1.0, 1.0),
    )
    dm.setup("fit")
    batch = dm.collate_fn([dm.train_set[i] for i in range(3)])
    assert batch["image_size"].tolist() == [[500, 640], [300, 320], [30, 40]]
    assert batch["image"].shape == (3, 3, 500, 640)
    out = dm.batched_augment(batch, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (3, 3, 64, 64)
    spread = out["image"].flatten(2).std(dim=2)  # (B, C) spatial spread of each channel
    assert spread.max() < 2e-3, spread
    assert out["image"].flatten(1).max(1).values.min() > 0.02  # no image is (mostly) a black bar


def test_crop_resize_antialiases_and_matches_interpolate_when_enlarging() -> None:
    from facelit.augment.crop import crop_resize

    image = torch.rand(2, 3, 30, 40, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[5.0, 3.0, 25.0, 23.0], [0.0, 0.0, 40.0, 30.0]])
    up = crop_resize(image[:1], boxes[:1], 32)[0]
    ref = torch.nn.functional.interpolate(image[:1, :, 3:23, 5:25], size=(32, 32), mode="bilinear")[0]
    torch.testing.assert_close(up[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1])
    assert torch.equal(crop_resize(image[1], boxes[1], (30, 40)), image[1])  # identity is exact
    stripes = torch.zeros(1, 1, 48, 48)
    stripes[..., 1::2] = 1.0  # one-pixel stripes shrunk 3x: one centre sample aliases to 0/1 stripes,
    box = torch.tensor([[0.0, 0.0, 48.0, 48.0]])  # the anti-aliased average gives 1/3, 2/3
    aliased, smooth = crop_resize(stripes, box, 16, antialias=False), crop_resize(stripes, box, 16)
    torch.testing.assert_close(aliased[0, 0, 0, :2], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(smooth[0, 0, 0, :2], torch.tensor([1 / 3, 2 / 3]))
    filled = crop_resize(image[0], torch.tensor([-10.0, 0.0, 30.0, 30.0]), (30, 40), fill=0.25)
    assert torch.all(filled[:, :, :9] == 0.25) and torch.equal(filled[:, :, 11:], image[0, :, :, 1:30])
    with pytest.raises(ValueError, match="degenerate crop box 0"):
        crop_resize(image, torch.tensor([[5.0, 3.0, 5.0, 23.0], [0.0, 0.0, 1.0, 1.0]]), 8)
