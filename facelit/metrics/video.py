"""Landmark metrics over clips (300-VW, synthetic video): NME per frame, per clip and per 300-VW
category, CED / AUC / failure rate over frames, and temporal jitter.

Convention
----------
Clip tensors follow :mod:`facelit.datasets.clips`: ``pred`` and ``target`` (B, T, K, 2) in one
pixel frame, ``mask`` (B, T) bool with False on padding frames. The NME of a frame is
:func:`facelit.metrics.landmarks.nme` of that frame (``inter_ocular`` by default: outer eye corners
36 and 45 of iBUG-68, which the 7-point ``rednet7`` subset contains as its first and fourth points).
By default every point counts, occluded ones included: their ground truth is exact (synthetic) or
annotated (300-VW, where every frame has all 68 points), and inferring them is what a temporal
model is for; pass ``visible`` to score visible points only.

300-VW reports per category over *frames*: the category NME is the mean over every frame of its
videos (not a mean of clip means), and the CED / AUC@0.08 / FR@0.08 are over those frames.

Temporal jitter of a clip: the mean, over points and over frames t whose neighbours t - 1 and t + 1
are valid too, of ``|| a_pred(t) - a_gt(t) ||`` with the second difference
``a(t) = p(t + 1) - 2 p(t) + p(t - 1)`` (frame-to-frame acceleration), divided by the frame's
normaliser like the NME. A perfect or rigidly offset prediction has jitter 0; noise that leaves the
NME unchanged shows here. NaN for clips without three consecutive valid frames.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from facelit.geometry.schemes import IBUG68, REDNET7, LandmarkScheme, get_scheme

from .landmarks import DEFAULT_CED_STEPS, _normaliser_values, auc_from_nmes, ced_curve, failure_rate, nme

__all__ = [
    "DEFAULT_VIDEO_THRESHOLD",
    "scheme_for",
    "nme_per_frame",
    "clip_nme",
    "category_nme",
    "category_ced",
    "temporal_jitter",
    "VideoLandmarkMetrics",
]

DEFAULT_VIDEO_THRESHOLD = 0.08  # 300-VW: CED up to 0.08, AUC@0.08, failure above 0.08
_SCHEMES_BY_SIZE = {IBUG68.num_points: IBUG68, REDNET7.num_points: REDNET7}


def scheme_for(num_points: int, scheme: LandmarkScheme | str | None = None) -> LandmarkScheme:
    """``scheme`` (or its name), or the scheme implied by K (68: ibug68, 7: rednet7)."""
    if scheme is not None:
        return get_scheme(scheme) if isinstance(scheme, str) else scheme
    if num_points not in _SCHEMES_BY_SIZE:
        raise ValueError(f"no default scheme for K={num_points} points: pass scheme=")
    return _SCHEMES_BY_SIZE[num_points]


def _check_clips(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and target must both be (B, T, K, 2), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if mask is None:
        return torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must be (B, T) = {tuple(pred.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool()


def nme_per_frame(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    normaliser: str = "inter_ocular",
    scheme: LandmarkScheme | str | None = None,
    visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """NME of every frame.

    Args:
        pred, target: (B, T, K, 2). mask: (B, T) valid frames (None: all).
        normaliser: a :data:`facelit.metrics.landmarks.NORMALISERS` name (not ``face_box``).
        scheme: the K points' scheme (default from K: ibug68 or rednet7).
        visible: (B, T, K) points that count (None: all).

    Returns:
        (B, T) NME, NaN on padding frames and where the normaliser is undefined.
    """
    mask = _check_clips(pred, target, mask)
    b, t, k, _ = pred.shape
    s = scheme_for(k, scheme)
    vis = None if visible is None else visible.reshape(b * t, k)
    out = nme(pred.reshape(b * t, k, 2), target.reshape(b * t, k, 2), vis, normaliser, s).reshape(b, t)
    return torch.where(mask, out, torch.full_like(out, float("nan")))


def clip_nme(frame_nme: torch.Tensor) -> torch.Tensor:
    """(B,) mean NME over each clip's defined frames (NaN for a clip without one)."""
    return torch.nanmean(frame_nme, dim=1)


def _frames_by_category(frame_nme: torch.Tensor, category: torch.Tensor) -> dict[int, torch.Tensor]:
    """The defined frame NMEs (N_c,) of each category present ((B, T) frames, (B,) categories)."""
    cats = category.reshape(-1, 1).expand_as(frame_nme)
    ok = ~torch.isnan(frame_nme)
    groups = {int(c): frame_nme[ok & (cats == c)] for c in torch.unique(category).tolist()}
    return {c: v for c, v in groups.items() if v.numel()}


def category_nme(frame_nme: torch.Tensor, category: torch.Tensor) -> dict[int, float]:
    """Mean NME over all defined frames of each category present ((B, T) frames, (B,) categories)."""
    return {c: float(v.double().mean()) for c, v in _frames_by_category(frame_nme, category).items()}


def category_ced(
    frame_nme: torch.Tensor,
    category: torch.Tensor,
    max_threshold: float = DEFAULT_VIDEO_THRESHOLD,
    steps: int = DEFAULT_CED_STEPS,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """CED (thresholds, fractions) over the defined frames of each category present."""
    return {
        c: ced_curve(v, max_threshold, steps) for c, v in _frames_by_category(frame_nme, category).items()
    }


def temporal_jitter(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    normaliser: str = "inter_ocular",
    scheme: LandmarkScheme | str | None = None,
) -> torch.Tensor:
    """Per-clip jitter (B,): acceleration error of the prediction against the ground truth's,
    normalised (module docstring); NaN for clips without three consecutive valid frames."""
    mask = _check_clips(pred, target, mask)
    b, t, k, _ = pred.shape
    if t < 3:
        return torch.full((b,), float("nan"), device=pred.device)
    s = scheme_for(k, scheme)
    pred, target = pred.float(), target.float()
    accel = (pred - target)[:, 2:] - 2 * (pred - target)[:, 1:-1] + (pred - target)[:, :-2]  # (B, T-2, K, 2)
    ok = mask[:, 2:] & mask[:, 1:-1] & mask[:, :-2]
    middle = target[:, 1:-1].reshape(-1, k, 2)
    norm = _normaliser_values(
        middle, torch.ones(middle.shape[:2], dtype=torch.bool, device=middle.device), normaliser, s, None
    ).reshape(b, t - 2)
    per_frame = torch.linalg.vector_norm(accel, dim=-1).mean(-1) / norm
    ok = ok & torch.isfinite(per_frame)
    total = torch.where(ok, per_frame, torch.zeros_like(per_frame)).sum(1)
    count = ok.sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


class VideoLandmarkMetrics(Metric):
    """Accumulates frame NMEs, their 300-VW category and occlusion flag, and clip jitters (DDP-safe).

    ``compute()`` returns ``nme`` (mean over frames), ``auc@T``, ``fr@T`` (over frames), ``jitter``
    (mean over clips), ``nme_occluded`` / ``nme_unoccluded`` (frames with / without an occluder, when
    both occur), ``jitter_occluded`` / ``jitter_unoccluded`` (clips with / without an occluded valid
    frame, when both occur) and ``nme_cat{c}`` for every 300-VW category c >= 1 seen. Undefined
    frames (NaN) and padding are skipped and counted in ``skipped``.

    Args:
        normaliser: NME normaliser. scheme: the K points' scheme (default from K).
        threshold: T of AUC and failure rate (0.08 for 300-VW).
    """

    full_state_update = False

    def __init__(
        self,
        normaliser: str = "inter_ocular",
        scheme: LandmarkScheme | str | None = None,
        threshold: float = DEFAULT_VIDEO_THRESHOLD,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.normaliser, self.scheme, self.threshold = normaliser, scheme, float(threshold)
        for name in ("frame_nme", "frame_category", "frame_occluded", "clip_jitter", "clip_occluded"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("skipped", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        category: torch.Tensor | None = None,
        occluded: torch.Tensor | None = None,
    ) -> None:
        """pred, target (B, T, K, 2); mask, occluded (B, T) bool; category (B,) int64."""
        mask = _check_clips(pred, target, mask)
        frame = nme_per_frame(pred.detach(), target, mask, self.normaliser, self.scheme)
        b, t = frame.shape
        cats = torch.zeros(b, dtype=torch.long, device=frame.device) if category is None else category
        occ = torch.zeros_like(mask) if occluded is None else occluded.bool()
        ok = mask & ~torch.isnan(frame)
        self.skipped += int((mask & torch.isnan(frame)).sum())
        self.frame_nme.append(frame[ok].double())
        self.frame_category.append(cats.reshape(b, 1).expand(b, t)[ok])
        self.frame_occluded.append(occ[ok])
        self.clip_jitter.append(
            temporal_jitter(pred.detach(), target, mask, self.normaliser, self.scheme).double()
        )
        self.clip_occluded.append((occ & mask).any(dim=1))

    def compute(self) -> dict[str, torch.Tensor]:
        nmes = dim_zero_cat(self.frame_nme) if self.frame_nme else torch.zeros(0, dtype=torch.float64)
        cats = dim_zero_cat(self.frame_category) if self.frame_category else torch.zeros(0, dtype=torch.long)
        occ = dim_zero_cat(self.frame_occluded) if self.frame_occluded else torch.zeros(0, dtype=torch.bool)
        jit = dim_zero_cat(self.clip_jitter) if self.clip_jitter else torch.zeros(0, dtype=torch.float64)
        clip_occ = dim_zero_cat(self.clip_occluded) if self.clip_occluded else occ.new_zeros(0)
        nan = torch.tensor(math.nan, dtype=torch.float64)
        out = {
            "nme": nmes.mean() if nmes.numel() else nan,
            f"auc@{self.threshold:g}": torch.tensor(
                auc_from_nmes(nmes.cpu(), self.threshold), dtype=torch.float64
            )
            if nmes.numel()
            else nan,
            f"fr@{self.threshold:g}": torch.tensor(
                failure_rate(nmes.cpu(), self.threshold), dtype=torch.float64
            ),
            "jitter": torch.nanmean(jit) if jit.numel() else nan,
            "skipped": self.skipped.clone(),
        }
        if bool(occ.any()) and bool((~occ).any()):
            out["nme_occluded"], out["nme_unoccluded"] = nmes[occ].mean(), nmes[~occ].mean()
        if bool(clip_occ.any()) and bool((~clip_occ).any()):
            out["jitter_occluded"] = torch.nanmean(jit[clip_occ])
            out["jitter_unoccluded"] = torch.nanmean(jit[~clip_occ])
        for c in torch.unique(cats).tolist():
            if c >= 1:
                out[f"nme_cat{c}"] = nmes[cats == c].mean()
        return out
