"""AFLW face crops: the AFLW-19 protocol (``AFLWinfo_release.mat``) or the original 21-point
``aflw.sqlite`` database, or synthetic crops.

Layout under ``data_dir`` (see README "AFLW")::

    AFLWinfo_release.mat      (AFLW-19: bbox, 19 points, mask, 20,000 train / 4,386 test, frontal subset)
    aflw.sqlite               (21 named points, FaceRect, FacePose)
    flickr/<0,2,3>/<image>.jpg

AFLW-19 is evaluated with the ``face_box`` NME normaliser (sqrt(w * h) of the protocol's box).
Checkpoints are chosen on ``val``, a hold-out of ``val_fraction`` of the training photos; the test
split (``test_subset``) is scored once by ``python cli.py test``.
"""

from __future__ import annotations

from typing import Any, Literal

from torch.utils.data import Dataset

from datamodules.base import CropDataModule
from facelit.datasets.holdout import DEFAULT_VAL_FRACTION, holdout_split

__all__ = ["AFLWDataModule"]


class AFLWDataModule(CropDataModule):
    """AFLW landmarks.

    Args:
        protocol: ``aflw19`` (train/test split of AFLWinfo_release.mat; ``test_subset`` picks full or
            frontal) or ``sqlite`` (all faces of aflw.sqlite with AFLW-21 points; no test split).
        test_subset: ``test`` (4,386 faces) or ``frontal`` (1,165) for the AFLW-19 protocol.
        margin: crop margin around the face box.
        val_fraction: share of the training photos held out for validation (both protocols).
        **kwargs: CropDataModule arguments (data_dir, scheme, image_size, batch_size, ...).
    """

    def __init__(
        self,
        protocol: Literal["aflw19", "sqlite"] = "aflw19",
        test_subset: Literal["test", "frontal"] = "test",
        margin: float = 0.125,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("scheme", "aflw19")
        super().__init__(**kwargs)
        expected = {"aflw19": "aflw19", "sqlite": "aflw21"}[protocol]
        if self.data_dir is not None and self.scheme != expected:
            raise ValueError(f"AFLW protocol {protocol!r} is annotated with {expected} points, not {self.scheme!r}")
        self.protocol = protocol
        self.test_subset = test_subset
        self.margin = margin
        self.val_fraction = val_fraction

    def real_datasets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        from torch.utils.data import Subset

        from facelit.datasets.aflw import AFLW19Dataset, AFLWSqliteDataset

        if self.protocol == "aflw19":
            train, val, test = (
                AFLW19Dataset(self.data_dir, split, self.image_size, self.margin, val_fraction=self.val_fraction)
                for split in ("train", "val", self.test_subset)
            )
            return train, val, test
        full = AFLWSqliteDataset(self.data_dir, self.image_size, self.margin)
        train_idx, val_idx = holdout_split(full.filepaths, self.val_fraction)
        return Subset(full, train_idx), Subset(full, val_idx), None
