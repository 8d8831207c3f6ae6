"""Synthetic video clips (facelit.synth.video): contract, determinism, smooth motion, large poses,
occluder passages, scheme subsets, and the crop renderer's draw hook they are built on."""

from __future__ import annotations

import pytest
import torch

from facelit.synth import (
    VIDEO_DOMAIN,
    SyntheticClipDataset,
    get_domain,
    render_clip,
    render_clips,
    render_crops,
)
from facelit.synth.crops import CROP_DRAWS, render_crops_from_draws
from facelit.synth.rng import generator
from facelit.synth.video import _IDENTITY, _POSE, ClipMotion, _bspline_basis, _clip_draws, smooth_paths

SIZE = 32  # small crops: the tests check labels and structure, not looks


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips() -> list[dict]:
    return render_clips(0, list(range(8)), length=16, size=SIZE)


def test_clip_contract(clips):
    c = clips[0]
    t, k = 16, 68
    assert c["image"].shape == (t, 3, SIZE, SIZE) and c["image"].dtype == torch.float32
    assert 0.0 <= float(c["image"].min()) and float(c["image"].max()) <= 1.0
    assert c["landmarks"].shape == (t, k, 2) and c["landmarks_visible"].shape == (t, k)
    assert c["landmarks_visible"].dtype == torch.bool and c["occluded"].dtype == torch.bool
    assert c["pose"].shape == (t, 3) and c["boxes"].shape == (t, 4)
    assert c["frame_mask"].all() and torch.equal(c["frame_index"], torch.arange(t))
    assert c["identity"].shape == () and c["identity"].dtype == torch.int64
    assert int(c["category"]) == 0 and c["clip"] == "synth-0-0"


def test_crop_renderer_hook_is_render_crops():
    """render_crops is render_crops_from_draws of the (seed, index) draws: the same pixels."""
    seed, idx, s = 3, [5, 9], SIZE
    gens = [generator(seed, i, "crop") for i in idx]
    u = torch.stack([torch.rand(CROP_DRAWS, generator=g) for g in gens])
    from facelit.synth.background import background_noise_size

    noise = torch.stack([torch.randn(background_noise_size(s, s), generator=g) for g in gens])
    direct = render_crops(seed, idx, s)
    hooked = render_crops_from_draws(seed, u, noise, s)
    for a, b in zip(direct, hooked, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["landmarks"], b["landmarks"])


def test_deterministic_and_batch_independent(clips):
    again = render_clip(0, 3, length=16, size=SIZE)
    assert torch.allclose(again["image"], clips[3]["image"], atol=1e-4)  # batch rounding only
    assert torch.allclose(again["landmarks"], clips[3]["landmarks"], atol=1e-4)
    assert torch.equal(again["occluded"], clips[3]["occluded"])
    assert not torch.allclose(clips[3]["landmarks"], clips[4]["landmarks"])
    other_seed = render_clip(1, 3, length=16, size=SIZE)
    assert not torch.allclose(other_seed["pose"], clips[3]["pose"])


def test_one_identity_per_clip_and_static_background():
    """Every frame of a clip is the clip's identity; the top-left corner (background) stays put."""
    u, _, _ = _clip_draws(0, 2, 16, SIZE, VIDEO_DOMAIN, ClipMotion())
    assert torch.unique(u[:, _IDENTITY]).numel() == 1  # the identity draw
    c = render_clip(0, 2, length=16, size=SIZE)
    corner = c["image"][:, :, :3, :3]
    assert float((corner - corner[:1]).abs().amax()) < 0.15  # sensor noise only


def test_pose_labels_follow_the_smooth_trajectory(clips):
    yaw = torch.stack([c["pose"][:, 0] for c in clips])  # (8, 16)
    lo, hi = VIDEO_DOMAIN.yaw
    assert float(yaw.min()) >= lo and float(yaw.max()) <= hi
    # the label is the drawn trajectory mapped onto the domain range (the draw layout is right)
    u, _, _ = _clip_draws(0, 0, 16, SIZE, VIDEO_DOMAIN, ClipMotion())
    expected = lo + (hi - lo) * u[:, _POSE][:, 0]
    assert torch.allclose(clips[0]["pose"][:, 0], expected, atol=1e-3)
    # smooth: frame-to-frame changes well below the range, accelerations smaller still
    step = (yaw[:, 1:] - yaw[:, :-1]).abs().max()
    accel = (yaw[:, 2:] - 2 * yaw[:, 1:-1] + yaw[:, :-2]).abs().max()
    assert float(step) < 15.0 and float(accel) < 3.0


def test_large_poses_occur():
    """Over 64 clips (draws only, no rendering) the yaw reaches beyond +-60 degrees both ways."""
    lo, hi = VIDEO_DOMAIN.yaw
    yaw = torch.stack([_clip_draws(0, i, 16, SIZE, VIDEO_DOMAIN, ClipMotion())[0][:, 1] for i in range(64)])
    yaw = lo + (hi - lo) * yaw
    assert float(yaw.max()) > 60.0 and float(yaw.min()) < -60.0
    swing = (yaw.amax(1) - yaw.amin(1)).max()
    assert float(swing) > 40.0  # some clips turn the head a lot within 16 frames


def test_occluder_passages():
    draws = [_clip_draws(0, i, 16, SIZE, VIDEO_DOMAIN, ClipMotion())[2] for i in range(200)]
    with_occluder = torch.tensor([bool(o.any()) for o in draws])
    assert 0.4 < float(with_occluder.float().mean()) < 0.6  # occluder_prob = 0.5
    for o in draws:  # one contiguous passage of at least min_occlusion of the clip
        if o.any():
            idx = o.nonzero().squeeze(1)
            assert int(idx[-1] - idx[0]) + 1 == idx.numel() >= round(16 * ClipMotion().min_occlusion)
    clean = [_clip_draws(0, i, 16, SIZE, get_domain("clean"), ClipMotion())[2] for i in range(20)]
    assert not any(bool(o.any()) for o in clean)  # clean domain: no occluder


def test_occluded_frames_hide_landmarks(clips):
    """Within clips with a passage, occluded frames show fewer landmarks than the other frames."""
    gaps = []
    for c in clips:
        occ = c["occluded"]
        if occ.any() and (~occ).any():
            vis = c["landmarks_visible"].float().mean(1)
            gaps.append(float(vis[~occ].mean() - vis[occ].mean()))
    assert len(gaps) >= 2
    assert sum(gaps) / len(gaps) > 0.05


def test_rednet7_is_the_ibug_subset(clips):
    sub = render_clip(0, 1, length=16, size=SIZE, scheme="rednet7")
    idx = [36, 39, 42, 45, 30, 48, 54]
    assert torch.allclose(sub["landmarks"], clips[1]["landmarks"][:, idx], atol=1e-4)
    assert torch.equal(sub["landmarks_visible"], clips[1]["landmarks_visible"][:, idx])


def test_smooth_paths_bspline():
    w = _bspline_basis(torch.tensor([0.0, 0.5, 0.999]))
    assert torch.allclose(w.sum(1), torch.ones(3))
    assert torch.allclose(w[0], torch.tensor([1 / 6, 4 / 6, 1 / 6, 0.0]))  # at a knot
    assert torch.allclose(w[1], torch.tensor([1 / 48, 23 / 48, 23 / 48, 1 / 48]))  # half-way
    p = smooth_paths(torch.Generator().manual_seed(0), 5, 40, 4, 0.35)
    assert p.shape == (40, 5) and float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    # a knot step of at most 0.35 per 4 frames bounds the speed: |dp/dt| <= 0.35 / 4 per frame
    assert float((p[1:] - p[:-1]).abs().max()) <= 0.35 / 4 + 1e-6


def test_dataset_and_bad_input():
    ds = SyntheticClipDataset(seed=0, length=3, clip_length=4, size=SIZE, scheme="rednet7")
    assert len(ds) == 3
    one, many = ds[2], ds.__getitems__([0, 2])
    assert torch.allclose(one["landmarks"], many[1]["landmarks"], atol=1e-4)
    with pytest.raises(IndexError, match="clip index 3"):
        ds[3]
    with pytest.raises(ValueError, match="length must be >= 1"):
        render_clips(0, [0], length=0)
    with pytest.raises(ValueError, match="not an iBUG-68 subset"):
        render_clips(0, [0], scheme="animal5")
    with pytest.raises(ValueError, match="unknown landmark scheme"):
        SyntheticClipDataset(scheme="nope")
    with pytest.raises(ValueError, match="knot_spacing"):
        ClipMotion(knot_spacing=0)
