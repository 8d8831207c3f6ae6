"""300W-LP (training) with AFLW2000-3D (validation/test), 68 iBUG points, or synthetic crops.

Layout under ``data_dir`` (see README "300W-LP / AFLW2000-3D")::

    300W_LP/{AFW,HELEN,IBUG,LFPW}[_Flip]/<name>.jpg + <name>.mat   (pt2d, Pose_Para, roi, ...)
    300W_LP/landmarks/<subset>/<name>_pts.mat                      (pts_2d, pts_3d)
    AFLW2000/image*.jpg + image*.mat                               (pt3d_68, Pose_Para, ...)

AFLW2000-3D is filtered to |yaw|, |pitch|, |roll| <= 99 degrees (1,969 of 2,000 images) and
evaluated with the bounding-box NME normaliser and yaw bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from datamodules.base import CropDataModule

__all__ = ["W300LPDataModule"]


class W300LPDataModule(CropDataModule):
    """300W-LP / AFLW2000-3D face crops with 68 landmarks and head pose.

    Args:
        subsets: 300W-LP subsets used for training.
        flip_subsets: also train on the ``*_Flip`` folders.
        margin: crop margin around the landmark box (fraction of its side, each side).
        **kwargs: CropDataModule arguments (data_dir, scheme, image_size, batch_size, ...).
    """

    def __init__(
        self,
        subsets: Sequence[str] = ("AFW", "HELEN", "IBUG", "LFPW"),
        flip_subsets: bool = True,
        margin: float = 0.25,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.data_dir is not None and self.scheme != "ibug68":
            raise ValueError(f"300W-LP is annotated with ibug68 points; scheme {self.scheme!r} is synthetic-only")
        self.subsets = tuple(subsets)
        self.flip_subsets = flip_subsets
        self.margin = margin

    def real_datasets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        from pathlib import Path

        from facelit.datasets.w300lp import AFLW2000Dataset, W300LPDataset

        root = Path(self.data_dir)  # type: ignore[arg-type]
        train = W300LPDataset(root / "300W_LP", self.subsets, self.flip_subsets, self.image_size, self.margin)
        val = AFLW2000Dataset(root / "AFLW2000", self.image_size, self.margin)
        return train, val, val
