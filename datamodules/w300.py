"""300W in the HRNet CSV layout (68 points), or synthetic crops.

Layout under ``data_dir`` (see README "300W")::

    images/<image_name>                          (afw/, helen/, ibug/, lfpw/ as in the CSVs)
    face_landmarks_300w_train.csv
    face_landmarks_300w_valid.csv                (full = common + challenging)
    face_landmarks_300w_valid_common.csv
    face_landmarks_300w_valid_challenge.csv
    face_landmarks_300w_test.csv

NME is normalised by the outer-eye-corner distance ||p36 - p45||.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset

from datamodules.base import CropDataModule

__all__ = ["W300DataModule"]


class W300DataModule(CropDataModule):
    """300W face crops (HRNet centre/scale boxes).

    Args:
        val_split: which validation CSV: ``valid`` (full), ``valid_common`` or ``valid_challenge``.
        csv_prefix: file name prefix of the CSVs (HRNet: ``face_landmarks_300w_``).
        **kwargs: CropDataModule arguments (data_dir, image_size, batch_size, ...).
    """

    def __init__(
        self,
        val_split: Literal["valid", "valid_common", "valid_challenge"] = "valid",
        csv_prefix: str = "face_landmarks_300w_",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.data_dir is not None and self.scheme != "ibug68":
            raise ValueError(f"300W is annotated with ibug68 points; scheme {self.scheme!r} is synthetic-only")
        self.val_split = val_split
        self.csv_prefix = csv_prefix

    def real_datasets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        from facelit.datasets.w300 import W300Dataset

        root = Path(self.data_dir)  # type: ignore[arg-type]

        def split(name: str) -> W300Dataset:
            return W300Dataset(root / "images", root / f"{self.csv_prefix}{name}.csv", self.image_size)

        return split("train"), split(self.val_split), split("test")
