"""RetinaFace (Deng et al., CVPR 2020): backbone + FPN + context modules + multi-task heads,
anchor bookkeeping; post-processing (NMS, box voting, multi-scale + flip test-time augmentation) lives
in ``facelit.nets.retinaface_post`` and is re-exported here.

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
re-scores (``cls_2``). Training matches stage 1 on the anchors at IoU >= 0.7 / < 0.3 and stage 2
against the (detached) stage-1 boxes at >= 0.5 / < 0.4 (``CASCADE_THRESHOLDS``); see ``MultiBoxLoss``.
The mesh head stays on stage 1 (it is normalised by the regular anchor scale).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facelit.geometry.anchors import AnchorConfig, AnchorSet, generate_anchors, get_anchor_config
from facelit.nets.backbones import ImageNormalize, create_backbone
from facelit.nets.context import create_context
from facelit.nets.fpn import FPN
from facelit.nets.retinaface_post import NUM_LANDMARKS, decode_outputs, detect, detect_multiscale

__all__ = [
    "ANCHOR_CACHE_SIZE",
    "NUM_LANDMARKS",
    "DenseHead",
    "MeshHead",
    "RetinaFace",
    "decode_outputs",
    "detect",
    "detect_multiscale",
]

ANCHOR_CACHE_SIZE = 16  # input sizes whose anchors RetinaFace.anchors_for keeps (LRU)
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
        self._anchor_cache: OrderedDict[tuple, AnchorSet] = OrderedDict()
        # inference (eval, no autograd) runs channels_last maps with BatchNorm folded into the convs
        # (facelit.nets.fused.ConvBNAct): ~25 % faster on CPU, equal up to float rounding
        self.channels_last_inference = True

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
        x = self.normalize(images)
        if self.channels_last_inference and not (self.training or torch.is_grad_enabled()):
            x = x.contiguous(memory_format=torch.channels_last)  # after normalising: NCHW is faster there
        feats = self.fpn(self.backbone(x))
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
        """Anchors for inputs of ``image_size`` (H, W), cached per (size, device, dtype).

        The cache keeps the ``ANCHOR_CACHE_SIZE`` most recently used sizes (LRU), so that predicting
        at original resolution or with multi-scale TTA does not grow it without bound.
        """
        if device is None:
            device = next(self.parameters()).device
        key = (int(image_size[0]), int(image_size[1]), torch.device(device), dtype)
        cache = self._anchor_cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        cfg = self.anchor_config
        cache[key] = generate_anchors(key[:2], cfg.strides, cfg.sizes, device, dtype)
        while len(cache) > ANCHOR_CACHE_SIZE:
            cache.popitem(last=False)
        return cache[key]

    @torch.no_grad()
    def predict(self, images: Tensor, **detect_kwargs) -> list[dict[str, Tensor]]:
        """``detect(self(images), self.anchors_for(images.shape[-2:]), **detect_kwargs)``."""
        return detect(
            self(images), self.anchors_for(tuple(images.shape[-2:]), images.device), **detect_kwargs
        )
