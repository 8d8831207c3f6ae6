"""Face verification: the LFW 10-fold protocol of the official SphereFace evaluation, ROC, TAR@FAR.

Protocol (``evaluation.m`` of the official SphereFace release), for pairs (left, right, same, fold):

1. feature of an image = concat(f(img), f(flip(img))) (done by the model, :func:`flip_features`);
2. for every fold i in 1..10, starting from the original features each time: subtract the mean
   feature of the 9 other (training) folds, taken over both sides of their pairs; L2-normalise;
   score = cosine of the two sides;
3. threshold of fold i = the mean of all thresholds of the grid -1 : 1e-4 : 1 that maximise the
   accuracy on the training folds; a pair counts as correct when (same and score > t) or
   (not same and score < t), strictly, as the official ``getAccuracy``;
4. accuracy = mean over the 10 test folds; std = their sample standard deviation (MATLAB ``std``).

ROC and TAR@FAR use every pair's score from the fold in which it was tested. TAR@FAR=f is the
largest true-accept rate over thresholds whose false-accept rate is <= f (accept when score > t).

Command: ``python -m facelit.metrics.verification --pairs PAIRS --features FEATS.npz`` prints one
JSON line (``accuracy``, ``std``, ``tar@far=1e-3``, ``tar@far=1e-4``, ``threshold``, ``pairs``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "THRESHOLD_STEPS",
    "DEFAULT_FARS",
    "pair_accuracy",
    "best_threshold",
    "fold_scores",
    "tar_at_far",
    "roc_curve",
    "evaluate_pairs",
    "VerificationMetric",
    "IncompletePairsError",
    "features_for_pairs",
    "main",
]

THRESHOLD_STEPS = 10000
"""Thresholds (-THRESHOLD_STEPS..THRESHOLD_STEPS) / THRESHOLD_STEPS: the official grid, step 1e-4."""
DEFAULT_FARS = (1e-3, 1e-4)


def _as_bool(same: torch.Tensor) -> torch.Tensor:
    return same.to(torch.bool)


def pair_accuracy(scores: torch.Tensor, same: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Accuracy of ``same = score > t`` for every threshold (strict on both sides, as the official code).

    Args:
        scores: (P,) pair scores; same: (P,) bool; thresholds: (T,).

    Returns:
        (T,) float64 accuracies.
    """
    same = _as_bool(same)
    pos = torch.sort(scores[same].double()).values
    neg = torch.sort(scores[~same].double()).values
    t = thresholds.double()
    accepted = pos.numel() - torch.searchsorted(pos, t, right=True)  # pos > t
    rejected = torch.searchsorted(neg, t, right=False)  # neg < t
    return (accepted + rejected).double() / max(1, scores.numel())


def best_threshold(scores: torch.Tensor, same: torch.Tensor, steps: int = THRESHOLD_STEPS) -> float:
    """Mean of the grid thresholds (step 1 / ``steps`` in [-1, 1]) of maximal accuracy."""
    grid = torch.arange(-steps, steps + 1, dtype=torch.float64) / steps
    acc = pair_accuracy(scores, same, grid)
    return float(grid[acc == acc.max()].mean())


def fold_scores(left: torch.Tensor, right: torch.Tensor, folds: torch.Tensor, test_fold: int) -> torch.Tensor:
    """Cosine scores of every pair after centring on the mean of the other folds' features.

    Args:
        left, right: (P, D) features of the two sides; folds: (P,) fold of each pair.
        test_fold: the held-out fold; the mean is over both sides of the pairs of every other fold.

    Returns:
        (P,) float64 scores.
    """
    train = folds != test_fold
    if not bool(train.any()):
        raise ValueError(f"fold {test_fold} is the only fold: no training folds for the mean feature")
    left, right = left.double(), right.double()
    mu = torch.cat([left[train], right[train]]).mean(0)
    return (F.normalize(left - mu, dim=1) * F.normalize(right - mu, dim=1)).sum(1)


def tar_at_far(scores: torch.Tensor, same: torch.Tensor, far: float) -> float:
    """Largest true-accept rate with at most floor(far * negatives) false accepts (accept: score > t)."""
    same = _as_bool(same)
    pos, neg = scores[same].double(), torch.sort(scores[~same].double(), descending=True).values
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("tar_at_far needs both matched and mismatched pairs")
    allowed = int(np.floor(far * neg.numel() + 1e-9))
    if allowed >= neg.numel():
        return 1.0
    return float((pos > neg[allowed]).double().mean())


def roc_curve(scores: torch.Tensor, same: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fpr, tpr, thresholds) for accepting ``score >= threshold``, thresholds descending, from (0, 0)."""
    same = _as_bool(same)
    order = torch.argsort(scores.double(), descending=True)
    s, y = scores.double()[order], same[order]
    distinct = torch.cat([s[1:] != s[:-1], torch.tensor([True])])
    tp = torch.cumsum(y.double(), 0)[distinct]
    fp = torch.cumsum((~y).double(), 0)[distinct]
    zero = torch.zeros(1, dtype=torch.float64)
    tpr = torch.cat([zero, tp / max(1, int(y.sum()))])
    fpr = torch.cat([zero, fp / max(1, int((~y).sum()))])
    return fpr, tpr, torch.cat([torch.tensor([float("inf")], dtype=torch.float64), s[distinct]])


def evaluate_pairs(
    left: torch.Tensor,
    right: torch.Tensor,
    same: torch.Tensor,
    folds: torch.Tensor,
    fars: Sequence[float] = DEFAULT_FARS,
) -> dict[str, torch.Tensor | float]:
    """The official k-fold verification protocol over pairs (module docstring).

    Args:
        left, right: (P, D) final features (already concatenated with the flipped image's).
        same: (P,) bool, the pair shows one identity; folds: (P,) int fold labels (LFW: 1..10).
        fars: false-accept rates for ``tar@far=...``.

    Returns:
        ``accuracy``, ``std`` (sample std over folds), ``threshold`` (mean over folds) and
        ``tar@far=<f>`` as floats; ``fold_accuracy`` (K,), ``fold_threshold`` (K,), ``scores`` (P,)
        (each pair scored in its test fold), ``fpr``/``tpr`` (ROC) as tensors.
    """
    if left.shape != right.shape or left.dim() != 2:
        raise ValueError(
            f"left and right features must be equal (P, D), got {tuple(left.shape)}, {tuple(right.shape)}"
        )
    p = left.shape[0]
    if same.shape != (p,) or folds.shape != (p,):
        raise ValueError(f"same and folds must be ({p},), got {tuple(same.shape)}, {tuple(folds.shape)}")
    if not torch.isfinite(left).all() or not torch.isfinite(right).all():
        raise ValueError("verification features contain NaN or inf")
    same = _as_bool(same)
    fold_ids = torch.unique(folds).tolist()
    accs, thresholds = [], []
    scores = torch.empty(p, dtype=torch.float64)
    for k in fold_ids:
        s = fold_scores(left, right, folds, k)
        test = folds == k
        t = best_threshold(s[~test], same[~test])
        accs.append(float(pair_accuracy(s[test], same[test], torch.tensor([t]))[0]))
        thresholds.append(t)
        scores[test] = s[test]
    acc = torch.tensor(accs, dtype=torch.float64)
    fpr, tpr, _ = roc_curve(scores, same)
    out: dict[str, torch.Tensor | float] = {
        "accuracy": float(acc.mean()),
        "std": float(acc.std()) if acc.numel() > 1 else 0.0,
        "threshold": float(np.mean(thresholds)),
        "fold_accuracy": acc,
        "fold_threshold": torch.tensor(thresholds, dtype=torch.float64),
        "scores": scores,
        "fpr": fpr,
        "tpr": tpr,
    }
    for far in fars:
        out[f"tar@far={far:.0e}".replace("e-0", "e-")] = tar_at_far(scores, same, far)
    return out


class IncompletePairsError(ValueError):
    """The pairs seen cannot run the k-fold protocol (fewer than 2 folds, or one class missing),
    e.g. after ``limit_val_batches`` or ``fast_dev_run``."""


class VerificationMetric(Metric):
    """Pair verification under DDP: gathers every rank's pairs, de-duplicates them by pair index
    (the padding of DistributedSampler repeats samples), then runs :func:`evaluate_pairs`.

    ``update(left (B, D), right (B, D), same (B,), fold (B,), index (B,))``; ``compute()`` returns
    the scalar entries of :func:`evaluate_pairs` as tensors (``accuracy``, ``std``, ``threshold``,
    ``tar@far=...``); :attr:`last` keeps the full result (ROC, scores) of the last compute.
    """

    full_state_update = False

    def __init__(self, fars: Sequence[float] = DEFAULT_FARS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fars = tuple(fars)
        for name in ("left", "right", "same", "fold", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.last: dict[str, torch.Tensor | float] = {}

    def update(
        self,
        left: torch.Tensor,
        right: torch.Tensor,
        same: torch.Tensor,
        fold: torch.Tensor,
        index: torch.Tensor,
    ) -> None:
        b = left.shape[0]
        if right.shape != left.shape or same.shape != (b,) or fold.shape != (b,) or index.shape != (b,):
            raise ValueError(
                f"expected left/right (B, D) and same/fold/index (B,), got {tuple(left.shape)}, "
                f"{tuple(right.shape)}, {tuple(same.shape)}, {tuple(fold.shape)}, {tuple(index.shape)}"
            )
        self.left.append(left.detach().float())
        self.right.append(right.detach().float())
        self.same.append(same.detach().to(torch.bool))
        self.fold.append(fold.detach().long())
        self.index.append(index.detach().long())

    def compute(self) -> dict[str, torch.Tensor]:
        index = dim_zero_cat(self.index).cpu()
        keep = torch.unique(index, return_inverse=True)[1]
        first = torch.full((int(keep.max()) + 1,), index.numel(), dtype=torch.long).scatter_reduce(
            0, keep, torch.arange(index.numel()), reduce="amin"
        )
        cat = {n: dim_zero_cat(getattr(self, n)).cpu()[first] for n in ("left", "right", "same", "fold")}
        folds, classes = torch.unique(cat["fold"]).numel(), torch.unique(cat["same"]).numel()
        if folds < 2 or classes < 2:
            raise IncompletePairsError(
                f"{first.numel()} pairs from {folds} fold(s) with {classes} class(es): "
                "the k-fold protocol needs >= 2 folds and matched and mismatched pairs"
            )
        self.last = evaluate_pairs(cat["left"], cat["right"], cat["same"], cat["fold"], self.fars)
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in self.last.items() if isinstance(v, float)}


def flip_features(embed, images: torch.Tensor) -> torch.Tensor:
    """concat(embed(images), embed(flip(images))) along the feature axis: (B, 3, H, W) -> (B, 2D)."""
    return torch.cat([embed(images), embed(torch.flip(images, dims=[3]))], dim=1)


def features_for_pairs(
    names: Sequence[str], features: np.ndarray, pairs: Sequence[tuple[str, str]], source: str = "features"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Look up (P, D) left and right features of ``pairs`` (relative image paths) in ``names``."""
    lookup = {str(n): i for i, n in enumerate(names)}
    if len(lookup) != len(names):
        raise ValueError(f"{source}: duplicate image names")
    missing = [p for pair in pairs for p in pair if p not in lookup]
    if missing:
        raise ValueError(f"{source}: {len(missing)} pair images have no feature, e.g. {missing[0]!r}")
    feats = torch.from_numpy(np.asarray(features, dtype=np.float64))
    return (feats[[lookup[a] for a, _ in pairs]], feats[[lookup[b] for _, b in pairs]])


def main(argv: Sequence[str] | None = None) -> int:
    from facelit.datasets.recognition import read_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", required=True, type=Path, help="LFW pairs.txt format")
    parser.add_argument(
        "--features", required=True, type=Path, help="npz with names (N,) and features (N, D)"
    )
    parser.add_argument("--ext", default=".jpg", help="image extension used in the names")
    args = parser.parse_args(argv)
    pairs = read_pairs(args.pairs)
    with np.load(args.features, allow_pickle=False) as data:
        for key in ("names", "features"):
            if key not in data:
                raise SystemExit(f"{args.features}: missing array {key!r} (has {list(data.keys())})")
        names, features = data["names"], data["features"]
    if features.ndim != 2 or features.shape[0] != len(names):
        raise SystemExit(f"{args.features}: features {features.shape} do not match {len(names)} names")
    left, right = features_for_pairs(names, features, [p.paths(args.ext) for p in pairs], str(args.features))
    result = evaluate_pairs(
        left, right, torch.tensor([p.same for p in pairs]), torch.tensor([p.fold for p in pairs])
    )
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, float)} | {"pairs": len(pairs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
