"""Facial-landmark metrics: NME with named normalisers, CED, AUC, failure rate, NME by yaw.

Convention
----------
Points are (x, y) in one pixel frame shared by prediction and ground truth (any frame works:
NME is a ratio of distances). NME of one sample is the mean, over its visible points, of the
point-to-point Euclidean error divided by the sample's normaliser; the dataset NME is the mean
over samples. Normalisers (``normaliser=``):

* ``"inter_ocular"``: distance between the outer eye corners of the ground truth (iBUG-68 points
  36 and 45, 0-based; AFLW-21/19 ``left_eye_left`` and ``right_eye_right``). 300W convention.
* ``"inter_pupil"``: distance between the eye centres of the ground truth (iBUG-68: mean of
  points 36-41 and of 42-47; AFLW ``left_eye_center``/``right_eye_center``; five-point
  ``left_eye``/``right_eye``).
* ``"landmark_box"``: ``sqrt(w * h)`` of the tight box of the annotated ground-truth points
  (AFLW2000-3D convention of 3DDFA, PRNet and 3DDFA-V2: the box of the 68 ground-truth points).
* ``"face_box"``: ``sqrt(w * h)`` of the face box that comes with each sample (AFLW-19: the
  dataset's own face box), passed as (B, 4) xyxy or directly as (B,) sizes.

The names ``"bbox"`` and ``"box"`` of earlier versions are refused with an error that names their
replacements (:data:`RENAMED_NORMALISERS`): which box was meant was not clear from the name.

A normaliser needs its ground-truth points visible; samples whose normaliser is undefined (eye
points not visible, zero size) or that have no visible point get NME = NaN from :func:`nme` and are
skipped (and counted) by :class:`LandmarkMetrics`.

CED and AUC: ``CED(t)`` is the fraction of samples with NME <= t. ``AUC@T`` is the area under the CED
on ``[0, T]`` divided by ``T``, by the trapezoid rule on ``steps`` equally spaced thresholds
(``0, T/(steps-1), ..., T``), as the common evaluation scripts do. As ``steps`` grows it tends to the
exact integral ``mean(max(0, 1 - NME / T))``. Failure rate ``FR@T``: fraction of samples with NME > T.

NME by yaw (AFLW2000-3D protocol of 3DDFA, PRNet and 3DDFA-V2): all 2,000 images are scored and
split by ground-truth |yaw| into [0, 30], (30, 60] and (60, 90] (1,312 / 383 / 305 images); the
last bin is open above, as the benchmark's ``|yaw| > 60`` test is, so no image falls outside a bin.
The reported mean is the mean of the three bin means (``nme_yaw_balanced``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from facelit.geometry.schemes import LandmarkScheme, get_scheme

__all__ = [
    "NORMALISERS",
    "nme",
    "ced_curve",
    "auc_from_nmes",
    "failure_rate",
    "nme_by_yaw",
    "check_normaliser",
    "YawBinNME",
    "LandmarkMetrics",
    "RENAMED_NORMALISERS",
]

NORMALISERS = ("inter_ocular", "inter_pupil", "landmark_box", "face_box")
RENAMED_NORMALISERS = {"bbox": "landmark_box", "box": "face_box"}
DEFAULT_CED_STEPS = 1001
DEFAULT_YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def check_normaliser(normaliser: str) -> str:
    """``normaliser`` if it is one of :data:`NORMALISERS`; otherwise a ValueError that names the
    known ones (and the new name of a renamed one)."""
    if normaliser in NORMALISERS:
        return normaliser
    if normaliser in RENAMED_NORMALISERS:
        new = RENAMED_NORMALISERS[normaliser]
        raise ValueError(
            f"NME normaliser {normaliser!r} was renamed {new!r}: 'landmark_box' = sqrt(w * h) of the tight box "
            f"of the ground-truth landmarks (AFLW2000-3D), 'face_box' = sqrt(w * h) of the dataset's face box "
            f"(AFLW-19); known normalisers: {NORMALISERS}"
        )
    raise ValueError(f"unknown normaliser {normaliser!r}; known: {NORMALISERS}")


def _as_scheme(scheme: LandmarkScheme | str) -> LandmarkScheme:
    return get_scheme(scheme) if isinstance(scheme, str) else scheme


def _group(scheme: LandmarkScheme, names: Sequence[str]) -> tuple[int, ...]:
    return tuple(scheme.index(n) for n in names)


@functools.cache
def _eye_groups(scheme: LandmarkScheme, normaliser: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Indices of the (image-left, image-right) eye point groups that define an eye normaliser."""
    names = set(scheme.point_names)
    numbered_left = tuple(n for n in scheme.point_names if n.startswith("left_eye_") and n[9:].isdigit())
    numbered_right = tuple(n for n in scheme.point_names if n.startswith("right_eye_") and n[10:].isdigit())
    if normaliser == "inter_ocular":
        if {"left_eye_left", "right_eye_right"} <= names:
            return _group(scheme, ["left_eye_left"]), _group(scheme, ["right_eye_right"])
        if numbered_left and numbered_right:  # iBUG-68: outer corners are left_eye_0 (36), right_eye_3 (45)
            return _group(scheme, ["left_eye_0"]), _group(scheme, ["right_eye_3"])
    elif normaliser == "inter_pupil":
        for left, right in (("left_eye_center", "right_eye_center"), ("left_eye", "right_eye")):
            if {left, right} <= names:
                return _group(scheme, [left]), _group(scheme, [right])
        if numbered_left and numbered_right:
            return _group(scheme, numbered_left), _group(scheme, numbered_right)
    raise ValueError(f"scheme {scheme.name!r} has no eye points for the {normaliser!r} normaliser")


def _group_mean(
    points: torch.Tensor, visible: torch.Tensor, idx: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, 2) of the points ``idx`` and (B,) whether all of them are visible."""
    sel = list(idx)
    return points[:, sel].mean(dim=1), visible[:, sel].all(dim=1)


def _normaliser_values(
    target: torch.Tensor,
    visible: torch.Tensor,
    normaliser: str,
    scheme: LandmarkScheme,
    face_box: torch.Tensor | None,
) -> torch.Tensor:
    """Per-sample normaliser (B,), NaN where undefined."""
    check_normaliser(normaliser)
    nan = torch.full_like(target[:, 0, 0], float("nan"))
    if normaliser in ("inter_ocular", "inter_pupil"):
        left_idx, right_idx = _eye_groups(scheme, normaliser)
        left, left_ok = _group_mean(target, visible, left_idx)
        right, right_ok = _group_mean(target, visible, right_idx)
        value = torch.linalg.vector_norm(left - right, dim=-1)
        return torch.where(left_ok & right_ok, value, nan)
    if normaliser == "landmark_box":
        vis = visible.unsqueeze(-1)
        lo = torch.where(vis, target, torch.full_like(target, float("inf"))).amin(dim=1)
        hi = torch.where(vis, target, torch.full_like(target, float("-inf"))).amax(dim=1)
        wh = hi - lo
        value = torch.sqrt(wh[:, 0].clamp(min=0) * wh[:, 1].clamp(min=0))
        return torch.where(visible.any(dim=1), value, nan)
    if face_box is None:
        raise ValueError("normaliser 'face_box' needs the per-sample face box (B, 4) xyxy or sizes (B,)")
    face_box = face_box.to(target.dtype)
    if face_box.shape == (target.shape[0], 4):
        wh = face_box[:, 2:] - face_box[:, :2]
        return torch.sqrt(wh[:, 0].clamp(min=0) * wh[:, 1].clamp(min=0))
    if face_box.shape == (target.shape[0],):
        return face_box
    raise ValueError(
        f"face_box must be (B, 4) xyxy or (B,) sizes with B={target.shape[0]}, got {tuple(face_box.shape)}"
    )


def nme(
    pred: torch.Tensor,
    target: torch.Tensor,
    visible: torch.Tensor | None,
    normaliser: str,
    scheme: LandmarkScheme | str,
    face_box: torch.Tensor | None = None,
    annotated: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample normalised mean error.

    Args:
        pred: (B, K, 2) predicted points.
        target: (B, K, 2) ground-truth points.
        visible: (B, K) bool, points that count; ``None`` means all.
        normaliser: one of :data:`NORMALISERS` (see the module docstring).
        scheme: the landmark scheme (or its name) of the K points.
        face_box: (B, 4) xyxy face boxes or (B,) sizes, for ``normaliser="face_box"`` only.
        annotated: (B, K) bool, points whose ground-truth position is known; the normaliser
            (eye distance, point box) is computed from these. ``None`` means all: the literature
            normalises by ground-truth geometry even where a point is occluded (e.g. the far eye
            corner of a profile face), while the error itself averages only ``visible`` points.

    Returns:
        (B,) NME per sample; NaN where the normaliser is undefined or no point is visible.
    """
    scheme = _as_scheme(scheme)
    check_normaliser(normaliser)
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and target must both be (B, K, 2), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.shape[1] != scheme.num_points:
        raise ValueError(f"scheme {scheme.name!r} has {scheme.num_points} points, got K={pred.shape[1]}")
    if visible is None:
        visible = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    if visible.shape != pred.shape[:2]:
        raise ValueError(f"visible must be (B, K) = {tuple(pred.shape[:2])}, got {tuple(visible.shape)}")
    pred, target, visible = pred.float(), target.float(), visible.bool()
    if annotated is None:
        annotated = torch.ones_like(visible)
    elif annotated.shape != visible.shape:
        raise ValueError(f"annotated must be (B, K) = {tuple(visible.shape)}, got {tuple(annotated.shape)}")
    norm = _normaliser_values(target, annotated.bool(), normaliser, scheme, face_box)
    dist = torch.linalg.vector_norm(pred - target, dim=-1)
    count = visible.sum(dim=1)
    mean_err = (dist * visible).sum(dim=1) / count.clamp(min=1)
    out = mean_err / norm
    valid = (count > 0) & torch.isfinite(norm) & (norm > 0)
    return torch.where(valid, out, torch.full_like(out, float("nan")))


def _as_tensor(nmes: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    values = torch.as_tensor(nmes, dtype=torch.float64).flatten().cpu()
    if bool(torch.isnan(values).any()):
        raise ValueError(f"{int(torch.isnan(values).sum())} NaN NME values: drop undefined samples first")
    return values


def ced_curve(
    nmes: torch.Tensor | np.ndarray | Sequence[float],
    max_threshold: float = 0.08,
    steps: int = DEFAULT_CED_STEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative error distribution.

    Args:
        nmes: (N,) per-sample NME.
        max_threshold: last threshold T.
        steps: number of thresholds, equally spaced on [0, T] (>= 2).

    Returns:
        thresholds (steps,) and fraction (steps,) of samples with NME <= threshold (float64).
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if not max_threshold > 0:
        raise ValueError(f"max_threshold must be > 0, got {max_threshold}")
    values = torch.sort(_as_tensor(nmes)).values
    thresholds = torch.linspace(0.0, max_threshold, steps, dtype=torch.float64)
    if values.numel() == 0:
        return thresholds, torch.full_like(thresholds, float("nan"))
    counts = torch.searchsorted(values, thresholds, right=True)
    return thresholds, counts.to(torch.float64) / values.numel()


def auc_from_nmes(
    nmes: torch.Tensor | np.ndarray | Sequence[float],
    threshold: float = 0.08,
    steps: int = DEFAULT_CED_STEPS,
) -> float:
    """Area under the CED on [0, threshold] divided by threshold (trapezoid on ``steps`` thresholds)."""
    t, frac = ced_curve(nmes, threshold, steps)
    return float(torch.trapezoid(frac, t) / threshold)


def failure_rate(nmes: torch.Tensor | np.ndarray | Sequence[float], threshold: float = 0.1) -> float:
    """Fraction of samples with NME > threshold (NaN for no sample)."""
    values = _as_tensor(nmes)
    return float((values > threshold).double().mean()) if values.numel() else float("nan")


class YawBinNME(NamedTuple):
    """NME by |yaw| bin: per-bin means (NaN for an empty bin), per-bin sample counts and the mean of
    the non-empty bin means (the AFLW2000-3D "mean")."""

    means: list[float]
    counts: list[int]
    balanced: float


def nme_by_yaw(
    nmes: torch.Tensor,
    yaws: torch.Tensor,
    bins: Sequence[tuple[float, float]] = DEFAULT_YAW_BINS,
    open_last: bool = True,
) -> YawBinNME:
    """Mean NME per |yaw| bin and their balanced mean (AFLW2000-3D protocol, module docstring).

    The first bin includes both ends (``lo <= |yaw| <= hi``), later bins exclude their lower end
    (``lo < |yaw| <= hi``), so [0, 30], (30, 60], (60, 90] partition [0, 90]. With ``open_last`` (the
    protocol) the last bin has no upper end, as 3DDFA's ``|yaw| > 60``; otherwise samples above it are
    left out. NaN yaws are left out of every bin.

    Args:
        nmes: (N,) per-sample NME.
        yaws: (N,) yaw in degrees (NaN where unknown).
        bins: (lo, hi) pairs in degrees, increasing.
        open_last: the last bin also takes every |yaw| above its upper end.

    Returns:
        :class:`YawBinNME` (means, counts, balanced).
    """
    nmes = _as_tensor(nmes)
    absyaw = torch.as_tensor(yaws, dtype=torch.float64).flatten().cpu().abs()
    if nmes.shape != absyaw.shape:
        raise ValueError(f"nmes and yaws must have the same length, got {nmes.numel()} and {absyaw.numel()}")
    lo = torch.tensor([b[0] for b in bins], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in bins], dtype=torch.float64)
    if open_last:
        hi[-1] = math.inf
    above = absyaw[:, None] > lo
    above[:, 0] |= absyaw == lo[0]
    member = above & (absyaw[:, None] <= hi)  # (N, nbins); NaN compares False
    counts = member.sum(dim=0)
    sums = (member * nmes[:, None]).sum(dim=0)
    means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
    finite = means[torch.isfinite(means)]
    balanced = float(finite.mean()) if finite.numel() else float("nan")
    return YawBinNME([float(m) for m in means], [int(c) for c in counts], balanced)


def _thr_key(threshold: float) -> str:
    return f"{threshold:.2f}" if math.isclose(round(threshold, 2), threshold) else f"{threshold:g}"


class LandmarkMetrics(Metric):
    """NME, AUC, failure rate and (optionally) NME by |yaw| bin, correct under DDP.

    States are the per-sample NMEs and yaws (``cat``) and the number of skipped samples (``sum``),
    so the result over several processes equals the result over the union of their samples.

    Args:
        normaliser: one of :data:`NORMALISERS`.
        scheme: landmark scheme (or its name) of the K points.
        auc_thresholds: thresholds T of the reported ``auc@T``.
        fr_thresholds: thresholds T of the reported ``fr@T``.
        ced_steps: thresholds on [0, T] for the trapezoid AUC.
        yaw_bins: |yaw| bins (degrees) reported when yaws are given; the last is open above
            (:func:`nme_by_yaw`), so every sample with a yaw is in a bin.

    ``compute()`` returns a dict of scalar tensors: ``nme``, ``auc@0.08`` ..., ``fr@0.08``,
    ``fr@0.10`` ..., ``num_samples``, ``num_skipped`` and, when any yaw was given, ``nme_yaw_0_30``,
    ``nme_yaw_30_60``, ``nme_yaw_60_90`` (one per bin), ``num_yaw_0_30`` ... (samples per bin) and
    ``nme_yaw_balanced`` (mean of the bin means).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self,
        normaliser: str = "inter_ocular",
        scheme: LandmarkScheme | str = "ibug68",
        auc_thresholds: Sequence[float] = (0.08,),
        fr_thresholds: Sequence[float] = (0.08, 0.10),
        ced_steps: int = DEFAULT_CED_STEPS,
        yaw_bins: Sequence[tuple[float, float]] = DEFAULT_YAW_BINS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.normaliser = check_normaliser(normaliser)
        self.scheme = _as_scheme(scheme)
        if normaliser in ("inter_ocular", "inter_pupil"):
            _eye_groups(self.scheme, normaliser)  # fail at construction, not at the first batch
        self.auc_thresholds = tuple(float(t) for t in auc_thresholds)
        self.fr_thresholds = tuple(float(t) for t in fr_thresholds)
        self.ced_steps = int(ced_steps)
        self.yaw_bins = tuple((float(lo), float(hi)) for lo, hi in yaw_bins)
        self.add_state("nmes", default=[], dist_reduce_fx="cat")
        self.add_state("yaws", default=[], dist_reduce_fx="cat")
        self.add_state("num_skipped", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        visible: torch.Tensor | None = None,
        face_box: torch.Tensor | None = None,
        yaw: torch.Tensor | None = None,
        annotated: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: pred/target (B, K, 2), visible (B, K), face_box (B, 4) or (B,) (normaliser
        ``face_box`` only), yaw (B,) degrees, annotated (B, K) (points with known positions, for the
        normaliser; default all)."""
        values = nme(pred.detach(), target.detach(), visible, self.normaliser, self.scheme, face_box, annotated)
        if yaw is None:
            yaws = torch.full_like(values, float("nan"))
        else:
            yaws = yaw.detach().to(values.dtype).flatten()
            if yaws.shape != values.shape:
                raise ValueError(f"yaw must be (B,) with B={values.numel()}, got {tuple(yaw.shape)}")
        ok = torch.isfinite(values)
        self.nmes.append(values[ok])
        self.yaws.append(yaws[ok])
        self.num_skipped = self.num_skipped + (~ok).sum()  # out of place: states may be inference tensors

    def compute(self) -> dict[str, torch.Tensor]:
        nmes = dim_zero_cat(self.nmes) if self.nmes else torch.zeros(0)
        yaws = dim_zero_cat(self.yaws) if self.yaws else torch.zeros(0)
        device = self.num_skipped.device
        out: dict[str, float] = {"nme": float(nmes.mean()) if nmes.numel() else float("nan")}
        for t in self.auc_thresholds:
            out[f"auc@{_thr_key(t)}"] = auc_from_nmes(nmes, t, self.ced_steps)
        for t in self.fr_thresholds:
            out[f"fr@{_thr_key(t)}"] = failure_rate(nmes, t)
        if yaws.numel() and bool(torch.isfinite(yaws).any()):
            by_yaw = nme_by_yaw(nmes, yaws, self.yaw_bins)
            for (lo, hi), value, count in zip(self.yaw_bins, by_yaw.means, by_yaw.counts, strict=True):
                out[f"nme_yaw_{lo:g}_{hi:g}"] = value
                out[f"num_yaw_{lo:g}_{hi:g}"] = count
            out["nme_yaw_balanced"] = by_yaw.balanced
        result = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in out.items()}
        result["num_samples"] = torch.tensor(nmes.numel(), device=device)
        result["num_skipped"] = self.num_skipped.clone()
        return result
