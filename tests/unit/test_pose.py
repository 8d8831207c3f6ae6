"""Tests of facelit.geometry.pose: the project's single Euler-angle convention (BIWI benchmarks)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facelit.geometry.pose import (
    euler_from_matrix,
    head_to_camera,
    matrix_from_euler,
    ypr_from_300wlp_pose_para,
    ypr_from_biwi_pose_matrix,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"


def _elementary(axis: str, deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    if axis == "x":
        m = [[1, 0, 0], [0, c, -s], [0, s, c]]
    elif axis == "y":
        m = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    else:
        m = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    return torch.tensor(m, dtype=torch.float64)


def _random_ypr(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yaw = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * 89.0
    pitch_roll = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * 179.0
    return torch.cat([yaw[:, None], pitch_roll], dim=1)


def test_matrix_is_rz_ry_rx_product() -> None:
    for yaw, pitch, roll in [(30.0, -20.0, 10.0), (-75.0, 50.0, -120.0), (0.0, 0.0, 0.0)]:
        expected = _elementary("z", -roll) @ _elementary("y", -yaw) @ _elementary("x", pitch)
        got = matrix_from_euler(torch.tensor([yaw, pitch, roll], dtype=torch.float64))
        torch.testing.assert_close(got, expected)


def test_round_trip_random_angles() -> None:
    ypr = _random_ypr(2000)
    rot = matrix_from_euler(ypr)
    eye = torch.eye(3, dtype=torch.float64).expand(2000, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(2000, dtype=torch.float64))
    torch.testing.assert_close(euler_from_matrix(rot), ypr, atol=1e-9, rtol=0)
    # and matrix -> angles -> matrix for arbitrary rotations
    torch.testing.assert_close(matrix_from_euler(euler_from_matrix(rot)), rot)


def test_batch_shapes_and_float32() -> None:
    ypr = _random_ypr(24).float().reshape(2, 3, 4, 3)
    rot = matrix_from_euler(ypr)
    assert rot.shape == (2, 3, 4, 3, 3) and rot.dtype == torch.float32
    assert euler_from_matrix(rot).shape == (2, 3, 4, 3)
    torch.testing.assert_close(euler_from_matrix(rot), ypr, atol=2e-3, rtol=0)
    torch.testing.assert_close(head_to_camera(ypr), rot.transpose(-1, -2))


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="matrix_from_euler"):
        matrix_from_euler(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="euler_from_matrix"):
        euler_from_matrix(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="ypr_from_300wlp_pose_para"):
        ypr_from_300wlp_pose_para(torch.zeros(2))


def test_biwi_readme_vector() -> None:
    r_file = torch.tensor(
        [[0.980639, 0.109899, 0.162077], [-0.11023, 0.993882, -0.00697376], [-0.161851, -0.011027, 0.986754]],
        dtype=torch.float64,
    )
    ypr = ypr_from_biwi_pose_matrix(r_file)
    torch.testing.assert_close(
        ypr, torch.tensor([9.327, -0.405, -6.394], dtype=torch.float64), atol=2e-3, rtol=0
    )
    # the benchmark matrix of these angles is R_file^T (up to the file's 6-digit rounding)
    torch.testing.assert_close(matrix_from_euler(ypr), r_file.T, atol=2e-6, rtol=0)


def _biwi(name: str) -> dict[str, np.ndarray]:
    path = DATA / "biwi" / name
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} is absent")
    with np.load(path) as f:
        return {k: f[k] for k in ("images", "pyr", "ypr")}


@pytest.mark.parametrize("name", ["Biwi_plus_non_cal.npz", "Biwi_plus.npz"])
def test_biwi_pyr_ypr_relation(name: str) -> None:
    from scipy.spatial.transform import Rotation

    d = _biwi(name)
    rows = np.linspace(0, len(d["ypr"]) - 1, 1500).astype(int)
    pyr, ypr = d["pyr"][rows], d["ypr"][rows]
    # README relation, verified with scipy
    rz, ry, rx = Rotation.from_euler("xyz", pyr, degrees=True).as_euler("zyx", degrees=True).T
    np.testing.assert_allclose(-np.stack([ry, rx, rz], 1), ypr, atol=1e-6)
    # the same relation in our terms: Rotation('xyz', pyr) = D R^T D with R = matrix_from_euler(ypr)
    d_flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    rot = matrix_from_euler(torch.from_numpy(ypr))
    expected = torch.from_numpy(Rotation.from_euler("xyz", pyr, degrees=True).as_matrix())
    torch.testing.assert_close(d_flip @ rot.transpose(1, 2) @ d_flip, expected, atol=1e-9, rtol=0)
    # the labels lie in the principal range, so they survive a round trip
    torch.testing.assert_close(euler_from_matrix(rot), torch.from_numpy(ypr), atol=1e-9, rtol=0)


def test_biwi_readme_frame_matches_npz() -> None:
    d = _biwi("Biwi_plus_non_cal.npz")
    row = int(np.nonzero(d["images"] == "12/frame_00003_rgb.png")[0][0])
    np.testing.assert_allclose(d["ypr"][row], [9.327, -0.405, -6.394], atol=1e-3)


def test_visual_meaning_of_signs() -> None:
    """Forward direction of the face (-z of the head) in the camera for pure yaw/pitch/roll."""
    forward = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    right = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    nose_yaw = head_to_camera(torch.tensor([30.0, 0.0, 0.0], dtype=torch.float64)) @ forward
    assert nose_yaw[0] < -0.4  # positive yaw: the face points to the image left
    nose_pitch = head_to_camera(torch.tensor([0.0, 30.0, 0.0], dtype=torch.float64)) @ forward
    assert nose_pitch[1] < -0.4  # positive pitch: the face looks up (y down in the image)
    x_roll = head_to_camera(torch.tensor([0.0, 0.0, 30.0], dtype=torch.float64)) @ right
    assert x_roll[1] > 0.4  # positive roll: the image-right side goes down (clockwise)


def test_300wlp_pose_para() -> None:
    para = torch.tensor([[0.1, -0.5, 0.2, 1.0, 2.0, 3.0, 4.0], [-0.3, 1.2, 0.0, 0.0, 0.0, 0.0, 0.0]])
    got = ypr_from_300wlp_pose_para(para)
    expected = torch.rad2deg(torch.stack([para[:, 1], para[:, 0], para[:, 2]], 1))
    torch.testing.assert_close(got, expected)
