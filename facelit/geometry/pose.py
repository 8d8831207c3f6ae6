"""Head-pose angles <-> rotation matrices: the one angle convention of the project.

Convention
----------
Angles are degrees, ordered ``(yaw, pitch, roll)``, and follow the common BIWI / 300W-LP head-pose
benchmarks (Hopenet, FSA-Net, 6DRepNet ...). The camera frame is x to the image right, y to the
image bottom, z forward into the scene (OpenCV). The head frame coincides with the camera frame at
zero pose: its x axis points to the image right of a frontal face (the subject's left), y down and
z from the face towards the back of the head, so a frontal face looks along -z, at the camera.

``matrix_from_euler`` returns the benchmark matrix

    R = Rz(-roll) @ Ry(-yaw) @ Rx(pitch)          (= R_file^T of a BIWI ``frame_*_pose.txt``)

with right-handed elementary rotations ``Rx, Ry, Rz``. ``euler_from_matrix`` inverts it:
``roll = -atan2(R[1,0], R[0,0])``, ``yaw = -atan2(-R[2,0], hypot(R[2,1], R[2,2]))``,
``pitch = atan2(R[2,1], R[2,2])``, exactly the BIWI-benchmark conversion. The rotation that turns
the head model into the camera frame is the transpose, ``head_to_camera(ypr) = R^T``
(the BIWI file matrix): a head-frame point ``p`` is seen at ``head_to_camera(ypr) @ p + t``.
Every renderer and label in the project goes through these two functions.

Visual meaning (derived from ``head_to_camera``; the same as the axes drawn by the benchmarks'
``draw_axis``):

- positive yaw: the face turns towards the image LEFT (the nose tip moves left of the eye midpoint;
  the subject turns to their own right);
- positive pitch: the face looks UP (the nose tip moves up, towards smaller y);
- positive roll: the face rotates CLOCKWISE in the image (the top of the head moves to the image
  right, the image-right eye goes down).

Principal range: ``euler_from_matrix`` returns yaw in [-90, 90] and pitch, roll in (-180, 180];
``matrix_from_euler`` and ``euler_from_matrix`` are exact inverses for |yaw| < 90.

300W-LP: ``Pose_Para[:3]`` are (pitch, yaw, roll) in radians. The head-pose repos read them as
``yaw = Pose_Para[1]``, ``pitch = Pose_Para[0]``, ``roll = Pose_Para[2]`` (degrees after
conversion), with the same meaning as the BIWI angles above (they train on 300W-LP and test on
BIWI); ``ypr_from_300wlp_pose_para`` does exactly that and nothing else.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "matrix_from_euler",
    "euler_from_matrix",
    "head_to_camera",
    "ypr_from_biwi_pose_matrix",
    "ypr_from_300wlp_pose_para",
]


def _check_last(x: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[x.dim() - len(shape) :]) != shape or x.dim() < len(shape):
        raise ValueError(f"{what}: expected shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def matrix_from_euler(ypr: torch.Tensor) -> torch.Tensor:
    """Benchmark rotation matrix ``R = Rz(-roll) @ Ry(-yaw) @ Rx(pitch)`` from angles.

    Args:
        ypr: (..., 3) yaw, pitch, roll in degrees.

    Returns:
        (..., 3, 3) rotation matrices (``R_file^T`` in BIWI terms; see the module docstring).
    """
    _check_last(ypr, (3,), "matrix_from_euler")
    if not ypr.is_floating_point():
        ypr = ypr.float()
    rad = torch.deg2rad(ypr)
    # Angles of the elementary rotations: b about y, a about x, g about z.
    b, a, g = -rad[..., 0], rad[..., 1], -rad[..., 2]
    cb, sb = torch.cos(b), torch.sin(b)
    ca, sa = torch.cos(a), torch.sin(a)
    cg, sg = torch.cos(g), torch.sin(g)
    rows = [
        [cg * cb, cg * sb * sa - sg * ca, cg * sb * ca + sg * sa],
        [sg * cb, sg * sb * sa + cg * ca, sg * sb * ca - cg * sa],
        [-sb, cb * sa, cb * ca],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def euler_from_matrix(rot: torch.Tensor) -> torch.Tensor:
    """Angles (yaw, pitch, roll) in degrees of benchmark matrices ``R`` (inverse of ``matrix_from_euler``).

    Args:
        rot: (..., 3, 3) rotation matrices.

    Returns:
        (..., 3) yaw in [-90, 90], pitch and roll in (-180, 180].
    """
    _check_last(rot, (3, 3), "euler_from_matrix")
    roll = -torch.atan2(rot[..., 1, 0], rot[..., 0, 0])
    yaw = -torch.atan2(-rot[..., 2, 0], torch.hypot(rot[..., 2, 1], rot[..., 2, 2]))
    pitch = torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    return torch.rad2deg(torch.stack([yaw, pitch, roll], dim=-1))


def head_to_camera(ypr: torch.Tensor) -> torch.Tensor:
    """Rotation taking head-frame vectors to the camera frame: ``matrix_from_euler(ypr)^T``.

    Args:
        ypr: (..., 3) yaw, pitch, roll in degrees.

    Returns:
        (..., 3, 3); a head point ``p`` (3,) is at ``head_to_camera(ypr) @ p + t`` in the camera.
    """
    return matrix_from_euler(ypr).transpose(-1, -2)


def ypr_from_biwi_pose_matrix(rot_file: torch.Tensor) -> torch.Tensor:
    """Angles of a BIWI ``frame_*_pose.txt`` rotation (its three rows, as written in the file).

    Args:
        rot_file: (..., 3, 3) matrices as read from the files.

    Returns:
        (..., 3) yaw, pitch, roll in degrees (``ypr`` of ``Biwi_plus_non_cal.npz``).
    """
    _check_last(rot_file, (3, 3), "ypr_from_biwi_pose_matrix")
    return euler_from_matrix(rot_file.transpose(-1, -2))


def ypr_from_300wlp_pose_para(pose_para: torch.Tensor) -> torch.Tensor:
    """(yaw, pitch, roll) degrees from 300W-LP / AFLW2000-3D ``Pose_Para`` (pitch, yaw, roll radians, ...).

    Args:
        pose_para: (..., P) with P >= 3; only the first three entries are used.

    Returns:
        (..., 3) ``[Pose_Para[1], Pose_Para[0], Pose_Para[2]]`` converted to degrees.
    """
    if not isinstance(pose_para, torch.Tensor):
        raise TypeError(f"ypr_from_300wlp_pose_para: expected a torch.Tensor, got {type(pose_para).__name__}")
    if pose_para.dim() < 1 or pose_para.shape[-1] < 3:
        raise ValueError(
            f"ypr_from_300wlp_pose_para: expected shape (..., >=3), got {tuple(pose_para.shape)}"
        )
    if not pose_para.is_floating_point():
        pose_para = pose_para.double()
    return pose_para[..., [1, 0, 2]] * (180.0 / math.pi)
