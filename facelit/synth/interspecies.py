"""Synthetic human faces framed like the animal face crops, for interspecies keypoint transfer.

The world's human crops frame the whole head (hair, neck), so their five keypoints fill a fifth of
the crop while an animal's fill half of it. :class:`TightHumanCrops` renders humans at a larger
size and re-crops each one to a square around its five keypoints (:func:`facelit.datasets.crops.
crop_box_from_points`), so that human and animal keypoint extents are comparable, as in the
official release where both species are cropped to the face.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from facelit.datasets.crops import crop_box_from_points, make_crop_sample

from .datasets import FaceCropDataset

__all__ = ["TIGHT_MARGIN", "RENDER_FACTOR", "TightHumanCrops"]

TIGHT_MARGIN = 0.6  # fraction of the keypoint box added on each side
RENDER_FACTOR = 2  # render at this multiple of the crop size before re-cropping


class TightHumanCrops(Dataset):
    """Five-point human face crops (``facelit.batch`` samples), square around the keypoints.

    Args:
        seed, length, domain, num_identities: as :class:`facelit.synth.FaceCropDataset`.
        size: output crop side S.
        margin: fraction of the keypoint box's longer side added on each side.
    """

    def __init__(
        self,
        seed: int = 0,
        length: int = 1000,
        size: int = 64,
        domain: str = "clean",
        num_identities: int = 100,
        margin: float = TIGHT_MARGIN,
    ) -> None:
        self.source = FaceCropDataset(
            seed=seed,
            length=length,
            size=size * RENDER_FACTOR,
            domain=domain,
            species="human",
            scheme="five_point",
            num_identities=num_identities,
        )
        self.size, self.margin = int(size), float(margin)

    def __len__(self) -> int:
        return len(self.source)

    def _recrop(self, sample: dict[str, Any]) -> dict[str, Any]:
        box = crop_box_from_points(sample["landmarks"], sample["landmarks_visible"], self.margin)
        out = make_crop_sample(
            sample["image"],
            sample["landmarks"],
            sample["landmarks_visible"],
            box,
            self.size,
            pose=sample["pose"],
        )
        out.pop("meta")
        out["identity"] = sample["identity"]
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._recrop(self.source[index])

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        return [self._recrop(s) for s in self.source.__getitems__(indices)]
