"""Pose matching: hand-computed angles, visibility rules (<= 2 shared keypoints dropped), K nearest,
the cached table."""

from __future__ import annotations

import math

import pytest
import torch

import facelit.geometry.pose_match as pm
from facelit.geometry.pose_match import match_poses, pose_descriptor, pose_distance

# left eye, right eye, nose, mouth left, mouth right
FRONTAL = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 2.0], [2.0, 2.0]])
ALL = torch.ones(5, dtype=torch.bool)


def face(nose_x: float) -> torch.Tensor:
    f = FRONTAL.clone()
    f[2, 0] = nose_x
    return f


def test_descriptor_hand_computed():
    d = pose_descriptor(torch.stack([FRONTAL, face(2.0)]), torch.stack([ALL, ALL]))
    assert d.vertical.tolist() == pytest.approx([0.0, 45.0])
    # frontal: eye - nose - mouth angles at the nose: left eye (-1,-1) vs left mouth (-1, 1) = 90 deg,
    # left eye vs right mouth (1, 1) = 180 deg
    assert d.triple[0].tolist() == pytest.approx([90.0, 180.0, 180.0, 90.0])
    assert d.vertical_ok.all() and d.triple_ok.all()


def test_distance_rules():
    hidden_eye = ALL.clone()
    hidden_eye[0] = False
    few = torch.tensor([True, True, False, False, False])
    animals = pose_descriptor(torch.stack([face(1.5), face(1.5)]), torch.stack([ALL, hidden_eye]))
    humans = pose_descriptor(torch.stack([FRONTAL, face(2.0), FRONTAL]), torch.stack([ALL, ALL, few]))
    dist = pose_distance(animals, humans)
    # both eyes and nose visible in both: |vertical angle difference|
    v = math.degrees(math.atan2(0.5, 1.0))
    assert dist[0, 0] == pytest.approx(v) and dist[0, 1] == pytest.approx(45.0 - v)
    # an eye hidden: mean difference of the eye-nose-mouth angles of the right eye
    a = pose_descriptor(face(1.5)[None], ALL[None]).triple[0, 2:]
    h = pose_descriptor(FRONTAL[None], ALL[None]).triple[0, 2:]
    assert dist[1, 0] == pytest.approx(float((a - h).abs().mean()), rel=1e-6)
    # sharing only 2 visible keypoints: never matched
    assert math.isinf(dist[0, 2]) and math.isinf(dist[1, 2])


def test_match_poses_k_nearest_and_cache(tmp_path, monkeypatch):
    humans = torch.stack([face(x) for x in (0.0, 0.5, 1.0, 1.5, 2.0)])
    human_vis = torch.ones(5, 5, dtype=torch.bool)
    human_vis[4, 2:] = False  # shares only the eyes with anyone: dropped
    animals = torch.stack([face(1.9), face(0.1)])
    table = match_poses(
        animals,
        torch.ones(2, 5, dtype=torch.bool),
        humans,
        human_vis,
        k=3,
        cache_dir=tmp_path,
        progress=False,
    )
    assert table.indices.tolist() == [[3, 2, 1], [0, 1, 2]]
    assert table.valid.all()
    k5 = match_poses(animals, torch.ones(2, 5, dtype=torch.bool), humans, human_vis, k=5, progress=False)
    assert k5.valid[:, -1].tolist() == [False, False]  # the pool has only 4 admissible humans
    files = list(tmp_path.glob("pose_match_*.pt"))
    assert len(files) == 1

    def boom(*args, **kwargs):
        raise AssertionError("the cached table must be reused")

    monkeypatch.setattr(pm, "pose_distance", boom)
    again = match_poses(
        animals,
        torch.ones(2, 5, dtype=torch.bool),
        humans,
        human_vis,
        k=3,
        cache_dir=tmp_path,
        progress=False,
    )
    assert torch.equal(again.indices, table.indices)


def test_bad_input():
    with pytest.raises(ValueError, match="fewer than k"):
        match_poses(FRONTAL[None], ALL[None], FRONTAL[None], ALL[None], k=2)
    with pytest.raises(ValueError, match=r"\(N, 5, 2\)"):
        pose_descriptor(torch.zeros(1, 4, 2), torch.ones(1, 4, dtype=torch.bool))
