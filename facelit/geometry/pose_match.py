"""Pose matching of animal faces to human faces from 5-point keypoint geometry (Rashid et al. 2017).

For each animal face, the K human faces of most similar pose are found from angles between
keypoint lines, using only keypoints visible in both faces:

* both eyes and the nose visible in both faces: the angle between the line eye centre -> nose and
  the image vertical (it tracks yaw and roll);
* otherwise (an eye hidden): the angles eye - nose - mouth corner at the nose, for every
  (eye, mouth corner) whose three points are visible in both faces; the distance is their mean
  absolute difference.

Pairs sharing <= 2 visible keypoints, or without any angle computable in both, are never matched.
Matches of one animal are sorted by distance; rows with fewer than K admissible humans have
``valid = False`` in the tail.

Convention: keypoints are (x, y) pixels (any frame shared within one face; angles are
scale-invariant), ordered as the 5-point schemes (left eye, right eye, nose, mouth left, mouth
right; ``five_point`` and ``animal5``). Angles are degrees.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["MIN_SHARED", "PoseDescriptor", "pose_descriptor", "pose_distance", "MatchTable", "match_poses"]

LEFT_EYE, RIGHT_EYE, NOSE, MOUTH_LEFT, MOUTH_RIGHT = range(5)
EYE_MOUTH = (
    (LEFT_EYE, MOUTH_LEFT),
    (LEFT_EYE, MOUTH_RIGHT),
    (RIGHT_EYE, MOUTH_LEFT),
    (RIGHT_EYE, MOUTH_RIGHT),
)
MIN_SHARED = 3  # pairs sharing fewer visible keypoints (<= 2) are dropped
_CHUNK = 256


@dataclass
class PoseDescriptor:
    """Angles of N faces: ``vertical`` (N,) eye-centre -> nose vs the vertical, ``triple`` (N, 4)
    eye-nose-mouth angles, their validity masks ``vertical_ok`` (N,) / ``triple_ok`` (N, 4) and the
    keypoint visibility ``visible`` (N, 5)."""

    vertical: torch.Tensor
    vertical_ok: torch.Tensor
    triple: torch.Tensor
    triple_ok: torch.Tensor
    visible: torch.Tensor


def _angle_between(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unsigned angle in degrees between (..., 2) vectors."""
    dot = (u * v).sum(-1)
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    return torch.rad2deg(torch.atan2(cross.abs(), dot))


def pose_descriptor(points: torch.Tensor, visible: torch.Tensor) -> PoseDescriptor:
    """Angles of (N, 5, 2) keypoints with (N, 5) bool visibility (module docstring)."""
    if points.dim() != 3 or points.shape[1:] != (5, 2):
        raise ValueError(f"expected (N, 5, 2) keypoints, got {tuple(points.shape)}")
    if visible.shape != points.shape[:2] or visible.dtype != torch.bool:
        raise ValueError(f"visible must be (N, 5) bool, got {tuple(visible.shape)} {visible.dtype}")
    points = points.double()
    eye_centre = (points[:, LEFT_EYE] + points[:, RIGHT_EYE]) / 2
    d = points[:, NOSE] - eye_centre
    vertical = torch.rad2deg(torch.atan2(d[:, 0], d[:, 1]))  # 0 when the nose is straight below
    vertical_ok = visible[:, LEFT_EYE] & visible[:, RIGHT_EYE] & visible[:, NOSE]
    eyes = torch.tensor([e for e, _ in EYE_MOUTH])
    mouths = torch.tensor([m for _, m in EYE_MOUTH])
    nose = points[:, NOSE : NOSE + 1]
    triple = _angle_between(points[:, eyes] - nose, points[:, mouths] - nose)
    triple_ok = visible[:, eyes] & visible[:, mouths] & visible[:, NOSE : NOSE + 1]
    return PoseDescriptor(vertical, vertical_ok, triple, triple_ok, visible)


def _take(desc: PoseDescriptor, rows: slice) -> PoseDescriptor:
    return PoseDescriptor(
        *(t[rows] for t in (desc.vertical, desc.vertical_ok, desc.triple, desc.triple_ok, desc.visible))
    )


def pose_distance(a: PoseDescriptor, h: PoseDescriptor) -> torch.Tensor:
    """(Na, Nh) distances in degrees between animal and human descriptors; ``inf`` where not matchable."""
    both_vertical = a.vertical_ok[:, None] & h.vertical_ok[None, :]
    diff = (a.vertical[:, None] - h.vertical[None, :] + 180.0) % 360.0 - 180.0
    vertical = diff.abs()
    ok = a.triple_ok[:, None, :] & h.triple_ok[None, :, :]
    triple_sum = ((a.triple[:, None, :] - h.triple[None, :, :]).abs() * ok).sum(-1)
    count = ok.sum(-1)
    triple = torch.where(count > 0, triple_sum / count.clamp(min=1), torch.full_like(triple_sum, math.inf))
    dist = torch.where(both_vertical, vertical, triple)
    shared = (a.visible[:, None, :] & h.visible[None, :, :]).sum(-1)
    return torch.where(shared >= MIN_SHARED, dist, torch.full_like(dist, math.inf))


@dataclass
class MatchTable:
    """``indices`` (Na, K) human indices, nearest first; ``valid`` (Na, K) bool; ``distance`` (Na, K)."""

    indices: torch.Tensor
    valid: torch.Tensor
    distance: torch.Tensor


def _fingerprint(*tensors: torch.Tensor, k: int) -> str:
    digest = hashlib.sha1(f"pose-match-v1-k{k}".encode())
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def match_poses(
    animal_points: torch.Tensor,
    animal_visible: torch.Tensor,
    human_points: torch.Tensor,
    human_visible: torch.Tensor,
    k: int = 5,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> MatchTable:
    """The K nearest human poses for every animal face (module docstring).

    Args:
        animal_points, human_points: (Na, 5, 2) / (Nh, 5, 2) keypoints.
        animal_visible, human_visible: (Na, 5) / (Nh, 5) bool.
        k: matches per animal.
        cache_dir: when given, the table is stored there under a fingerprint of the inputs and reused.
        progress: show a progress bar over animal chunks.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if human_points.shape[0] < k:
        raise ValueError(f"the human pool has {human_points.shape[0]} faces, fewer than k = {k}")
    path = None
    if cache_dir is not None:
        key = _fingerprint(animal_points.float(), animal_visible, human_points.float(), human_visible, k=k)
        path = Path(cache_dir) / f"pose_match_{key[:16]}.pt"
        if path.is_file():
            saved = torch.load(path, map_location="cpu")
            if saved.get("key") == key:
                return MatchTable(saved["indices"], saved["valid"], saved["distance"])
    from tqdm.auto import tqdm

    a_desc = pose_descriptor(animal_points, animal_visible)
    h_desc = pose_descriptor(human_points, human_visible)
    n = animal_points.shape[0]
    dists, idx = [], []
    for start in tqdm(range(0, n, _CHUNK), desc="pose matching", disable=not progress, leave=False):
        d = pose_distance(_take(a_desc, slice(start, start + _CHUNK)), h_desc)
        top_d, top_i = torch.topk(d, k, dim=1, largest=False)
        dists.append(top_d)
        idx.append(top_i)
    distance = torch.cat(dists).float() if dists else torch.zeros(0, k)
    indices = torch.cat(idx) if idx else torch.zeros(0, k, dtype=torch.long)
    table = MatchTable(indices, torch.isfinite(distance), distance)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"key": key, "indices": indices, "valid": table.valid, "distance": distance}, tmp)
        os.replace(tmp, path)
    return table
