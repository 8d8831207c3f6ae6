"""Face-crop augmentation for landmarks and head pose: flip, rotation, scale, shift, colour jitter.

One affine map per sample, built in our frame, moves the image (one batched ``warp_affine``) and
the points (:func:`facelit.augment.geometry.transform_points`):

    M = T(c_out + shift) @ R(angle) @ S(scale) @ T(-c_in) @ F

with ``c_in``/``c_out`` the input/output image centres, ``F`` the horizontal flip ``x' = W - x``
(identity when not flipped), ``angle ~ U[-rotation, rotation]`` degrees, ``scale ~ U[scales]``,
``shift ~ U[-translation, translation] * (W_out, H_out)``. After a flip the point order is
permuted with the scheme's ``flip_perm`` (kornia does not do this), ``landmarks_visible`` alike; points that
leave the output image become not visible when ``hide_outside`` is set. The face box ``boxes`` becomes the
axis-aligned box enclosing its transformed corners (not clipped). The per-sample CPU callable
(:class:`LandmarkAugment`) is the batched module (:class:`BatchedLandmarkAugment`) run on a batch
of one, so both paths are the same code.

Convention
----------
Pixel-area frame (DESIGN.md); ``angle > 0`` rotates the image content counter-clockwise on the
screen (kornia/OpenCV). Pose labels (yaw, pitch, roll) follow :mod:`facelit.geometry.pose`
(positive roll = the face turns CLOCKWISE in the image). Under a weak-perspective camera the
augmented head is the original one rotated about the optical axis (and mirrored on flips), so the
new angles are computed exactly from rotation matrices (:func:`augment_pose`):

    R' = Fx @ R @ Fx @ Rz(angle)        (Fx only when flipped; R = matrix_from_euler(ypr))

For a frontal head this is ``roll' = roll - angle``: an image rotated counter-clockwise by ``a``
shows a face rolled by ``-a``; with yaw or pitch the in-plane rotation mixes into all three angles.
A flip alone maps ``(yaw, pitch, roll) -> (-yaw, pitch, -roll)``. Scale and shift leave the pose
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from facelit.augment.geometry import (
    hflip_matrix,
    points_inside,
    rotation_matrix,
    scaling_matrix,
    transform_boxes,
    transform_points,
    translation_matrix,
    uniform,
    warp_image,
)
from facelit.augment.photometric import PhotometricDistort
from facelit.geometry.pose import euler_from_matrix, matrix_from_euler
from facelit.geometry.schemes import LandmarkScheme, get_scheme

__all__ = [
    "LandmarkAugmentParams",
    "landmark_affine",
    "augment_pose",
    "apply_landmark_augment",
    "BatchedLandmarkAugment",
    "LandmarkAugment",
]

_CROP_TENSOR_KEYS = ("image", "landmarks", "landmarks_visible", "pose", "boxes")


@dataclass
class LandmarkAugmentParams:
    """Per-sample parameters: ``angle`` (B,) degrees CCW, ``scale`` (B,), ``shift`` (B, 2) pixels,
    ``flipped`` (B,) bool."""

    angle: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    flipped: torch.Tensor


def landmark_affine(
    params: LandmarkAugmentParams, in_size: tuple[int, int], out_size: tuple[int, int]
) -> torch.Tensor:
    """(B, 3, 3) input -> output pixel maps ``T(c_out + shift) R S T(-c_in) F`` (module docstring).

    Args:
        params: per-sample parameters.
        in_size, out_size: (height, width) of the input and output images.
    """
    (h_in, w_in), (h_out, w_out) = in_size, out_size
    angle = params.angle
    b = angle.shape[0]
    full = torch.full_like
    flip = hflip_matrix(full(angle, float(w_in)))
    flip = torch.where(
        params.flipped[:, None, None], flip, torch.eye(3, dtype=angle.dtype, device=angle.device)
    )
    centre_in = translation_matrix(full(angle, -w_in / 2.0), full(angle, -h_in / 2.0))
    centre_out = translation_matrix(w_out / 2.0 + params.shift[:, 0], h_out / 2.0 + params.shift[:, 1])
    m = centre_out @ rotation_matrix(angle) @ scaling_matrix(params.scale) @ centre_in @ flip
    return m.reshape(b, 3, 3)


def _rz(angle_deg: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) right-handed rotations about z."""
    rad = torch.deg2rad(angle_deg)
    c, s = torch.cos(rad), torch.sin(rad)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def augment_pose(pose: torch.Tensor, angle: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Head pose after a flip (if ``flipped``) followed by an in-plane rotation by ``angle``.

    Args:
        pose: (B, 3) yaw, pitch, roll in degrees (:mod:`facelit.geometry.pose` convention).
        angle: (B,) image rotation in degrees, counter-clockwise on the screen.
        flipped: (B,) bool.

    Returns:
        (B, 3) ``euler_from_matrix(Fx R Fx Rz(angle))`` (module docstring); for a frontal head
        ``roll - angle``, and ``(-yaw, pitch, -roll)`` for a flip alone.
    """
    if pose.dim() != 2 or pose.shape[-1] != 3:
        raise ValueError(f"expected (B, 3) poses, got shape {tuple(pose.shape)}")
    work = pose.double()
    sign = torch.where(flipped, -1.0, 1.0).to(work)
    # Fx R Fx == matrix_from_euler(-yaw, pitch, -roll): mirroring x negates yaw and roll exactly.
    mirrored = work * torch.stack([sign, torch.ones_like(sign), sign], dim=-1)
    rot = matrix_from_euler(mirrored) @ _rz(angle.to(work))
    return euler_from_matrix(rot).to(pose.dtype)


def apply_landmark_augment(
    batch: dict[str, Any],
    params: LandmarkAugmentParams,
    flip_perm: torch.Tensor,
    out_size: tuple[int, int],
    hide_outside: bool = True,
    fill: float = 0.0,
) -> dict[str, Any]:
    """Apply one affine per sample to a face-crop batch (geometry only).

    Args:
        batch: ``image`` (B, C, H, W), ``landmarks`` (B, K, 2), optional ``landmarks_visible`` (B, K) bool,
            ``pose`` (B, 3), ``box`` (B, 4); other keys are copied.
        params: per-sample parameters.
        flip_perm: (K,) the scheme's flip permutation.
        out_size: (height, width) of the output.

    Returns:
        a new batch with the warped ``image`` (B, C, h, w), moved ``landmarks``/``landmarks_visible``/
        ``boxes``/``pose`` and the extra keys ``affine`` (B, 3, 3) and ``flipped`` (B,).
    """
    image = batch["image"]
    _, _, h, w = image.shape
    matrix = landmark_affine(params, (h, w), out_size)
    flipped = params.flipped
    out = dict(batch)
    out["image"] = warp_image(image, matrix, out_size, fill)
    perm = flip_perm.to(image.device)
    points = transform_points(matrix, batch["landmarks"])
    out["landmarks"] = torch.where(flipped[:, None, None], points[:, perm], points)
    visible = batch.get("landmarks_visible")
    if visible is not None:
        visible = torch.where(flipped[:, None], visible[:, perm], visible)
    if hide_outside:
        inside = points_inside(out["landmarks"], out_size[0], out_size[1])
        visible = inside if visible is None else visible & inside
    if visible is not None:
        out["landmarks_visible"] = visible
    if "boxes" in batch:
        out["boxes"] = transform_boxes(matrix, batch["boxes"])
    if "pose" in batch:
        out["pose"] = augment_pose(batch["pose"], params.angle, flipped)
    out["affine"] = matrix
    out["flipped"] = flipped
    return out


class BatchedLandmarkAugment(nn.Module):
    """Landmark/pose augmentation of a face-crop batch on the device (one ``warp_affine`` call).

    Args:
        scheme: the landmark scheme (or its name) whose ``flip_perm`` reorders points on flips.
        flip_p: horizontal flip probability.
        rotation: maximum absolute rotation in degrees.
        scales: range of the scale factor.
        translation: maximum absolute shift as a fraction of the output width/height.
        photometric: True for the default :class:`PhotometricDistort`, a configured one, or False.
        hide_outside: visible points that leave the output image become not visible.
        output_size: output (height, width) or side; None keeps the input size.
        fill: value of output pixels that come from outside the input.
    """

    def __init__(
        self,
        scheme: LandmarkScheme | str,
        flip_p: float = 0.5,
        rotation: float = 30.0,
        scales: tuple[float, float] = (0.75, 1.25),
        translation: float = 0.1,
        photometric: bool | PhotometricDistort = True,
        hide_outside: bool = True,
        output_size: int | tuple[int, int] | None = None,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        self.scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        if rotation < 0 or translation < 0:
            raise ValueError(f"rotation and translation must be >= 0, got {rotation}, {translation}")
        if not 0.0 < scales[0] <= scales[1]:
            raise ValueError(f"scales must satisfy 0 < low <= high, got {scales}")
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if output_size is not None and min(output_size) < 1:
            raise ValueError(f"output_size must be positive, got {output_size}")
        self.flip_p = float(flip_p)
        self.rotation = float(rotation)
        self.scales = (float(scales[0]), float(scales[1]))
        self.translation = float(translation)
        self.hide_outside = bool(hide_outside)
        self.output_size = output_size
        self.fill = float(fill)
        if photometric is True:
            photometric = PhotometricDistort()
        self.photometric: PhotometricDistort | None = photometric or None
        self.register_buffer("flip_perm", self.scheme.flip_tensor(), persistent=False)

    def sample_params(
        self,
        batch: int,
        out_size: tuple[int, int],
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> LandmarkAugmentParams:
        """Draw per-sample parameters (flip, angle, scale, shift in pixels of ``out_size``)."""
        flipped = uniform((batch,), 0.0, 1.0, generator, device) < self.flip_p
        angle = uniform((batch,), -self.rotation, self.rotation, generator, device)
        scale = uniform((batch,), self.scales[0], self.scales[1], generator, device)
        frac = uniform((batch, 2), -self.translation, self.translation, generator, device)
        shift = frac * torch.tensor([out_size[1], out_size[0]], dtype=frac.dtype, device=device)
        return LandmarkAugmentParams(angle, scale, shift, flipped)

    def _check(self, batch: dict[str, Any]) -> None:
        image, points = batch.get("image"), batch.get("landmarks")
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or not image.is_floating_point():
            raise ValueError(
                f"'image' must be a (B, C, H, W) float tensor, got {getattr(image, 'shape', image)!r}"
            )
        b, k = image.shape[0], self.scheme.num_points
        if not isinstance(points, torch.Tensor) or tuple(points.shape) != (b, k, 2):
            raise ValueError(
                f"'landmarks' must be ({b}, {k}, 2) for scheme {self.scheme.name!r}, "
                f"got {getattr(points, 'shape', points)!r}"
            )
        for key, shape in (("landmarks_visible", (b, k)), ("pose", (b, 3)), ("boxes", (b, 4))):
            if key in batch and tuple(batch[key].shape) != shape:
                raise ValueError(f"{key!r} must have shape {shape}, got {tuple(batch[key].shape)}")
        if "landmarks_visible" in batch and batch["landmarks_visible"].dtype != torch.bool:
            raise ValueError(f"'landmarks_visible' must be bool, got {batch['landmarks_visible'].dtype}")

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        self._check(batch)
        image = batch["image"]
        out_size = self.output_size or (image.shape[2], image.shape[3])
        params = self.sample_params(image.shape[0], out_size, image.device, generator)
        out = apply_landmark_augment(batch, params, self.flip_perm, out_size, self.hide_outside, self.fill)
        if self.photometric is not None:
            out["image"] = self.photometric(out["image"], generator)
        return out


class LandmarkAugment(BatchedLandmarkAugment):
    """Per-sample version for DataLoader workers: the batched module on a batch of one.

    Call it on one face-crop sample (``image`` (C, H, W), ``landmarks`` (K, 2), optional
    ``landmarks_visible`` (K,), ``pose`` (3,), ``boxes`` (4,)); returns the augmented sample with
    ``affine`` (3, 3) and ``flipped`` () added. Same arguments as :class:`BatchedLandmarkAugment`.
    """

    def forward(self, sample: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        if not isinstance(sample.get("image"), torch.Tensor) or sample["image"].dim() != 3:
            raise ValueError(
                f"sample['image'] must be a (C, H, W) tensor, "
                f"got {getattr(sample.get('image'), 'shape', None)!r}"
            )
        batch = {
            k: (v[None] if k in _CROP_TENSOR_KEYS and isinstance(v, torch.Tensor) else v)
            for k, v in sample.items()
        }
        out = super().forward(batch, generator)
        squeeze = set(_CROP_TENSOR_KEYS) | {"affine", "flipped"}
        return {k: (v[0] if k in squeeze and isinstance(v, torch.Tensor) else v) for k, v in out.items()}
