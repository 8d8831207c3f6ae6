"""Head-pose mean absolute error in both conventions of the literature, as a Metric and a command.

Conventions
-----------
``ypr``: the project's angles (:mod:`facelit.geometry.pose`), those of HopeNet, FSA-Net, 6DRepNet
and the ``ypr`` arrays of the Biwi+ label files: (yaw, pitch, roll) in degrees.

``pyr``: the headposeplus / PADACO release (the ``pyr`` arrays of Biwi+): angles (a, b, c) with the
rotation ``Rotation.from_euler('xyz', (a, b, c), degrees=True)`` of scipy, reported as
(pitch, yaw, roll). Both describe the same head rotation; the per-angle errors of one prediction
differ between the two by a few tenths of a degree on BIWI, so a table must say which it uses.
The conversion goes through ``matrix_from_euler``/``euler_from_matrix`` only (no second set of Euler
formulas): ``R_pyr = matrix_from_euler((-yaw, pitch, -roll))^T`` and
``euler_from_matrix(R_pyr) = (-b, a, -c)``. It is pinned by a test on every Biwi+ frame.

MAE follows the benchmark code: the plain absolute difference of each angle (no wrap-around),
averaged over samples; ``mean`` is the average of the three per-angle MAEs.

Command::

    python -m facelit.metrics.headpose --pred P --gt G

P and G are ``.npz`` files with an ``ypr`` or a ``pyr`` array (N, 3) in degrees (the Biwi+ label
files are valid ground truth as they are) and optionally ``images`` (N,) names; or ``.csv`` files
with the header ``path,yaw,pitch,roll`` (``ypr`` angles). When both files name their samples,
predictions are matched to the ground truth by name (every ground-truth name needs one
prediction); otherwise rows are matched by order. One JSON line per convention is printed:
``{"convention": "ypr", "yaw": ..., "pitch": ..., "roll": ..., "mean": ..., "n": ...}``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from torchmetrics import Metric

from facelit.geometry.pose import euler_from_matrix, matrix_from_euler

__all__ = [
    "CONVENTIONS",
    "ANGLE_NAMES",
    "pyr_from_ypr",
    "ypr_from_pyr",
    "pose_mae",
    "HeadPoseMAE",
    "read_pose_file",
    "main",
]

CONVENTIONS = ("ypr", "pyr")
ANGLE_NAMES = {"ypr": ("yaw", "pitch", "roll"), "pyr": ("pitch", "yaw", "roll")}
_FLIP_YAW_ROLL = (-1.0, 1.0, -1.0)


def _check(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != 3:
        raise ValueError(f"{what}: expected a tensor of shape (..., 3), got {getattr(x, 'shape', type(x))}")


def pyr_from_ypr(ypr: torch.Tensor) -> torch.Tensor:
    """(..., 3) project (yaw, pitch, roll) -> (..., 3) headposeplus ``pyr`` angles, degrees."""
    _check(ypr, "pyr_from_ypr")
    flip = ypr.new_tensor(_FLIP_YAW_ROLL)
    e = euler_from_matrix(matrix_from_euler(ypr * flip).transpose(-1, -2))
    return torch.stack([e[..., 1], -e[..., 0], -e[..., 2]], dim=-1)


def ypr_from_pyr(pyr: torch.Tensor) -> torch.Tensor:
    """(..., 3) headposeplus ``pyr`` angles -> (..., 3) project (yaw, pitch, roll), degrees."""
    _check(pyr, "ypr_from_pyr")
    rot = matrix_from_euler(torch.stack([-pyr[..., 1], pyr[..., 0], -pyr[..., 2]], dim=-1))
    return euler_from_matrix(rot.transpose(-1, -2)) * pyr.new_tensor(_FLIP_YAW_ROLL)


def pose_mae(pred: torch.Tensor, target: torch.Tensor, convention: str = "ypr") -> dict[str, float]:
    """Per-angle and mean MAE (degrees) of (N, 3) ``ypr`` predictions against (N, 3) ``ypr`` labels.

    Args:
        convention: ``ypr`` (compare as given) or ``pyr`` (convert both, then compare).

    Returns:
        ``{angle name: MAE, ..., "mean": MAE averaged over the angles, "n": N}``.
    """
    _check(pred, "pose_mae(pred)")
    _check(target, "pose_mae(target)")
    if pred.shape != target.shape or pred.dim() != 2 or len(pred) == 0:
        raise ValueError(
            f"pose_mae: need equal non-empty (N, 3) shapes, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; use one of {CONVENTIONS}")
    pred, target = pred.double(), target.double()
    if convention == "pyr":
        pred, target = pyr_from_ypr(pred), pyr_from_ypr(target)
    per_angle = (pred - target).abs().mean(0).tolist()
    out: dict[str, float] = dict(zip(ANGLE_NAMES[convention], per_angle, strict=True))
    out["mean"] = sum(per_angle) / 3.0
    out["n"] = len(pred)
    return out


class HeadPoseMAE(Metric):
    """Head-pose MAE in both conventions, DDP-correct (predictions are gathered, then scored).

    ``update(pred, target)`` with (B, 3) ``ypr`` degrees; ``compute()`` returns
    ``{"mae": ..., "yaw": ..., "pitch": ..., "roll": ..., "mae_pyr": ..., "pitch_pyr": ...,
    "yaw_pyr": ..., "roll_pyr": ...}``. :meth:`samples` gives the gathered (N, 3) tensors (for
    error-vs-yaw plots).
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        _check(pred, "HeadPoseMAE(pred)")
        _check(target, "HeadPoseMAE(target)")
        self.preds.append(pred.detach().float().reshape(-1, 3))
        self.targets.append(target.detach().float().reshape(-1, 3))

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) predictions and (N, 3) labels seen so far (this process's, before sync)."""
        cat = lambda xs: torch.cat(xs) if isinstance(xs, list) else xs  # noqa: E731
        return cat(self.preds), cat(self.targets)

    def compute(self) -> dict[str, torch.Tensor]:
        preds, targets = self.samples()
        out: dict[str, torch.Tensor] = {}
        for convention in CONVENTIONS:
            suffix = "" if convention == "ypr" else "_pyr"
            scores = pose_mae(preds, targets, convention)
            out[f"mae{suffix}"] = torch.tensor(scores["mean"])
            for name in ANGLE_NAMES[convention]:
                out[f"{name}{suffix}"] = torch.tensor(scores[name])
        return out


# ---- files and the command ----------------------------------------------------------------------
def read_pose_file(path: str | Path) -> tuple[torch.Tensor, list[str] | None]:
    """Read (N, 3) ``ypr`` angles (and sample names, when present) from an ``.npz`` or ``.csv`` file.

    Raises:
        ValueError: naming the file (and the line for CSV) for missing arrays, bad shapes or values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pose file not found: {path}")
    names: list[str] | None = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "ypr" in data.files:
                angles = torch.from_numpy(np.asarray(data["ypr"], dtype=np.float64))
                convention = "ypr"
            elif "pyr" in data.files:
                angles = torch.from_numpy(np.asarray(data["pyr"], dtype=np.float64))
                convention = "pyr"
            else:
                raise ValueError(f"{path}: needs an 'ypr' or 'pyr' array, has {data.files}")
            if "images" in data.files:
                names = [str(n) for n in data["images"]]
        if angles.dim() != 2 or angles.shape[1] != 3:
            raise ValueError(f"{path}: '{convention}' must have shape (N, 3), got {tuple(angles.shape)}")
        if convention == "pyr":
            angles = ypr_from_pyr(angles)
    elif path.suffix == ".csv":
        rows, names = [], []
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != ["path", "yaw", "pitch", "roll"]:
                raise ValueError(f"{path}:1: expected the header 'path,yaw,pitch,roll', got {header}")
            for line_no, row in enumerate(reader, start=2):
                if len(row) != 4:
                    raise ValueError(f"{path}:{line_no}: expected 4 fields, got {len(row)}: {row}")
                try:
                    rows.append([float(v) for v in row[1:]])
                except ValueError:
                    raise ValueError(f"{path}:{line_no}: angles are not numbers: {row[1:]}") from None
                names.append(row[0].strip())
        angles = torch.tensor(rows, dtype=torch.float64).reshape(-1, 3)
    else:
        raise ValueError(f"{path}: unknown pose file type {path.suffix!r}; use .npz or .csv")
    bad = (~torch.isfinite(angles)).any(dim=1).nonzero()
    if len(bad):
        raise ValueError(f"{path}: row {int(bad[0])} has a non-finite angle: {angles[int(bad[0])].tolist()}")
    if names is not None and len(names) != len(angles):
        raise ValueError(f"{path}: {len(names)} names for {len(angles)} angle rows")
    return angles, names


def match_predictions(pred_file: str | Path, gt_file: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) predictions aligned with the (N, 3) ground truth of two pose files (see module doc)."""
    pred, pred_names = read_pose_file(pred_file)
    gt, gt_names = read_pose_file(gt_file)
    if pred_names is not None and gt_names is not None:
        index = {n: i for i, n in enumerate(pred_names)}
        missing = [n for n in gt_names if n not in index]
        if missing:
            raise ValueError(
                f"{pred_file}: no prediction for {len(missing)} ground-truth samples, e.g. {missing[0]!r}"
            )
        pred = pred[[index[n] for n in gt_names]]
    elif len(pred) != len(gt):
        raise ValueError(
            f"{pred_file} has {len(pred)} rows, {gt_file} {len(gt)}; without names they must match"
        )
    return pred, gt


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", required=True, help="predictions (.npz with ypr/pyr [+ images], or .csv)")
    parser.add_argument("--gt", required=True, help="ground truth, same formats (e.g. Biwi_plus.npz)")
    args = parser.parse_args(argv)
    pred, gt = match_predictions(args.pred, args.gt)
    lines = []
    for convention in CONVENTIONS:
        scores = pose_mae(pred, gt, convention)
        line = {"convention": convention, **{k: (v if k == "n" else round(v, 4)) for k, v in scores.items()}}
        print(json.dumps(line))
        lines.append(line)
    return lines


if __name__ == "__main__":
    main()
