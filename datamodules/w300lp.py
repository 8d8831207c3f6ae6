"""300W-LP (training, with a held-out validation split) and AFLW2000-3D (test), 68 iBUG points, or
synthetic crops.

Layout under ``data_dir`` (see README "300W-LP / AFLW2000-3D")::

    300W_LP/{AFW,HELEN,IBUG,LFPW}[_Flip]/<name>.jpg + <name>.mat   (pt2d, Pose_Para, roi, ...)
    300W_LP/landmarks/<subset>/<name>_pts.mat                      (pts_2d, pts_3d)
    AFLW2000/image*.jpg + image*.mat                               (pt3d_68, Pose_Para, ...)

Splits: checkpoints are chosen on ``val``, a hold-out of ``val_fraction`` of the 300W-LP source
faces (every synthesised view of a face on one side; :mod:`facelit.datasets.w300lp`). AFLW2000-3D is
the test set, scored once by ``python cli.py test``: all 2,000 images, with the ``landmark_box`` NME
normaliser and the yaw bins [0, 30], (30, 60], (60, 90] of 3DDFA / PRNet / 3DDFA-V2. The head-pose
benchmarks' |angle| <= 99 filter is the explicit option ``test_max_abs_angle: 99``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from datamodules.base import CropDataModule
from facelit.datasets.holdout import DEFAULT_VAL_FRACTION

__all__ = ["W300LPDataModule"]


class W300LPDataModule(CropDataModule):
    """300W-LP / AFLW2000-3D face crops with 68 landmarks and head pose.

    Args:
        subsets: 300W-LP subsets used for training.
        flip_subsets: also train on the ``*_Flip`` folders.
        margin: crop margin around the landmark box (fraction of its side, each side).
        val_fraction: share of the 300W-LP source faces held out for validation.
        test_max_abs_angle: drop AFLW2000-3D images with |yaw|, |pitch| or |roll| above this (degrees);
            ``None`` (the landmark protocol) scores all 2,000.
        **kwargs: CropDataModule arguments (data_dir, scheme, image_size, batch_size, ...).
    """

    def __init__(
        self,
        subsets: Sequence[str] = ("AFW", "HELEN", "IBUG", "LFPW"),
        flip_subsets: bool = True,
        margin: float = 0.25,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        test_max_abs_angle: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.data_dir is not None and self.scheme != "ibug68":
            raise ValueError(f"300W-LP is annotated with ibug68 points; scheme {self.scheme!r} is synthetic-only")
        self.subsets = tuple(subsets)
        self.flip_subsets = flip_subsets
        self.margin = margin
        self.val_fraction = val_fraction
        self.test_max_abs_angle = test_max_abs_angle

    def real_datasets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        from pathlib import Path

        from facelit.datasets.w300lp import AFLW2000Dataset, W300LPDataset

        root = Path(self.data_dir)  # type: ignore[arg-type]
        train, val = (
            W300LPDataset(root / "300W_LP", self.subsets, self.flip_subsets, self.image_size, self.margin,
                          split=split, val_fraction=self.val_fraction)
            for split in ("train", "val")
        )
        test = AFLW2000Dataset(root / "AFLW2000", self.image_size, self.margin, self.test_max_abs_angle)
        return train, val, test
