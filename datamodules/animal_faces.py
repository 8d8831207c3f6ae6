"""Animal faces (horse, sheep) with pose-matched human keypoints, for interspecies keypoint transfer.

Real data: the official release (``facelit.datasets.animal_faces``): ``<data_dir>/train_<species>.txt``
(split into train / val by ``val_fraction``, seeded) and ``test_<species>.txt``, plus a human pool
given as a list file of the same layout (``human_list``). Synthetic default: the world's
``horse``/``sheep`` heads with their 5 keypoints and a pool of human faces of domain ``clean``.

Every animal gets its K pose-matched human keypoint sets (:func:`facelit.geometry.pose_match.match_poses`,
cached in ``match_cache_dir``), carried in the batch as ``match_points`` (B, K, 5, 2) (normalised
frame), ``match_visible`` (B, K, 5) and ``match_valid`` (B, K). Training batches also carry one
random human face (``human_image``, ``human_landmarks``, ``human_landmarks_visible``) for the
keypoint network's human stage.

Augmentation (the official recipe): horizontal flip with the keypoint swap (the matched human
keypoints are mirrored with the animal) and rotation, through :mod:`facelit.augment.landmarks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from datamodules.base import FaceDataModule
from facelit.augment.landmarks import BatchedLandmarkAugment, LandmarkAugment
from facelit.batch import collate_crops
from facelit.datasets.animal_faces import InterspeciesPairs, KeypointListDataset, flip_matches
from facelit.geometry.pose_match import match_poses
from facelit.geometry.schemes import ANIMAL5, FIVE_POINT
from facelit.geometry.tps import to_normalised

__all__ = ["AnimalFaceDataModule"]

SPECIES = ("horse", "sheep")


def _keypoints(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 5, 2) keypoints and (N, 5) visibility of every sample of a face-crop dataset."""
    reader = getattr(dataset, "keypoints", None)
    if reader is not None:
        return reader()
    samples = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    return (
        torch.stack([s["landmarks"] for s in samples]),
        torch.stack([s["landmarks_visible"] for s in samples]),
    )


class _PairedAugment(torch.nn.Module):
    """Batched (device) augmentation: the animal crop, its matched human keypoints and the human crop."""

    def __init__(self, animal: BatchedLandmarkAugment, human: BatchedLandmarkAugment) -> None:
        super().__init__()
        self.animal, self.human = animal, human

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = self.animal(batch)
        out["match_points"], out["match_visible"] = flip_matches(
            out["match_points"], out["match_visible"], out.pop("flipped"), self.animal.flip_perm
        )
        out.pop("affine")
        if "human_image" in out:
            human = self.human(
                {
                    "image": out["human_image"],
                    "landmarks": out["human_landmarks"],
                    "landmarks_visible": out["human_landmarks_visible"],
                }
            )
            out.update(
                human_image=human["image"],
                human_landmarks=human["landmarks"],
                human_landmarks_visible=human["landmarks_visible"],
            )
        return out


class AnimalFaceDataModule(FaceDataModule):
    """Horse or sheep faces with pose-matched human keypoints.

    Args:
        species: ``horse`` or ``sheep``.
        image_size: crop side S (animal and human crops).
        num_matches: K human matches per animal.
        human_list: real data only: list file of the human pool (same layout as the animal lists),
            absolute or relative to ``data_dir``.
        val_fraction: real data only: share of ``train_<species>.txt`` held out for validation.
        synth_train_size / synth_val_size / synth_human_size: synthetic animals per split, humans in the pool.
        animal_domain / human_domain: synthetic domains of the animals and of the human pool.
        num_identities: synthetic identities per species.
        flip_p: horizontal flip probability.
        rotation: maximum absolute rotation in degrees (the official recipe draws from {-10, -5, 0, 5, 10};
            here uniformly in [-rotation, rotation]).
        match_cache_dir: folder for the cached pose-match tables (None: computed in memory).
        **kwargs: FaceDataModule arguments (data_dir, batch_size, num_workers, augment, seed,
            synth_cache, ...).
    """

    def __init__(
        self,
        species: str = "horse",
        image_size: int = 64,
        num_matches: int = 5,
        human_list: str | None = None,
        val_fraction: float = 0.1,
        synth_train_size: int = 1000,
        synth_val_size: int = 200,
        synth_human_size: int = 1000,
        animal_domain: str = "source",
        human_domain: str = "clean",
        num_identities: int = 100,
        flip_p: float = 0.5,
        rotation: float = 10.0,
        match_cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if species not in SPECIES:
            raise ValueError(f"species must be one of {SPECIES}, got {species!r}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.species, self.image_size, self.num_matches = species, image_size, num_matches
        self.human_list, self.val_fraction = human_list, val_fraction
        self.synth_sizes = (synth_train_size, synth_val_size, synth_human_size)
        self.animal_domain, self.human_domain, self.num_identities = (
            animal_domain,
            human_domain,
            num_identities,
        )
        self.match_cache_dir = match_cache_dir
        self.augment_kwargs = {
            "flip_p": flip_p,
            "rotation": rotation,
            "scales": (1.0, 1.0),
            "translation": 0.0,
            "photometric": False,
        }
        self.collate_fn = collate_crops

    # ---- sources ------------------------------------------------------------------------------
    def _synthetic_sets(self, stage: str) -> tuple[Dataset, Dataset, Dataset | None, Dataset]:
        from facelit.synth import FaceCropDataset
        from facelit.synth.interspecies import TightHumanCrops

        n_train, n_val, n_human = self.synth_sizes
        self.note_synthetic(
            f"{self.species} heads (domain {self.animal_domain}), humans of domain {self.human_domain}"
        )

        def animals(seed: int, n: int) -> FaceCropDataset:
            return FaceCropDataset(
                seed=seed,
                length=n,
                size=self.image_size,
                domain=self.animal_domain,
                species=self.species,
                scheme=ANIMAL5.name,
                num_identities=self.num_identities,
            )

        train = animals(self.seed, n_train)
        if stage == "fit":
            train = self.maybe_cache(train, f"synthetic {self.species} train")
        val = self.maybe_cache(animals(self.seed + 1, n_val), f"synthetic {self.species} val")
        humans = TightHumanCrops(
            seed=self.seed + 2,
            length=n_human,
            size=self.image_size,
            domain=self.human_domain,
            num_identities=self.num_identities,
        )
        return train, val, None, self.maybe_cache(humans, "synthetic human pool")

    def _real_sets(self) -> tuple[Dataset, Dataset, Dataset | None, Dataset]:
        root = Path(self.data_dir)  # type: ignore[arg-type]
        if self.human_list is None:
            raise ValueError("AnimalFaceDataModule with data_dir needs human_list (the human pool list file)")
        train_list = root / f"train_{self.species}.txt"
        n = len(KeypointListDataset(train_list, self.image_size))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = max(1, int(round(self.val_fraction * n)))
        train = KeypointListDataset(train_list, self.image_size, sorted(order[n_val:]))
        val = KeypointListDataset(train_list, self.image_size, sorted(order[:n_val]))
        test_list = root / f"test_{self.species}.txt"
        test = KeypointListDataset(test_list, self.image_size) if test_list.is_file() else None
        human_list = Path(self.human_list)
        humans = KeypointListDataset(
            human_list if human_list.is_absolute() else root / human_list, self.image_size
        )
        return train, val, test, humans

    def _paired(
        self,
        animals: Dataset,
        human_points: torch.Tensor,
        human_visible: torch.Tensor,
        humans: Dataset | None,
        train: bool,
    ) -> Dataset:
        a_points, a_visible = _keypoints(animals)
        table = match_poses(
            a_points, a_visible, human_points, human_visible, self.num_matches, self.match_cache_dir
        )
        size = (self.image_size, self.image_size)
        match_points = to_normalised(human_points, size)[table.indices]
        match_visible = human_visible[table.indices] & a_visible[:, None, :]
        augment = human_augment = None
        if train and self.augment == "cpu":
            augment = LandmarkAugment(ANIMAL5.name, **self.augment_kwargs)
            human_augment = LandmarkAugment(FIVE_POINT.name, **self.augment_kwargs)
        return InterspeciesPairs(
            animals,
            match_points,
            match_visible,
            table.valid,
            humans if train else None,
            augment,
            human_augment,
            ANIMAL5.flip_tensor(),
        )

    def build_datasets(self, stage: str) -> None:
        train, val, test, humans = self._synthetic_sets(stage) if self.synthetic else self._real_sets()
        h_points, h_visible = _keypoints(humans)
        self.human_set = humans
        self.train_set = (
            self._paired(train, h_points, h_visible, humans, train=True) if stage == "fit" else None
        )
        self.val_set = self._paired(val, h_points, h_visible, None, train=False)
        self.test_set = (
            self._paired(test, h_points, h_visible, None, train=False) if test is not None else None
        )
        if self.augment == "gpu":
            self.batched_augment = _PairedAugment(
                BatchedLandmarkAugment(ANIMAL5.name, **self.augment_kwargs),
                BatchedLandmarkAugment(FIVE_POINT.name, **self.augment_kwargs),
            )
