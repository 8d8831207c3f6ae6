"""Batched MTCNN cascade inference: image pyramid, P-Net, R-Net, O-Net, all on the device.

The arithmetic follows the pretrained release as facenet-pytorch runs it (so that its detections
are reproduced within 1 px and 1e-3 in score), with the per-box Python loops replaced by tensor
ops and every pyramid level of a batch packed into one P-Net call:

1. Pyramid: scales ``12 / min_face * factor^k`` while the short side stays >= 12 px; level size
   ``int(H s + 1) x int(W s + 1)``, area (box-filter) resampling.
2. P-Net, once per level over each group of equal-size images, or (``pack_levels``) once on a
   *mosaic*: all levels of all images shelf-packed at even offsets into pages of one size, run
   as one batch. The stem (conv1 + PReLU) is set to -inf outside each level's
   valid region, which reproduces the ceil-mode pool of a level run alone; cells whose 12x12 window
   leaves the level are never read. Windows with face probability >= t1 become boxes
   ``floor((2 c + 1) / s)``, ``floor((2 c + 12) / s)``; NMS (IoU 0.5) per image and level, then
   (IoU 0.7) per image; calibration by the regressed offsets (times the box side), squaring.
3. R-Net on 24x24 crops (probability > t2), NMS 0.7 per image, calibration (side + 1), squaring.
4. O-Net on 48x48 crops (probability > t3), landmarks from the crop box, calibration, NMS 0.7 on
   the "Min" overlap (intersection over the smaller area, areas with the +1 convention).

Crops are the in-image part of the integer-truncated box (not zero-padded), area-resampled from a
summed-area table in float64 (exactly ``F.interpolate(mode="area")`` of the crop, vectorised over
boxes) and run through R/O-Net in fixed-size chunks, so 700-face images stay within bounded memory.

Convention
----------
Images are (3, H, W) float RGB in [0, 1] (a list of different sizes, or a (B, 3, H, W) tensor).
Outputs per image: ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``landmarks`` (N, 5, 2) (x, y), in
the input image's pixels, sorted by score. The release's box arithmetic mixes 0- and 1-based pixel
indices (the +1 of its MATLAB origin), so its boxes sit in the pixel-area frame of DESIGN.md only
to within one pixel; we keep its numbers exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from facelit.nets.mtcnn_ops import area_crops, calibrate, integral_image, min_overlap_nms, square_boxes

__all__ = [
    "CascadeSettings",
    "PRESETS",
    "get_preset",
    "pyramid_scales",
    "integral_image",
    "crop_windows",
    "area_crops",
    "min_overlap_nms",
    "square_boxes",
    "run_pnet",
    "detect_faces",
]

PNET_CELL = 12  # P-Net window side
PNET_STRIDE = 2
RNET_SIZE = 24
ONET_SIZE = 48
NUM_POINTS = 5


@dataclass(frozen=True)
class CascadeSettings:
    """Cascade hyper-parameters.

    Args:
        min_face: smallest face searched for, in pixels (sets the first pyramid scale 12 / min_face).
        factor: pyramid scale step.
        thresholds: face-probability thresholds of P-, R- and O-Net.
        nms_thresholds: IoU of P-Net's per-level NMS, P-Net's per-image NMS, R-Net's NMS and the
            Min-overlap of O-Net's NMS.
        chunk: R/O-Net crops per forward call (bounds memory on crowded images).
        pack_levels: run P-Net once on a mosaic of all pyramid levels of the batch (fewest calls:
            best where per-call overhead dominates, e.g. GPUs); otherwise once per level and group
            of equal-size images (faster on CPUs, where the mosaic's masking and waste cost more).
        page_pixels: P-Net mosaic page area; levels are packed into pages of at most this many
            pixels (or the largest level) and run as one batch.
    """

    min_face: float = 20.0
    factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)
    chunk: int = 512
    pack_levels: bool = False
    page_pixels: int = 2_000_000

    def __post_init__(self) -> None:
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {self.factor}")
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three probabilities, got {self.thresholds}")
        if len(self.nms_thresholds) != 4 or not all(0.0 <= t <= 1.0 for t in self.nms_thresholds):
            raise ValueError(f"nms_thresholds must be four overlaps in [0, 1], got {self.nms_thresholds}")
        if self.min_face <= 0 or self.chunk < 1 or self.page_pixels < 1:
            raise ValueError(f"min_face, chunk and page_pixels must be positive: {self}")


PRESETS: dict[str, CascadeSettings] = {
    "default": CascadeSettings(),
    # The authors' WIDER FACE setting: smaller faces, a finer pyramid, permissive thresholds.
    "wider": CascadeSettings(min_face=10.0, factor=0.79, thresholds=(0.5, 0.5, 0.3)),
}


def get_preset(name: str) -> CascadeSettings:
    """A named :class:`CascadeSettings` (``default`` or ``wider``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown MTCNN preset {name!r}; use one of {sorted(PRESETS)}")
    return PRESETS[name]


def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales ``12 / min_face * factor^k`` while ``min(H, W)`` times the scale stays >= 12.

    Computed by repeated multiplication, as the release does (bit-identical scales).
    """
    m = PNET_CELL / min_face
    min_side = min(height, width) * m
    scales, scale = [], m
    while min_side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        min_side *= factor
    return scales


# ---- P-Net on a mosaic -------------------------------------------------------------------------------
@dataclass
class _Level:
    image: int
    scale: float
    height: int
    width: int
    page: int = 0
    y: int = 0
    x: int = 0


@dataclass
class _Mosaic:
    levels: list[_Level] = field(default_factory=list)
    pages: int = 0
    height: int = 0
    width: int = 0


def _even(n: int) -> int:
    return n + (n % 2)


def _pack(levels: list[_Level], page_pixels: int) -> _Mosaic:
    """Shelf-pack levels (tallest first) at even offsets into equal pages of the widest level's width."""
    width = _even(max(lv.width for lv in levels))
    page_height = max(_even(max(lv.height for lv in levels)), page_pixels // width)
    mosaic = _Mosaic(levels=levels, width=width)
    page, shelf_y, shelf_h, x = 0, 0, 0, 0
    for lv in sorted(levels, key=lambda lv: -lv.height):
        h, w = _even(lv.height), _even(lv.width)
        if x + w > width:  # next shelf
            shelf_y, x, shelf_h = shelf_y + shelf_h, 0, 0
        if shelf_y + h > page_height:  # next page
            page, shelf_y, x, shelf_h = page + 1, 0, 0, 0
        lv.page, lv.y, lv.x = page, shelf_y, x
        x += w
        shelf_h = max(shelf_h, h)
    mosaic.pages = page + 1
    mosaic.height = max(lv.y + _even(lv.height) for lv in levels)
    return mosaic


def _pnet_out_size(n: int) -> int:
    """P-Net output cells along a side of n >= 12 input pixels (conv3, ceil pool 2, conv3, conv3)."""
    return math.ceil((n - 2) / 2) - 4


def _windows(
    levels: list[_Level], probs: Tensor, offsets: Tensor, cell_level: Tensor, origin: Tensor, threshold: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Windows with face probability >= ``threshold`` from P-Net maps.

    Args:
        probs: (P, h, w) face probability; offsets: (P, 4, h, w); cell_level: (P, h, w) level of
            each cell (-1: none); origin: (L, 2) int64 first cell (row, col) of each level in the maps.

    Returns:
        rows (K, 9): x1, y1, x2, y2 in image pixels, probability, 4 offsets; image index (K,);
        level index (K,).
    """
    hit = (cell_level >= 0) & (probs >= threshold)
    page, row, col = hit.nonzero(as_tuple=True)
    level_index = cell_level[page, row, col]
    scale = torch.tensor([lv.scale for lv in levels], dtype=torch.float32, device=probs.device)[level_index]
    image = torch.tensor([lv.image for lv in levels], dtype=torch.long, device=probs.device)[level_index]
    local = torch.stack([col, row], dim=1) - origin[level_index].flip(1)
    cell = local.float()
    top_left = ((PNET_STRIDE * cell + 1) / scale[:, None]).floor()
    bottom_right = ((PNET_STRIDE * cell + PNET_CELL) / scale[:, None]).floor()
    rows = torch.cat(
        [top_left, bottom_right, probs[page, row, col][:, None], offsets.permute(0, 2, 3, 1)[page, row, col]],
        dim=1,
    )
    return rows, image, level_index


def _pnet_maps(pnet: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    out = pnet(x)
    return out["logits"].softmax(dim=1)[:, 1], out["boxes"]


def _run_packed(pnet: nn.Module, images: list[Tensor], levels: list[_Level], settings: CascadeSettings):
    """One P-Net call over a mosaic of every level (see the module docstring)."""
    device = images[0].device
    mosaic = _pack(levels, settings.page_pixels)
    canvas = (
        images[0]
        .new_zeros(mosaic.pages, 3, mosaic.height, mosaic.width)
        .contiguous(memory_format=torch.channels_last)
    )
    stem_valid = torch.zeros(
        mosaic.pages, 1, mosaic.height - 2, mosaic.width - 2, dtype=torch.bool, device=device
    )
    cell_level = torch.full(
        (mosaic.pages, _pnet_out_size(mosaic.height), _pnet_out_size(mosaic.width)),
        -1,
        dtype=torch.long,
        device=device,
    )
    for k, lv in enumerate(levels):  # one resample per pyramid level (not per box)
        level = F.interpolate(images[lv.image][None], size=(lv.height, lv.width), mode="area")[0]
        canvas[lv.page, :, lv.y : lv.y + lv.height, lv.x : lv.x + lv.width] = level
        stem_valid[lv.page, :, lv.y : lv.y + lv.height - 2, lv.x : lv.x + lv.width - 2] = True
        cy, cx = lv.y // PNET_STRIDE, lv.x // PNET_STRIDE
        cell_level[lv.page, cy : cy + _pnet_out_size(lv.height), cx : cx + _pnet_out_size(lv.width)] = k
    stem = pnet.stem(pnet.normalize(canvas)).masked_fill(~stem_valid, float("-inf"))
    pooled = pnet.pool1(stem)
    out = pnet.heads(pnet.trunk(pooled.masked_fill(torch.isinf(pooled), 0.0)))
    origin = torch.tensor([[lv.y // PNET_STRIDE, lv.x // PNET_STRIDE] for lv in levels], device=device)
    probs = out["logits"].softmax(dim=1)[:, 1]
    return _windows(levels, probs, out["boxes"], cell_level, origin, settings.thresholds[0])


def _run_grouped(pnet: nn.Module, images: list[Tensor], levels: list[_Level], settings: CascadeSettings):
    """One P-Net call per pyramid level of each group of equal-size images (the levels batched)."""
    groups: dict[tuple[int, int, float], list[int]] = {}
    for k, lv in enumerate(levels):
        groups.setdefault((lv.height, lv.width, lv.scale), []).append(k)
    parts = []
    for (h, w, _), ks in groups.items():
        batch = torch.stack([images[levels[k].image] for k in ks])
        x = F.interpolate(batch, size=(h, w), mode="area").contiguous(memory_format=torch.channels_last)
        probs, offsets = _pnet_maps(pnet, x)
        cell_level = torch.tensor(ks, device=x.device)[:, None, None].expand_as(probs)
        origin = torch.zeros(len(levels), 2, dtype=torch.long, device=x.device)
        parts.append(_windows(levels, probs, offsets, cell_level, origin, settings.thresholds[0]))
    return tuple(torch.cat(t) for t in zip(*parts, strict=True))


def run_pnet(
    pnet: nn.Module, images: Sequence[Tensor], settings: CascadeSettings
) -> tuple[Tensor, Tensor, Tensor]:
    """P-Net over the pyramids of all images (packed into one call when ``settings.pack_levels``).

    Args:
        images: (3, H_i, W_i) float RGB in [0, 1].

    Returns:
        rows (K, 9): window x1, y1, x2, y2 in image pixels, face probability, 4 box offsets;
        image index (K,); pyramid level index (K,) (unique over all images).
    """
    images = list(images)
    levels = [
        _Level(i, s, int(img.shape[-2] * s + 1), int(img.shape[-1] * s + 1))
        for i, img in enumerate(images)
        for s in pyramid_scales(img.shape[-2], img.shape[-1], settings.min_face, settings.factor)
    ]
    if not levels:
        device = images[0].device if images else torch.device("cpu")
        none = torch.zeros(0, dtype=torch.long, device=device)
        return torch.zeros(0, 9, device=device), none, none
    run = _run_packed if settings.pack_levels else _run_grouped
    return run(pnet, images, levels, settings)


# ---- the cascade --------------------------------------------------------------------------------
def crop_windows(
    boxes: Tensor, image_index: Tensor, sizes: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Integer crop windows of the release (truncate, clip to the image): x0, y0, x1, y1, non-empty."""
    t = boxes.trunc().long()
    hw = sizes[image_index]
    x0 = t[:, 0].clamp(min=1) - 1
    y0 = t[:, 1].clamp(min=1) - 1
    x1 = torch.minimum(t[:, 2], hw[:, 1])
    y1 = torch.minimum(t[:, 3], hw[:, 0])
    return x0, y0, x1, y1, (x1 > x0) & (y1 > y0)


def _run_stage(
    net: nn.Module, table: Tensor, boxes: Tensor, image_index: Tensor, sizes: Tensor, size: int, chunk: int
) -> tuple[dict[str, Tensor], Tensor]:
    """Crop, resample and run ``net`` in chunks: its outputs (probability in ``scores``), valid mask."""
    x0, y0, x1, y1, ok = crop_windows(boxes, image_index, sizes)
    safe = [torch.where(ok, v, torch.ones_like(v) * d) for v, d in ((x0, 0), (y0, 0), (x1, 1), (y1, 1))]
    outs: list[dict[str, Tensor]] = []
    for s in range(0, len(boxes), chunk):
        sl = slice(s, s + chunk)
        crops = area_crops(table, image_index[sl], safe[0][sl], safe[1][sl], safe[2][sl], safe[3][sl], size)
        outs.append(net(crops))
    merged = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    merged["scores"] = merged["logits"].softmax(dim=1)[:, 1]
    return merged, ok


def _as_list(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(images, Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) or (3, H, W) images, got {tuple(images.shape)}")
        return list(images)
    out = list(images)
    for i, img in enumerate(out):
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"image {i}: expected (3, H, W), got {tuple(img.shape)}")
    return out


def _empty_result(device: torch.device, with_landmarks: bool) -> dict[str, Tensor]:
    out = {"boxes": torch.zeros(0, 4, device=device), "scores": torch.zeros(0, device=device)}
    if with_landmarks:
        out["landmarks"] = torch.zeros(0, NUM_POINTS, 2, device=device)
    return out


def _split(num_images: int, image_index: Tensor, **values: Tensor) -> list[dict[str, Tensor]]:
    """Per image, the rows of ``values`` of that image, by descending score."""
    order = torch.argsort(image_index * 2 - values["scores"].clamp(0, 1), stable=True)  # image, then score
    counts = torch.bincount(image_index, minlength=num_images).tolist()
    parts = {k: v[order].split(counts) for k, v in values.items()}
    return [{k: parts[k][i] for k in values} for i in range(num_images)]


@torch.no_grad()
def detect_faces(
    images: Tensor | Sequence[Tensor],
    pnet: nn.Module,
    rnet: nn.Module | None = None,
    onet: nn.Module | None = None,
    settings: CascadeSettings | None = None,
    return_stages: bool = False,
) -> list[dict[str, Tensor]] | tuple[list[dict[str, Tensor]], dict[str, list[dict[str, Tensor]]]]:
    """Run the cascade as far as the nets given (P; P+R; P+R+O) on a batch of images.

    Args:
        images: (B, 3, H, W) or a list of (3, H_i, W_i), float RGB in [0, 1]. Images smaller than
            12 px give no detection.
        pnet, rnet, onet: the stage nets (eval mode); ``onet`` requires ``rnet``.
        settings: :class:`CascadeSettings` (default: the release's defaults).
        return_stages: also return the boxes surviving each stage (``pnet``, ``rnet``, ``onet``),
            per image, for overlays and candidate counts.

    Returns:
        per image ``boxes`` (N, 4), ``scores`` (N,) and, with O-Net, ``landmarks`` (N, 5, 2), by
        descending score; with ``return_stages``, also {stage: per-image dicts of boxes/scores}.
    """
    if onet is not None and rnet is None:
        raise ValueError("O-Net needs R-Net's candidates: pass rnet as well")
    settings = settings or CascadeSettings()
    imgs = _as_list(images)
    device = imgs[0].device if imgs else torch.device("cpu")
    n = len(imgs)
    stages: dict[str, list[dict[str, Tensor]]] = {}
    rows, image_index, level_index = run_pnet(pnet, imgs, settings)
    t_level, t_image, t_rnet, t_onet = settings.nms_thresholds
    keep = batched_nms(rows[:, :4], rows[:, 4], level_index, t_level)
    rows, image_index = rows[keep], image_index[keep]
    keep = batched_nms(rows[:, :4], rows[:, 4], image_index, t_image)
    rows, image_index = rows[keep], image_index[keep]
    boxes, scores = square_boxes(calibrate(rows[:, :4], rows[:, 5:9], plus_one=False)), rows[:, 4]
    landmarks = None
    if return_stages:
        stages["pnet"] = _split(n, image_index, boxes=boxes, scores=scores)
    if rnet is not None and len(boxes):
        sizes = torch.tensor([img.shape[-2:] for img in imgs], dtype=torch.long, device=device)
        max_h, max_w = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        table = integral_image(
            torch.stack([F.pad(img, (0, max_w - img.shape[-1], 0, max_h - img.shape[-2])) for img in imgs])
        )
        for name, net, size, threshold in (
            ("rnet", rnet, RNET_SIZE, settings.thresholds[1]),
            ("onet", onet, ONET_SIZE, settings.thresholds[2]),
        ):
            if net is None or not len(boxes):
                break
            out, ok = _run_stage(net, table, boxes, image_index, sizes, size, settings.chunk)
            passed = ok & (out["scores"] > threshold)
            boxes, scores, image_index = boxes[passed], out["scores"][passed], image_index[passed]
            offsets = out["boxes"][passed]
            if name == "rnet":
                keep = batched_nms(boxes, scores, image_index, t_rnet)
                boxes, scores, image_index = boxes[keep], scores[keep], image_index[keep]
                boxes = square_boxes(calibrate(boxes, offsets[keep], plus_one=True))
            else:
                side = (boxes[:, 2:] - boxes[:, :2] + 1)[:, None, :]  # (K, 1, 2) w, h (+1, as released)
                rel = out["landmarks"][passed].view(-1, 2, NUM_POINTS).transpose(1, 2)  # x1..x5, y1..y5
                landmarks = side * rel + boxes[:, None, :2] - 1
                boxes = calibrate(boxes, offsets, plus_one=True)
                keep = min_overlap_nms(boxes, scores, image_index, t_onet)
                boxes, scores, image_index, landmarks = (
                    boxes[keep],
                    scores[keep],
                    image_index[keep],
                    landmarks[keep],
                )
            if return_stages:
                stages[name] = _split(n, image_index, boxes=boxes, scores=scores)
    if return_stages:  # stages never reached (no candidate left) kept nothing
        for name, net in (("rnet", rnet), ("onet", onet)):
            if net is not None and name not in stages:
                stages[name] = _split(n, image_index, boxes=boxes, scores=scores)
    if onet is not None:
        if landmarks is None:
            landmarks = boxes.new_zeros(0, NUM_POINTS, 2)
        results = _split(n, image_index, boxes=boxes, scores=scores, landmarks=landmarks)
    else:
        results = _split(n, image_index, boxes=boxes, scores=scores)
    return (results, stages) if return_stages else results
