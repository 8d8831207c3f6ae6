"""RetinaFace training augmentation for detection samples (CPU workers) and batches (device).

The recipe follows the RetinaFace release (``data_augment.py``): a random square crop of side
``u * short_side`` (``u ~ U[crop_scales]``) at a random integer position inside the image, kept
only if at least one face lies entirely inside it (retried up to ``max_tries`` times; when no try
succeeds the whole image is padded to a square, RetinaFace's ``_pad_to_square``); faces whose box
centre stays strictly inside the crop are kept and their boxes clipped to it; SSD photometric
distortion (:mod:`facelit.augment.photometric`); a horizontal flip with probability ``flip_p``; a
resize to ``output_size`` x ``output_size``. Faces whose box then has a side below ``min_face``
pixels are dropped too and counted. Images without faces (or with only ``ignore`` faces) take the
first random crop.

Both paths share the crop sampling, every per-face computation and the resampling
(``facelit.augment.crop.crop_resize``, anti-aliased, one call per sample on the CPU, one batched
call on the device); they differ only in how dropped faces leave: removed rows per sample,
``valid = False`` (with every other per-face mask cleared, exactly like padding) in batches. The
batched path takes images padded to a common size with their true sizes in ``image_size`` (B, 2)
(``datamodules.wider_face`` pads instead of letterboxing): crops are drawn inside each original
image, from its original pixels, as on the CPU.
Crop candidates are drawn vectorised: ``max_tries`` candidates per image in one tensor, the first
accepted one wins, so the batched path has no Python loop over samples or faces.

Convention
----------
Pixel-area frame (DESIGN.md): a flip maps ``x' = S - x``, boxes ``x1' = S - x2``,
``x2' = S - x1``; landmark points are then reordered with ``FIVE_POINT.flip_perm`` (and
``landmarks_visible`` alike). Mesh vertices get ``x, y`` through the same affine map and ``z``
times its scale ``S / side``; on a flip the vertex ORDER is permuted by ``mesh_flip_perm`` when
one is given, otherwise each vertex is mirrored in place (its index keeps its semantic label of the
unflipped face). Landmarks of kept faces may fall outside the crop: they stay as they are
(visibility untouched), as in RetinaFace.

Outputs carry three extra keys: ``affine`` (3, 3) / (B, 3, 3), the input -> output pixel map in our
frame (flip included); ``flipped`` () / (B,) bool; ``num_small`` () / (B,) int64, faces dropped by
``min_face``. (``facelit.batch.collate_detections`` does not collate these keys.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from facelit.augment.crop import crop_resize
from facelit.augment.geometry import (
    crop_resize_matrix,
    hflip_matrix,
    similarity_scale,
    transform_boxes,
    transform_points,
    uniform,
)
from facelit.augment.photometric import PhotometricDistort
from facelit.batch import PER_FACE_KEYS
from facelit.geometry.schemes import FIVE_POINT

__all__ = [
    "CropWindows",
    "sample_square_crops",
    "detection_affine",
    "transform_faces",
    "DetectionAugment",
    "BatchedDetectionAugment",
]

_FACE_KEYS = PER_FACE_KEYS
_FACE_MASK_KEYS = ("landmarks_valid", "mesh_valid", "ignore")


class CropWindows(NamedTuple):
    """One square crop per image: (B,) float corner ``x0``, ``y0`` and ``side`` (integral values),
    and (B,) bool ``found`` (False where the fallback padded square was used)."""

    x0: torch.Tensor
    y0: torch.Tensor
    side: torch.Tensor
    found: torch.Tensor


def _check_crop_args(crop_scales: tuple[float, float], max_tries: int) -> None:
    lo, hi = crop_scales
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop_scales must satisfy 0 < low <= high <= 1, got {crop_scales}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")


def sample_square_crops(
    boxes: torch.Tensor,
    anchor: torch.Tensor,
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    output_size: int,
    crop_scales: tuple[float, float] = (0.3, 1.0),
    max_tries: int = 250,
    min_face: float = 0.0,
    generator: torch.Generator | None = None,
) -> CropWindows:
    """Draw one RetinaFace square crop per image by vectorised rejection sampling.

    ``max_tries`` candidates per image: side ``floor(u * min(H, W))``, ``u ~ U[crop_scales]``,
    integer corner uniform over the positions that keep the crop inside the image. A candidate is
    accepted when an ``anchor`` face lies entirely inside it and its smaller box side would be at
    least ``min_face`` pixels after resizing to ``output_size``; the first accepted candidate wins.
    Images without anchor faces accept their first candidate. Where nothing is accepted the crop is
    the whole image padded to a square: ``(0, 0, max(H, W))`` with ``found = False``.

    Args:
        boxes: (B, M, 4) xyxy boxes in input pixels.
        anchor: (B, M) bool, faces that may justify a crop (valid and not ignored).
        height, width: input image size, shared by the batch (int) or per image ((B,) tensors:
            the true sizes of images padded to a common size).

    Returns:
        :class:`CropWindows` of (B,) tensors on ``boxes.device``.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"expected (B, M, 4) boxes, got shape {tuple(boxes.shape)}")
    if anchor.shape != boxes.shape[:2]:
        raise ValueError(f"anchor mask shape {tuple(anchor.shape)} does not match boxes {tuple(boxes.shape)}")
    _check_crop_args(crop_scales, max_tries)
    lo, hi = crop_scales
    b, device = boxes.shape[0], boxes.device
    draws = uniform((3, b, max_tries), generator=generator, device=device)
    height_b = torch.as_tensor(height, dtype=draws.dtype, device=device).expand(b)[:, None]  # (B, 1)
    width_b = torch.as_tensor(width, dtype=draws.dtype, device=device).expand(b)[:, None]
    short = torch.minimum(height_b, width_b)
    side = torch.minimum(torch.floor((lo + (hi - lo) * draws[0]) * short).clamp_(min=1.0), short)  # (B, K)
    x0 = torch.floor(draws[1] * (width_b - side + 1.0))
    y0 = torch.floor(draws[2] * (height_b - side + 1.0))

    box = boxes[:, None].to(side)  # (B, 1, M, 4)
    xa, ya, sa = x0[..., None], y0[..., None], side[..., None]  # (B, K, 1)
    inside = (box[..., 0] >= xa) & (box[..., 1] >= ya) & (box[..., 2] <= xa + sa) & (box[..., 3] <= ya + sa)
    small_side = torch.minimum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])  # (B, 1, M)
    big = small_side * (output_size / sa) >= min_face
    ok = (inside & big & anchor[:, None]).any(dim=-1)  # (B, K)
    ok |= ~anchor.any(dim=-1, keepdim=True)
    found = ok.any(dim=-1)
    first = ok.to(torch.uint8).argmax(dim=-1, keepdim=True)  # first True (0 when none)

    def pick(t: torch.Tensor, fallback: torch.Tensor | float) -> torch.Tensor:
        return torch.where(found, t.gather(1, first)[:, 0], torch.as_tensor(fallback).to(t).expand(b))

    longest = torch.maximum(height_b, width_b)[:, 0]
    return CropWindows(pick(x0, 0.0), pick(y0, 0.0), pick(side, longest), found)


def detection_affine(crops: CropWindows, flipped: torch.Tensor, output_size: int) -> torch.Tensor:
    """(B, 3, 3) input -> output maps: crop, resize to ``output_size``, then flip where ``flipped``."""
    m = crop_resize_matrix(crops.x0, crops.y0, crops.side, crops.side, output_size, output_size)
    flip = hflip_matrix(torch.full_like(crops.x0, float(output_size))) @ m
    return torch.where(flipped[:, None, None], flip, m)


def _flip_order(values: torch.Tensor, perm: torch.Tensor, flipped: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder ``values`` (B, M, K, ...) along ``dim`` by ``perm`` for the samples that flipped."""
    shape = (-1,) + (1,) * (values.dim() - 1)
    return torch.where(flipped.reshape(shape), values.index_select(dim, perm.to(values.device)), values)


def transform_faces(
    faces: dict[str, torch.Tensor],
    crops: CropWindows,
    matrix: torch.Tensor,
    flipped: torch.Tensor,
    output_size: int,
    min_face: float = 0.0,
    mesh_flip_perm: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Move the per-face targets of a padded batch through the crop/flip/resize ``matrix``.

    Args:
        faces: detection batch keys (``boxes`` (B, M, 4), ``valid`` (B, M) and optionally
            ``landmarks`` (B, M, 5, 2), ``landmarks_visible`` (B, M, 5), ``mesh`` (B, M, V, 3),
            ``landmarks_valid``/``mesh_valid``/``ignore`` (B, M), ``difficulty`` (B, M, 3)).
        crops: the crop windows ``matrix`` was built from.
        matrix: (B, 3, 3) from :func:`detection_affine`.
        flipped: (B,) bool.

    Returns:
        ``(faces', num_small)``: new per-face tensors where ``valid`` is False for faces whose box
        centre left the crop or that became smaller than ``min_face``, every other per-face mask is
        cleared for them; ``num_small`` (B,) int64 counts the ``min_face`` drops.
    """
    boxes = faces["boxes"]
    valid = faces["valid"]
    cx = (boxes[..., 0] + boxes[..., 2]) * 0.5
    cy = (boxes[..., 1] + boxes[..., 3]) * 0.5
    x0, y0, side = crops.x0[:, None], crops.y0[:, None], crops.side[:, None]
    keep = valid & (cx > x0) & (cx < x0 + side) & (cy > y0) & (cy < y0 + side)

    new_boxes = transform_boxes(matrix, boxes).clamp(0.0, float(output_size))
    small_side = torch.minimum(new_boxes[..., 2] - new_boxes[..., 0], new_boxes[..., 3] - new_boxes[..., 1])
    small = keep & (small_side < min_face)
    keep = keep & ~small

    out = dict(faces)
    out["boxes"] = new_boxes
    out["valid"] = keep
    for key in _FACE_MASK_KEYS:
        if key in faces:
            out[key] = faces[key] & keep
    if "difficulty" in faces:
        out["difficulty"] = faces["difficulty"] & keep[..., None]
    if "landmarks" in faces:
        perm = FIVE_POINT.flip_tensor(boxes.device)
        out["landmarks"] = _flip_order(transform_points(matrix, faces["landmarks"]), perm, flipped, 2)
        if "landmarks_visible" in faces:
            out["landmarks_visible"] = _flip_order(faces["landmarks_visible"], perm, flipped, 2)
    if "mesh" in faces:
        mesh = faces["mesh"]
        xy = transform_points(matrix, mesh[..., :2])
        z = mesh[..., 2:] * similarity_scale(matrix).to(mesh.dtype).reshape(-1, 1, 1, 1)
        mesh = torch.cat([xy, z], dim=-1)
        if mesh_flip_perm is not None:
            mesh = _flip_order(mesh, mesh_flip_perm, flipped, 2)
        out["mesh"] = mesh
    return out, small.sum(dim=-1)


class _DetectionRecipe:
    """Shared configuration and random draws of both detection paths."""

    def _configure(
        self,
        output_size: int,
        crop_scales: tuple[float, float],
        flip_p: float,
        photometric: bool | PhotometricDistort,
        max_tries: int,
        mesh_flip_perm: torch.Tensor | None,
        min_face: float,
        fill: float,
    ) -> None:
        if output_size < 1:
            raise ValueError(f"output_size must be positive, got {output_size}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        if min_face < 0:
            raise ValueError(f"min_face must be >= 0, got {min_face}")
        _check_crop_args(crop_scales, max_tries)
        lo, hi = crop_scales
        if mesh_flip_perm is not None:
            perm = torch.as_tensor(mesh_flip_perm, dtype=torch.long)
            if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(perm.numel())):
                raise ValueError("mesh_flip_perm must be a permutation of range(V)")
            mesh_flip_perm = perm
        self.output_size = int(output_size)
        self.crop_scales = (float(lo), float(hi))
        self.flip_p = float(flip_p)
        self.max_tries = int(max_tries)
        self.min_face = float(min_face)
        self.fill = float(fill)
        self.mesh_flip_perm = mesh_flip_perm
        if photometric is True:
            photometric = PhotometricDistort()
        self.photometric: PhotometricDistort | None = photometric or None

    def _geometry(
        self,
        faces: dict[str, torch.Tensor],
        height: int | torch.Tensor,
        width: int | torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[dict[str, torch.Tensor], CropWindows, torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes = faces["boxes"]
        if (
            "mesh" in faces
            and self.mesh_flip_perm is not None
            and faces["mesh"].shape[-2] != self.mesh_flip_perm.numel()
        ):
            raise ValueError(
                f"mesh has {faces['mesh'].shape[-2]} vertices but mesh_flip_perm has "
                f"{self.mesh_flip_perm.numel()}"
            )
        anchor = faces["valid"] & ~faces["ignore"] if "ignore" in faces else faces["valid"]
        crops = sample_square_crops(
            boxes,
            anchor,
            height,
            width,
            self.output_size,
            self.crop_scales,
            self.max_tries,
            self.min_face,
            generator,
        )
        flipped = uniform((boxes.shape[0],), generator=generator, device=boxes.device) < self.flip_p
        matrix = detection_affine(crops, flipped, self.output_size)
        new_faces, num_small = transform_faces(
            faces, crops, matrix, flipped, self.output_size, self.min_face, self.mesh_flip_perm
        )
        return new_faces, crops, matrix, flipped, num_small

    def _distort(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return image if self.photometric is None else self.photometric(image, generator)


def _check_faces(faces: dict[str, torch.Tensor], lead: tuple[int, ...], where: str) -> None:
    """Shapes of per-face tensors: leading dims ``lead`` ((N,) per sample, (B, M) per batch)."""
    n = len(lead)
    expected_tail = {
        "boxes": (4,),
        "valid": (),
        "landmarks": (5, 2),
        "landmarks_valid": (),
        "landmarks_visible": (5,),
        "ignore": (),
        "mesh_valid": (),
        "difficulty": (3,),
    }
    for key, value in faces.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: {key!r} must be a tensor, got {type(value).__name__}")
        if tuple(value.shape[:n]) != lead:
            raise ValueError(f"{where}: {key!r} has shape {tuple(value.shape)}, expected leading dims {lead}")
        tail = tuple(value.shape[n:])
        if key == "mesh":
            if len(tail) != 2 or tail[1] != 3:
                raise ValueError(f"{where}: 'mesh' must be (..., V, 3), got shape {tuple(value.shape)}")
        elif tail != expected_tail[key]:
            raise ValueError(
                f"{where}: {key!r} has shape {tuple(value.shape)}, expected {lead + expected_tail[key]}"
            )
        if (
            key in ("valid", "landmarks_valid", "landmarks_visible", "mesh_valid", "ignore", "difficulty")
            and value.dtype != torch.bool
        ):
            raise ValueError(f"{where}: {key!r} must be bool, got {value.dtype}")


class DetectionAugment(_DetectionRecipe):
    """Per-sample RetinaFace augmentation for DataLoader workers (CPU).

    Call it on one detection sample (``image`` (C, H, W) float in [0, 1] -- C = 3 when
    ``photometric`` -- and per-face tensors of leading size N as in :mod:`facelit.batch`; ``valid``
    optional). Returns a new sample with ``image`` (C, S, S), faces that left the crop (or fell
    below ``min_face``) removed, and ``affine``/``flipped``/``num_small``. Other keys are copied.

    Args:
        output_size: side S of the square output.
        crop_scales: range of the crop side as a fraction of the short image side.
        flip_p: horizontal flip probability.
        photometric: True for the default :class:`PhotometricDistort`, a configured one, or False.
        max_tries: crop candidates per image.
        mesh_flip_perm: optional (V,) vertex permutation applied on flips (else mirrored in place).
        min_face: faces whose output box has a side below this many pixels are dropped (0 = keep).
        fill: value of the padding when the fallback crop pads a non-square image.
        antialias: anti-alias the resize when the crop shrinks.
    """

    def __init__(
        self,
        output_size: int = 640,
        crop_scales: tuple[float, float] = (0.3, 1.0),
        flip_p: float = 0.5,
        photometric: bool | PhotometricDistort = True,
        max_tries: int = 250,
        mesh_flip_perm: torch.Tensor | None = None,
        min_face: float = 0.0,
        fill: float = 0.0,
        antialias: bool = True,
    ) -> None:
        self._configure(
            output_size, crop_scales, flip_p, photometric, max_tries, mesh_flip_perm, min_face, fill
        )
        self.antialias = bool(antialias)

    def __call__(self, sample: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        image = sample.get("image")
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.is_floating_point():
            raise ValueError(
                f"sample['image'] must be a (C, H, W) float tensor, got {getattr(image, 'shape', image)!r}"
            )
        if "boxes" not in sample:
            raise ValueError("sample has no 'boxes' (use a (0, 4) tensor for an image without faces)")
        n = sample["boxes"].shape[0]
        faces = {k: sample[k] for k in _FACE_KEYS if k in sample}
        faces.setdefault("valid", torch.ones(n, dtype=torch.bool))
        _check_faces(faces, (n,), "detection sample")
        _, h, w = image.shape
        batched = {k: v[None] for k, v in faces.items()}
        new_faces, crops, matrix, flipped, num_small = self._geometry(batched, h, w, generator)

        s = self.output_size
        window = torch.stack([crops.x0, crops.y0, crops.x0 + crops.side, crops.y0 + crops.side], 1)[0]
        out_image = crop_resize(image, window, (s, s), self.fill, self.antialias)
        out_image = self._distort(out_image, generator)
        if bool(flipped.item()):
            out_image = out_image.flip(-1)

        keep = new_faces["valid"][0]
        out = dict(sample)
        out.update({k: v[0][keep] for k, v in new_faces.items()})
        out["image"] = out_image
        out["affine"] = matrix[0]
        out["flipped"] = flipped[0]
        out["num_small"] = num_small[0]
        return out


class BatchedDetectionAugment(_DetectionRecipe, nn.Module):
    """Batched RetinaFace augmentation on the device (``on_after_batch_transfer``).

    Takes a padded detection batch (``image`` (B, C, H, W) plus the per-face (B, M, ...) keys; an
    optional ``image_size`` (B, 2) int gives each image's true (H, W) when images of different sizes
    were padded bottom/right to a common size) and returns it with ``image`` (B, C, S, S): one
    vectorised crop draw inside each true image, one batched anti-aliased ``crop_resize``, batched
    photometric distortion and flips. Faces that leave the crop get ``valid = False`` (and cleared
    masks); ``image_size`` becomes (S, S). Same arguments as :class:`DetectionAugment`.
    """

    def __init__(
        self,
        output_size: int = 640,
        crop_scales: tuple[float, float] = (0.3, 1.0),
        flip_p: float = 0.5,
        photometric: bool | PhotometricDistort = True,
        max_tries: int = 250,
        mesh_flip_perm: torch.Tensor | None = None,
        min_face: float = 0.0,
        fill: float = 0.0,
        antialias: bool = True,
    ) -> None:
        nn.Module.__init__(self)
        self._configure(
            output_size, crop_scales, flip_p, photometric, max_tries, mesh_flip_perm, min_face, fill
        )
        self.antialias = bool(antialias)

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        image = batch.get("image")
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or not image.is_floating_point():
            raise ValueError(
                f"batch['image'] must be a (B, C, H, W) float tensor, got {getattr(image, 'shape', image)!r}"
            )
        if "boxes" not in batch or "valid" not in batch:
            raise ValueError("detection batch needs 'boxes' (B, M, 4) and 'valid' (B, M)")
        b, _, h, w = image.shape
        height: int | torch.Tensor = h
        width: int | torch.Tensor = w
        if batch.get("image_size") is not None:
            sizes = torch.as_tensor(batch["image_size"], device=image.device)
            outside = (sizes[:, 0] > h) | (sizes[:, 1] > w) | (sizes < 1).any(1) if sizes.ndim == 2 else True
            if sizes.shape != (b, 2) or bool(torch.as_tensor(outside).any()):
                raise ValueError(
                    f"batch['image_size'] must be (B, 2) true sizes within {(h, w)}, got {sizes.tolist()}"
                )
            height, width = sizes[:, 0], sizes[:, 1]
        faces = {k: batch[k] for k in _FACE_KEYS if k in batch}
        _check_faces(faces, (b, faces["boxes"].shape[1]), "detection batch")
        new_faces, crops, matrix, flipped, num_small = self._geometry(faces, height, width, generator)

        s = self.output_size
        windows = torch.stack([crops.x0, crops.y0, crops.x0 + crops.side, crops.y0 + crops.side], 1)
        out_image = self._distort(crop_resize(image, windows, (s, s), self.fill, self.antialias), generator)
        out_image = torch.where(flipped[:, None, None, None], out_image.flip(-1), out_image)
        out = dict(batch)
        out.update(new_faces)
        out["image"] = out_image
        out["affine"] = matrix
        out["flipped"] = flipped
        out["num_small"] = num_small
        if "image_size" in batch:
            out["image_size"] = torch.tensor([[s, s]], device=image.device).expand(b, 2)
        return out
