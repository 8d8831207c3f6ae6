"""RetinaFace (Deng et al., CVPR 2020): backbone + FPN + context modules + multi-task heads,
anchor bookkeeping and post-processing (NMS, multi-scale + flip test-time augmentation).

Convention
----------
Input images are float RGB in [0, 1], (B, 3, H, W); the model normalises them itself (ImageNet
mean/std). Boxes, anchors and landmarks are in pixels of the network input, pixel-area frame
(DESIGN.md): boxes ``xyxy``, points ``(x, y)``, horizontal flip ``x' = W - x``. Landmarks follow
``FIVE_POINT`` (left eye, right eye, nose tip, left and right mouth corners, image sides).

Dense outputs are flattened in the anchor order of ``facelit.geometry.anchors`` (level, row,
column, size): per level the 1x1 head conv gives (B, n_sizes * k, h, w), permuted to
(B, h, w, n_sizes * k) and reshaped to (B, h * w * n_sizes, k).

Mesh head: regressing V * 3 values (V >= 500) at every location of every level would cost a
V*3-channel conv on 100k anchors; instead :meth:`RetinaFace.mesh_at` applies the same 1x1
projection only at the gathered anchors (the positives during training, the kept detections at
inference). Its output is in the anchor-normalised frame of ``encode_mesh``.

Cascade (``cascade=True``): a second set of heads on the same context features whose "anchors" are
the stage-1 decoded boxes: stage 2 regresses again from them (``box_2``, ``landmarks_2``) and
re-scores (``cls_2``). Training matches stage 2 against the (detached) stage-1 boxes with the
stricter ``CASCADE_THRESHOLDS`` (IoU >= 0.7 positive, < 0.5 negative); see ``MultiBoxLoss``.
The mesh head stays on stage 1 (it is normalised by the regular anchor scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from facelit.geometry.anchors import AnchorConfig, AnchorSet, generate_anchors, get_anchor_config
from facelit.geometry.coding import decode_boxes, decode_landmarks
from facelit.geometry.schemes import FIVE_POINT
from facelit.nets.backbones import ImageNormalize, create_backbone
from facelit.nets.context import create_context
from facelit.nets.fpn import FPN

__all__ = [
    "NUM_LANDMARKS",
    "DenseHead",
    "MeshHead",
    "RetinaFace",
    "decode_outputs",
    "detect",
    "detect_multiscale",
]

NUM_LANDMARKS = FIVE_POINT.num_points
_MAX_BACKBONE_LEVEL = 5  # C5 (stride 32) is the coarsest backbone map; coarser levels are FPN extras


def _level_counts(features: Sequence[Tensor], anchors_per_level: Sequence[int]) -> list[int]:
    return [f.shape[-2] * f.shape[-1] * n for f, n in zip(features, anchors_per_level, strict=True)]


class DenseHead(nn.Module):
    """One 1x1 conv per level predicting ``values_per_anchor`` numbers for each anchor.

    Args:
        in_channels: channels of every level's feature map.
        anchors_per_level: anchors per cell for each level.
        values_per_anchor: k (2 for scores, 4 for boxes, 10 for five landmarks).

    Input: L maps (B, C, h_l, w_l). Output: (B, A, k) in anchor order (level, row, column, size).
    """

    def __init__(self, in_channels: int, anchors_per_level: Sequence[int], values_per_anchor: int) -> None:
        super().__init__()
        self.k = values_per_anchor
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, n * values_per_anchor, 1) for n in anchors_per_level
        )

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        outs = []
        for conv, f in zip(self.convs, features, strict=True):
            y = conv(f)
            outs.append(y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, self.k))
        return torch.cat(outs, dim=1)


class MeshHead(nn.Module):
    """1x1 projection from level features to V x 3 anchor-normalised mesh vertices, evaluated only at
    gathered anchors.

    Per level ``l`` and anchor size ``k`` it holds a (3V, C) weight and (3V,) bias: exactly the
    weights of a (n_l * 3V)-channel 1x1 conv (:meth:`as_conv_weight`), restricted to the cells and
    sizes of the requested anchors.
    """

    def __init__(self, in_channels: int, anchors_per_level: Sequence[int], num_vertices: int) -> None:
        super().__init__()
        if num_vertices <= 0:
            raise ValueError(f"num_vertices must be positive, got {num_vertices}")
        self.num_vertices = num_vertices
        self.anchors_per_level = tuple(anchors_per_level)
        groups = sum(self.anchors_per_level)
        self.weight = nn.Parameter(torch.randn(groups, 3 * num_vertices, in_channels) * 0.01)
        self.bias = nn.Parameter(torch.zeros(groups, 3 * num_vertices))

    def as_conv_weight(self, level: int) -> tuple[Tensor, Tensor]:
        """Weight (n_l * 3V, C, 1, 1) and bias (n_l * 3V,) of the equivalent dense 1x1 conv of ``level``."""
        start = sum(self.anchors_per_level[:level])
        n = self.anchors_per_level[level]
        w = self.weight[start : start + n]
        return w.reshape(-1, w.shape[-1], 1, 1), self.bias[start : start + n].reshape(-1)

    def forward(self, features: Sequence[Tensor], batch_idx: Tensor, anchor_idx: Tensor) -> Tensor:
        """Mesh deltas at the given anchors.

        Args:
            features: L maps (B, C, h_l, w_l) (``RetinaFace.forward(...)["features"]``).
            batch_idx: (P,) int64 image index of each requested anchor.
            anchor_idx: (P,) int64 flat anchor index (anchor order of the dense outputs).

        Returns:
            (P, V, 3) in the frame of ``encode_mesh``.
        """
        if batch_idx.shape != anchor_idx.shape or batch_idx.ndim != 1:
            raise ValueError(
                f"batch_idx and anchor_idx must both be (P,), got {tuple(batch_idx.shape)} "
                f"and {tuple(anchor_idx.shape)}"
            )
        device = anchor_idx.device
        counts = torch.tensor(_level_counts(features, self.anchors_per_level), device=device)
        ends = counts.cumsum(0)
        if anchor_idx.numel() and int(anchor_idx.max()) >= int(ends[-1]):
            raise ValueError(f"anchor index {int(anchor_idx.max())} out of range for {int(ends[-1])} anchors")
        level = torch.searchsorted(ends, anchor_idx, right=True)
        local = anchor_idx - (ends - counts)[level]
        n = torch.tensor(self.anchors_per_level, device=device)[level]
        widths = torch.tensor([f.shape[-1] for f in features], device=device)[level]
        size, cell = local % n, local // n
        row, col = cell // widths, cell % widths
        group = torch.tensor([0, *self.anchors_per_level[:-1]], device=device).cumsum(0)[level] + size
        group_level = [lvl for lvl, n_l in enumerate(self.anchors_per_level) for _ in range(n_l)]
        # one (level, size) group at a time: sort by group, one host sync for the segment sizes
        order = group.argsort()
        sizes = torch.bincount(group, minlength=len(group_level)).tolist()
        out = features[0].new_empty(anchor_idx.numel(), 3 * self.num_vertices)
        for g, sel in enumerate(order.split(sizes)):
            if sel.numel():
                feats = features[group_level[g]][batch_idx[sel], :, row[sel], col[sel]]  # (P_g, C)
                out[sel] = F.linear(feats, self.weight[g], self.bias[g]).to(out.dtype)
        return out.view(-1, self.num_vertices, 3)


@dataclass(frozen=True)
class _Levels:
    all: tuple[int, ...]
    backbone: tuple[int, ...]
    extra: int


def _split_levels(fpn_levels: Sequence[int]) -> _Levels:
    levels = tuple(int(v) for v in fpn_levels)
    if not levels or any(b - a != 1 for a, b in zip(levels, levels[1:], strict=False)) or levels[0] < 1:
        raise ValueError(
            f"fpn_levels must be consecutive pyramid levels like (3, 4, 5), got {tuple(fpn_levels)}"
        )
    backbone = tuple(v for v in levels if v <= _MAX_BACKBONE_LEVEL)
    if not backbone:
        raise ValueError(f"fpn_levels {levels} need at least one backbone level <= {_MAX_BACKBONE_LEVEL}")
    return _Levels(levels, backbone, len(levels) - len(backbone))


class RetinaFace(nn.Module):
    """RetinaFace detector.

    Args:
        backbone: backbone name for ``create_backbone`` (``"mnet0.25"``, ``"resnet50"``, any timm
            name) or a module with ``feature_info`` returning the maps of ``fpn_levels``'s strides.
        fpn_levels: pyramid levels (stride ``2 ** level``): (3, 4, 5) or the paper's (2, ..., 6);
            levels above 5 are extra FPN levels computed from C5.
        fpn_channels: channels of the FPN, context modules and heads.
        anchors: anchor preset name (``"mnet"``, ``"paper"``) or an ``AnchorConfig``; its strides
            must be ``2 ** level`` for ``fpn_levels``.
        context: context module name (``"ssh"`` or ``"none"``).
        deformable: deformable convs in the context modules.
        num_mesh_vertices: V of the mesh head; 0 disables it.
        cascade: add the second (cascade) head stage.
        pretrained: only with ``weights_file`` (no downloads).
        weights_file: local backbone checkpoint.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "mnet0.25",
        fpn_levels: Sequence[int] = (3, 4, 5),
        fpn_channels: int = 64,
        anchors: str | AnchorConfig = "mnet",
        context: str = "ssh",
        deformable: bool = False,
        num_mesh_vertices: int = 0,
        cascade: bool = False,
        pretrained: bool = False,
        weights_file: str | Path | None = None,
    ) -> None:
        super().__init__()
        levels = _split_levels(fpn_levels)
        self.anchor_config = get_anchor_config(anchors) if isinstance(anchors, str) else anchors
        strides = tuple(2**v for v in levels.all)
        if self.anchor_config.strides != strides:
            raise ValueError(
                f"anchor strides {self.anchor_config.strides} do not match fpn_levels {levels.all} "
                f"(strides {strides}); use anchors='paper' with (2, 3, 4, 5, 6) and 'mnet' with (3, 4, 5)"
            )
        backbone_strides = tuple(2**v for v in levels.backbone)
        if isinstance(backbone, str):
            self.backbone = create_backbone(backbone, backbone_strides, pretrained, weights_file)
        else:
            self.backbone = backbone
        reductions = tuple(self.backbone.feature_info.reduction())
        if reductions != backbone_strides:
            raise ValueError(f"backbone returns strides {reductions}, fpn_levels need {backbone_strides}")
        n = self.anchor_config.sizes_per_level
        self.normalize = ImageNormalize()
        self.fpn = FPN(self.backbone.feature_info.channels(), fpn_channels, num_extra_levels=levels.extra)
        self.context = nn.ModuleList(
            create_context(context, fpn_channels, fpn_channels, deformable) for _ in levels.all
        )
        self.cls_head = DenseHead(fpn_channels, n, 2)
        self.box_head = DenseHead(fpn_channels, n, 4)
        self.landmark_head = DenseHead(fpn_channels, n, 2 * NUM_LANDMARKS)
        self.cascade = cascade
        if cascade:
            self.cls_head_2 = DenseHead(fpn_channels, n, 2)
            self.box_head_2 = DenseHead(fpn_channels, n, 4)
            self.landmark_head_2 = DenseHead(fpn_channels, n, 2 * NUM_LANDMARKS)
        self.mesh_head = MeshHead(fpn_channels, n, num_mesh_vertices) if num_mesh_vertices > 0 else None
        self._anchor_cache: dict[tuple, AnchorSet] = {}

    @property
    def num_mesh_vertices(self) -> int:
        return 0 if self.mesh_head is None else self.mesh_head.num_vertices

    def forward(self, images: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Dense predictions.

        Args:
            images: (B, 3, H, W) RGB in [0, 1].

        Returns:
            ``cls`` (B, A, 2) logits (background, face), ``box`` (B, A, 4) deltas, ``landmarks``
            (B, A, 10) deltas (x, y per point), ``features`` (L maps (B, C, h_l, w_l) for
            :meth:`mesh_at`); with ``cascade`` also ``cls_2``, ``box_2``, ``landmarks_2``.
        """
        feats = self.fpn(self.backbone(self.normalize(images)))
        feats = [ctx(f) for ctx, f in zip(self.context, feats, strict=True)]
        out: dict[str, Tensor | list[Tensor]] = {
            "cls": self.cls_head(feats),
            "box": self.box_head(feats),
            "landmarks": self.landmark_head(feats),
            "features": feats,
        }
        if self.cascade:
            out["cls_2"] = self.cls_head_2(feats)
            out["box_2"] = self.box_head_2(feats)
            out["landmarks_2"] = self.landmark_head_2(feats)
        return out

    def mesh_at(self, features: Sequence[Tensor], batch_idx: Tensor, anchor_idx: Tensor) -> Tensor:
        """(P, V, 3) anchor-normalised mesh at (``batch_idx``, ``anchor_idx``) pairs (:class:`MeshHead`)."""
        if self.mesh_head is None:
            raise RuntimeError("this RetinaFace has no mesh head (num_mesh_vertices=0)")
        return self.mesh_head(features, batch_idx, anchor_idx)

    def anchors_for(
        self,
        image_size: tuple[int, int],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> AnchorSet:
        """Anchors for inputs of ``image_size`` (H, W), cached per (size, device, dtype)."""
        if device is None:
            device = next(self.parameters()).device
        key = (int(image_size[0]), int(image_size[1]), torch.device(device), dtype)
        if key not in self._anchor_cache:
            cfg = self.anchor_config
            self._anchor_cache[key] = generate_anchors(key[:2], cfg.strides, cfg.sizes, device, dtype)
        return self._anchor_cache[key]

    @torch.no_grad()
    def predict(self, images: Tensor, **detect_kwargs) -> list[dict[str, Tensor]]:
        """``detect(self(images), self.anchors_for(images.shape[-2:]), **detect_kwargs)``."""
        return detect(
            self(images), self.anchors_for(tuple(images.shape[-2:]), images.device), **detect_kwargs
        )


def _anchor_boxes(anchors: AnchorSet | Tensor, num: int) -> Tensor:
    boxes = anchors.boxes if isinstance(anchors, AnchorSet) else anchors
    if boxes.ndim != 2 or boxes.shape != (num, 4):
        raise ValueError(
            f"outputs have {num} anchors but anchors have shape {tuple(boxes.shape)}; "
            "use model.anchors_for(image_size) of the same input size"
        )
    return boxes


def decode_outputs(
    outputs: dict[str, Tensor | list[Tensor]], anchors: AnchorSet | Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Scores and decoded boxes/landmarks of every anchor (the cascade stage when present).

    Args:
        outputs: ``RetinaFace.forward`` output (``cls``, ``box``, ``landmarks`` (B, A, ...)).
        anchors: ``AnchorSet`` or (A, 4) boxes of the same input size.

    Returns:
        float32 scores (B, A) face probability, boxes (B, A, 4) xyxy, landmarks (B, A, 5, 2) in pixels.
    """
    cls = outputs["cls"]
    priors = _anchor_boxes(anchors, cls.shape[1]).float()
    stage = "_2" if "box_2" in outputs else ""
    if stage:  # cascade: stage 2 regresses from the stage-1 boxes
        priors = decode_boxes(outputs["box"].float(), priors)
    boxes = decode_boxes(outputs[f"box{stage}"].float(), priors)
    points = outputs[f"landmarks{stage}"].float().unflatten(-1, (NUM_LANDMARKS, 2))
    scores = outputs[f"cls{stage}"].float().softmax(-1)[..., 1]
    return scores, boxes, decode_landmarks(points, priors)


@dataclass
class _Candidates:
    """Flat pre-NMS detections of a batch: all fields (N, ...)."""

    image: Tensor
    anchor_index: Tensor
    boxes: Tensor
    scores: Tensor
    landmarks: Tensor
    source: Tensor | None = None  # test-time-augmentation pass, see detect_multiscale


def _candidates(
    scores: Tensor, boxes: Tensor, landmarks: Tensor, score_threshold: float, top_k: int
) -> _Candidates:
    k = min(top_k, scores.shape[1])
    top_scores, top_idx = scores.topk(k, dim=1)
    keep = top_scores > score_threshold
    image = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(top_idx)[keep]
    anchor = top_idx[keep]
    return _Candidates(image, anchor, boxes[image, anchor], scores[image, anchor], landmarks[image, anchor])


def _nms_per_image(
    c: _Candidates, num_images: int, nms_threshold: float, keep_top_k: int
) -> list[dict[str, Tensor]]:
    keep = batched_nms(c.boxes, c.scores, c.image, nms_threshold)  # by score, descending
    keep = keep[torch.argsort(c.image[keep], stable=True)]  # grouped by image, still by score within
    counts = torch.bincount(c.image[keep], minlength=num_images)
    rank = torch.arange(keep.numel(), device=keep.device) - (counts.cumsum(0) - counts)[c.image[keep]]
    keep = keep[rank < keep_top_k]
    sizes = counts.clamp(max=keep_top_k).tolist()
    fields = {
        "boxes": c.boxes[keep],
        "scores": c.scores[keep],
        "landmarks": c.landmarks[keep],
        "anchor_index": c.anchor_index[keep],
    }
    if c.source is not None:
        fields["source"] = c.source[keep]
    split = {name: value.split(sizes) for name, value in fields.items()}
    return [{name: split[name][i] for name in fields} for i in range(num_images)]


def _check_detect_args(score_threshold: float, nms_threshold: float, top_k: int, keep_top_k: int) -> None:
    if not 0.0 <= nms_threshold <= 1.0:
        raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
    if top_k < 1 or keep_top_k < 1:
        raise ValueError(f"top_k and keep_top_k must be >= 1, got {top_k}, {keep_top_k}")
    if not 0.0 <= score_threshold < 1.0:
        raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")


@torch.no_grad()
def detect(
    outputs: dict[str, Tensor | list[Tensor]],
    anchors: AnchorSet | Tensor,
    score_threshold: float = 0.02,
    nms_threshold: float = 0.4,
    top_k: int = 5000,
    keep_top_k: int = 750,
) -> list[dict[str, Tensor]]:
    """Decode, threshold, NMS per image (batched over images on the device).

    Per image: anchors with face probability > ``score_threshold`` among the ``top_k`` best, NMS at
    IoU ``nms_threshold``, then the ``keep_top_k`` best.

    Returns:
        per image a dict: ``boxes`` (P, 4) xyxy, ``scores`` (P,), ``landmarks`` (P, 5, 2),
        ``anchor_index`` (P,) int64 (for ``RetinaFace.mesh_at``), sorted by score, descending.
    """
    _check_detect_args(score_threshold, nms_threshold, top_k, keep_top_k)
    scores, boxes, landmarks = decode_outputs(outputs, anchors)
    cands = _candidates(scores, boxes, landmarks, score_threshold, top_k)
    return _nms_per_image(cands, scores.shape[0], nms_threshold, keep_top_k)


def _unflip(c: _Candidates, flipped: Tensor, width: int) -> None:
    """In place: map candidates detected on the horizontally flipped image back (x' = W - x, swap
    left/right landmarks with ``FIVE_POINT.flip_perm``)."""
    boxes = torch.stack((width - c.boxes[:, 2], c.boxes[:, 1], width - c.boxes[:, 0], c.boxes[:, 3]), dim=-1)
    lm = c.landmarks[:, FIVE_POINT.flip_tensor(c.landmarks.device)]
    lm = torch.stack((width - lm[..., 0], lm[..., 1]), dim=-1)
    c.boxes = torch.where(flipped[:, None], boxes, c.boxes)
    c.landmarks = torch.where(flipped[:, None, None], lm, c.landmarks)


@torch.no_grad()
def detect_multiscale(
    model: RetinaFace,
    image: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = True,
    score_threshold: float = 0.02,
    nms_threshold: float = 0.4,
    top_k: int = 5000,
    keep_top_k: int = 750,
) -> dict[str, Tensor]:
    """Test-time augmentation: run ``model`` on resized (and horizontally flipped) copies of one
    image, map every pre-NMS candidate back to the original frame, then NMS once.

    Args:
        model: a RetinaFace (put it in eval mode first).
        image: (3, H, W) or (1, 3, H, W) RGB in [0, 1].
        scales: resize factors; the input of scale ``s`` is ``(round(H s), round(W s))`` pixels
            (bilinear, antialiased when shrinking), and coordinates map back by the exact size ratio.
        flip: also run the mirrored image of every scale (same batch).

    Returns:
        dict as in :func:`detect` plus ``source`` (P,) int64: the pass that produced each detection,
        ``scale_index * (2 if flip else 1) + flipped``; ``anchor_index`` refers to that pass's anchors.
    """
    _check_detect_args(score_threshold, nms_threshold, top_k, keep_top_k)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"detect_multiscale takes one (3, H, W) image, got {tuple(image.shape)}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {tuple(scales)}")
    h, w = image.shape[-2:]
    passes = 2 if flip else 1
    parts: list[_Candidates] = []
    for si, s in enumerate(scales):
        size = (max(1, round(h * s)), max(1, round(w * s)))
        x = image[None]
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=s < 1)
        batch = torch.cat((x, x.flip(-1))) if flip else x
        scores, boxes, landmarks = decode_outputs(model(batch), model.anchors_for(size, image.device))
        c = _candidates(scores, boxes, landmarks, score_threshold, top_k)
        if flip:
            _unflip(c, c.image == 1, size[1])
        ratio = torch.tensor([w / size[1], h / size[0]], device=image.device, dtype=c.boxes.dtype)
        c.boxes = c.boxes * ratio.repeat(2)
        c.landmarks = c.landmarks * ratio
        c.source = si * passes + c.image
        c.image = torch.zeros_like(c.image)
        parts.append(c)
    merged = _Candidates(
        *(torch.cat([getattr(p, f) for p in parts]) for f in _Candidates.__dataclass_fields__)
    )
    return _nms_per_image(merged, 1, nms_threshold, keep_top_k)[0]
