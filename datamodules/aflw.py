"""AFLW face crops: the AFLW-19 protocol (``AFLWinfo_release.mat``) or the original 21-point
``aflw.sqlite`` database, or synthetic crops.

Layout under ``data_dir`` (see README "AFLW")::

    AFLWinfo_release.mat      (AFLW-19: bbox, 19 points, mask, 20,000 train / 4,386 test, frontal subset)
    aflw.sqlite               (21 named points, FaceRect, FacePose)
    flickr/<0,2,3>/<image>.jpg

AFLW-19 is evaluated with the box-size NME normaliser (sqrt(w * h) of the protocol's box).
"""

from __future__ import annotations

from typing import Any, Literal

from torch.utils.data import Dataset

from datamodules.base import CropDataModule

__all__ = ["AFLWDataModule"]


class AFLWDataModule(CropDataModule):
    """AFLW landmarks.

    Args:
        protocol: ``aflw19`` (train/test split of AFLWinfo_release.mat; ``test_subset`` picks full or
            frontal) or ``sqlite`` (all faces of aflw.sqlite with AFLW-21 points; validation is a
            held-out 10% by index).
        test_subset: ``test`` (4,386 faces) or ``frontal`` (1,165) for the AFLW-19 protocol.
        margin: crop margin around the face box.
        **kwargs: CropDataModule arguments (data_dir, scheme, image_size, batch_size, ...).
    """

    def __init__(
        self,
        protocol: Literal["aflw19", "sqlite"] = "aflw19",
        test_subset: Literal["test", "frontal"] = "test",
        margin: float = 0.125,
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

    def real_datasets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        from torch.utils.data import Subset

        from facelit.datasets.aflw import AFLW19Dataset, AFLWSqliteDataset

        if self.protocol == "aflw19":
            train = AFLW19Dataset(self.data_dir, "train", self.image_size, self.margin)
            test = AFLW19Dataset(self.data_dir, self.test_subset, self.image_size, self.margin)
            return train, test, test
        full = AFLWSqliteDataset(self.data_dir, self.image_size, self.margin)
        n_val = max(1, len(full) // 10)
        indices = list(range(len(full)))
        return Subset(full, indices[n_val:]), Subset(full, indices[:n_val]), None
