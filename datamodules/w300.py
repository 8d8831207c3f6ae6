"""300W in the HRNet CSV layout (68 points), or synthetic crops.

Layout under ``data_dir`` (see README "300W")::

    images/<image_name>                          (afw/, helen/, ibug/, lfpw/ as in the CSVs)
    face_landmarks_300w_train.csv
    face_landmarks_300w_valid.csv                (full = common + challenging)
    face_landmarks_300w_valid_common.csv
    face_landmarks_300w_valid_challenge.csv
    face_landmarks_300w_test.csv

NME is normalised by the outer-eye-corner distance ||p36 - p45||. HRNet's ``valid`` CSVs are the
300W test sets of the literature (full = common + challenging), so they are the ``test`` split here;
checkpoints are chosen on ``val``, a hold-out of ``val_fraction`` of the training photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset

from datamodules.base import CropDataModule
from facelit.datasets.holdout import DEFAULT_VAL_FRACTION

__all__ = ["W300DataModule"]


class W300DataModule(CropDataModule):
    """300W face crops (HRNet centre/scale boxes).

    Args:
        test_split: the test CSV: ``valid`` (the full 300W test set, 689), ``valid_common`` (554),
            ``valid_challenge`` (135) or ``test`` (the 300W private test set, 600).
        val_fraction: share of the training photos held out for validation.
        csv_prefix: file name prefix of the CSVs (HRNet: ``face_landmarks_300w_``).
        **kwargs: CropDataModule arguments (data_dir, image_size, batch_size, ...).
    """

    def __init__(
        self,
        test_split: Literal["valid", "valid_common", "valid_challenge", "test"] = "valid",
        val_fraction: float = DEFAULT_VAL_FRACTION,
        csv_prefix: str = "face_landmarks_300w_",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.data_dir is not None and self.scheme != "ibug68":
            raise ValueError(f"300W is annotated with ibug68 points; scheme {self.scheme!r} is synthetic-only")
        self.test_split = test_split
        self.val_fraction = val_fraction
        self.csv_prefix = csv_prefix

    def real_datasets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        from facelit.datasets.w300 import W300Dataset

        root = Path(self.data_dir)  # type: ignore[arg-type]

        def read(name: str, split: str = "all") -> W300Dataset:
            csv = root / f"{self.csv_prefix}{name}.csv"
            return W300Dataset(root / "images", csv, self.image_size, split=split, val_fraction=self.val_fraction)

        return read("train", "train"), read("train", "val"), read(self.test_split)
