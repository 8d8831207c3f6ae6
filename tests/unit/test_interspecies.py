"""Interspecies transfer: nets (identity warp at init, shapes), the failure-rate metric (hand-computed),
ground-truth warps and the warping loss, back-mapping of points, stages and per-group learning rates."""

from __future__ import annotations

import pytest
import torch

from facelit.geometry.tps import fit_tps, from_normalised, map_points, to_normalised
from facelit.metrics.failure_rate import KeypointFailureRate, keypoint_failures
from facelit.nets.vanilla_cnn import VanillaCNN
from facelit.nets.warping import WarpingNet
from lightning_modules.interspecies import InterspeciesModule, stage_plan

S = 32
HUMAN = torch.tensor([[12.5, 12.5], [19.5, 12.5], [16.5, 16.5], [13.5, 20.5], [19.5, 20.5]])
ANIMAL = torch.tensor([[9.3, 8.2], [23.2, 8.3], [16.6, 22.8], [14.1, 26.4], [19.6, 26.0]])


def test_vanilla_cnn_shapes_and_init():
    net = VanillaCNN(5).eval()
    out = net.predict_pixels(torch.rand(3, 3, 40, 48))
    assert out.shape == (3, 5, 2)
    assert torch.allclose(out, torch.tensor([24.0, 20.0]).expand(3, 5, 2))  # image centre at init
    with pytest.raises(ValueError, match="conv widths"):
        VanillaCNN(5, channels=(8, 8))


@pytest.mark.parametrize("backbone", ["alexnet", "resnet18"])
def test_warping_net_starts_at_identity(backbone):
    net = WarpingNet(backbone, width=0.25, hidden=16).eval()
    images = torch.rand(2, 3, S, S)
    warped, grid = net.warp(images, net(images))
    assert torch.allclose(warped, images, atol=1e-5)
    net.train()
    net.fc2.bias.data.normal_()
    warped, _ = net.warp(images, net(images))
    warped.sum().backward()
    assert net.fc2.weight.grad is not None and net.fc2.weight.grad.abs().sum() > 0


def test_failure_rate_hand_computed():
    target = torch.zeros(2, 5, 2)
    # errors in pixels; face size 100 -> threshold 10 px
    err = torch.tensor([[5.0, 11.0, 10.0, 30.0, 0.0], [12.0, 1.0, 2.0, 3.0, 50.0]])
    pred = target + torch.stack([err, torch.zeros_like(err)], -1)
    visible = torch.tensor([[True, True, True, True, True], [True, True, True, True, False]])
    assert keypoint_failures(pred, target, 100.0).tolist() == [
        [False, True, False, True, False],
        [True, False, False, False, True],
    ]
    metric = KeypointFailureRate(["a", "b", "c", "d", "e"])
    metric.update(pred, target, visible, torch.tensor([100.0, 100.0]))
    out = metric.compute()
    assert out["fr_avg"] == pytest.approx(3 / 9)  # the invisible 50 px error does not count
    assert [float(out[f"fr_{n}"]) for n in "abcd"] == [0.5, 0.5, 0.0, 0.5]
    assert torch.isnan(out["fr_e"]) is not None and out["fr_e"] == 0.0
    assert out["fr_mean_kp"] == pytest.approx((0.5 + 0.5 + 0 + 0.5 + 0) / 5)
    with pytest.raises(ValueError, match="positive"):
        keypoint_failures(pred, target, 0.0)


def _batch(b: int = 2, m: int = 3) -> dict[str, torch.Tensor]:
    return {
        "image": torch.rand(b, 3, S, S),
        "landmarks": ANIMAL.expand(b, 5, 2).clone(),
        "landmarks_visible": torch.ones(b, 5, dtype=torch.bool),
        "match_points": to_normalised(HUMAN, (S, S)).expand(b, m, 5, 2).clone(),
        "match_visible": torch.ones(b, m, 5, dtype=torch.bool),
        "match_valid": torch.ones(b, m, dtype=torch.bool),
    }


def test_ground_truth_grids_send_human_keypoints_onto_the_animal():
    batch = _batch()
    batch["match_valid"][1, 2] = False
    batch["match_visible"][0, 1, 3:] = False  # 3 shared keypoints: still valid
    batch["match_visible"][0, 2, 2:] = False  # 2 shared keypoints: dropped
    grids, valid = InterspeciesModule.ground_truth_grids(batch)
    assert valid.tolist() == [[True, True, False], [True, True, False]]
    # sample the dense grid at the human keypoints (they sit on pixel centres): the animal keypoints
    cols, rows = (HUMAN - 0.5).long().unbind(-1)
    landed = from_normalised(grids[0, 0, rows, cols], (S, S))
    assert (landed - ANIMAL).abs().max() < 1e-3
    first = torch.zeros_like(valid)
    first[:, 0] = True  # both rows' first matches are the same full 5-point warp
    assert InterspeciesModule.warping_loss(grids[:, 0], grids, first) == pytest.approx(0.0, abs=1e-10)
    shifted = grids[:, 0] + 0.1
    assert InterspeciesModule.warping_loss(shifted, grids, first) == pytest.approx(2 * 0.01, rel=1e-4)
    assert InterspeciesModule.warping_loss(shifted, grids, valid) > 2 * 0.01  # the 3-point warp differs


def test_points_are_mapped_back_through_the_warp():
    warp = fit_tps(to_normalised(HUMAN, (S, S))[None], to_normalised(ANIMAL, (S, S))[None])
    assert (map_points(warp, HUMAN[None], (S, S), (S, S)) - ANIMAL).abs().max() < 1e-3
    module = InterspeciesModule(method="full", warp_width=0.25, warp_hidden=16).eval()
    images = torch.rand(2, 3, S, S)
    out = module(images)  # identity warp at init: the keypoint net's points come back unchanged
    assert torch.allclose(out["landmarks"], out["warped_landmarks"], atol=1e-4)


def test_stages_and_learning_rates():
    assert stage_plan("scratch", 10, 5) == (0, 0)
    assert stage_plan("bl_ft", 10, 5) == (10, 0)
    assert stage_plan("bl_tps", 10, 5) == (10, 0)
    assert stage_plan("full", 10, 5) == (10, 5)
    with pytest.raises(ValueError, match="method"):
        stage_plan("other", 1, 1)
    module = InterspeciesModule(
        method="full",
        human_steps=10,
        warp_steps=5,
        lr=1e-2,
        human_lr=1e-3,
        warp_lr=1e-3,
        warp_width=0.25,
        warp_hidden=16,
    )
    assert [module.stage_at(s) for s in (0, 9, 10, 14, 15)] == ["human", "human", "warp", "warp", "animal"]
    total = 15 + 30
    assert module._stage_lrs(0, total) == (1e-3, 0.0, 0.0)
    assert module._stage_lrs(12, total) == (0.0, 1e-3, 1e-3)
    kp, backbone, head = module._stage_lrs(15, total)
    assert (kp, backbone, head) == pytest.approx((1e-2, 1e-4, 1e-3))
    assert module._stage_lrs(15 + 10, total)[0] == pytest.approx(1e-3)  # / 10 after a third of the stage
    assert module._stage_lrs(15 + 20, total)[0] == pytest.approx(1e-4)
    assert InterspeciesModule(method="scratch").warp_net is None


def test_draw_matches_prefers_valid_ones():
    module = InterspeciesModule(method="full", warp_width=0.25, warp_hidden=16, matches_per_step=2)
    batch = _batch(4, 5)
    batch["match_valid"][:, :3] = False
    batch["match_points"] = batch["match_points"] + torch.arange(5.0)[None, :, None, None]
    drawn = module.draw_matches(batch)
    assert drawn["match_valid"].all() and drawn["match_points"].shape == (4, 2, 5, 2)
    offsets = (drawn["match_points"] - batch["match_points"][:, :1])[..., 0, 0]
    assert set(offsets.flatten().round().tolist()) <= {3.0, 4.0}
