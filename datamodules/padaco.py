"""Source + target head-pose data for domain adaptation (PADACO, DANN, PADA-like, source-only).

Training batches are ``{"source": crop batch, "target": crop batch}`` from a
``CombinedLoader(mode="max_size_cycle")``: an epoch is one pass of weighted draws over the source;
the target loader cycles (uniform draws). Source batches carry ``index`` (B,) int64, their rows in
the source set (for per-sample loss weights). Target labels are never used for training.

Evaluation loaders: ``val`` = [source validation split (model selection), target validation
labels (reporting only)]; ``test`` = the target test set. Checkpoints are therefore selected on the
source; the target test set is touched by ``trainer.test`` only.

Real data (``data_dir`` set; README "PADACO"): the source is SynHead (``source_csv``, a share
``source_val_fraction`` held out by a seeded permutation) and the target BIWI (``target_root`` the
``hpdb`` folder, ``target_labels`` a Biwi+ file), split by the fixed sequence lists of
:mod:`facelit.datasets.biwi`: training sequences give the unlabelled target and the reporting
labels, test sequences the test set. Without ``data_dir``: the synthetic world's ``source`` domain
(yaw +-90) and ``target`` domain (another style, yaw +-60), a partial label-space shift.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from datamodules.base import FaceDataModule, TransformDataset
from facelit.augment.landmarks import augment_pose
from facelit.batch import collate_crops
from facelit.datasets.sampling import WeightedDistributedSampler

__all__ = ["PadacoDataModule", "PoseFlip", "IndexedDataset", "dataset_poses"]

_POSE_CHUNK = 256


class IndexedDataset(Dataset):
    """Adds ``index`` (scalar int64 tensor, the row in ``dataset``) to each sample."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "index": torch.tensor(index, dtype=torch.int64)}


class PoseFlip:
    """Horizontal flip of a pose crop sample with probability ``p``: ``image`` mirrored, ``boxes``
    x' = W - x (swapped), ``pose`` through ``facelit.augment.landmarks.augment_pose``
    ((yaw, pitch, roll) -> (-yaw, pitch, -roll)). Draws from torch's global RNG (seeded per worker)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if self.p == 0.0 or float(torch.rand(())) >= self.p:
            return sample
        out = dict(sample)
        width = sample["image"].shape[-1]
        out["image"] = sample["image"].flip(-1)
        if "boxes" in sample:
            x1, y1, x2, y2 = sample["boxes"].unbind(-1)
            out["boxes"] = torch.stack([width - x2, y1, width - x1, y2], dim=-1)
        pose = sample["pose"].reshape(1, 3)
        out["pose"] = augment_pose(pose, pose.new_zeros(1), torch.ones(1, dtype=torch.bool))[0]
        return out


def dataset_poses(dataset: Dataset) -> torch.Tensor:
    """(N, 3) float32 labels of a pose dataset: its ``poses`` attribute when it has one (real
    readers), the cached samples' ``pose`` (``CachedDataset``), else read sample by sample."""
    poses = getattr(dataset, "poses", None)
    if isinstance(poses, torch.Tensor):
        return poses.float()
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list):
        return torch.stack([s["pose"] for s in samples]).float()
    n = len(dataset)  # type: ignore[arg-type]
    fetch = getattr(dataset, "__getitems__", None)
    out = []
    for start in range(0, n, _POSE_CHUNK):
        idx = list(range(start, min(n, start + _POSE_CHUNK)))
        items = fetch(idx) if fetch else [dataset[i] for i in idx]
        out.extend(s["pose"] for s in items)
    return torch.stack(out).float()


class PadacoDataModule(FaceDataModule):
    """Labelled source and unlabelled target head-pose crops, served together.

    Args:
        image_size: crop side in pixels.
        margin: fraction of the face-box side added on each side of the (square) crop.
        target_batch_size: target images per step (default: ``batch_size``).
        flip_p: horizontal flip probability of training crops (source and target), applied per sample
            in the workers unless ``augment='none'`` (the only augmentation of this datamodule).
        source_csv: SynHead CSV, relative to ``data_dir``.
        source_val_fraction: share of the source held out for validation (model selection).
        target_root: BIWI ``hpdb`` folder, relative to ``data_dir``.
        target_labels: Biwi+ label file relative to ``data_dir`` (``null``: the pose files).
        synth_source_size, synth_target_size: synthetic training crops per domain.
        synth_val_size, synth_test_size: synthetic validation crops (each domain) and target test crops.
        source_domain, target_domain: synthetic domain names (``facelit.synth.DOMAINS``).
        num_identities: synthetic identities.
        **kwargs: FaceDataModule arguments (data_dir, batch_size, num_workers, seed, synth_cache, ...).
    """

    def __init__(
        self,
        image_size: int = 224,
        margin: float = 0.0,
        target_batch_size: int | None = None,
        flip_p: float = 0.5,
        source_csv: str = "SynHead/labels.csv",
        source_val_fraction: float = 0.05,
        target_root: str = "hpdb",
        target_labels: str | None = "Biwi_plus.npz",
        synth_source_size: int = 20000,
        synth_target_size: int = 5000,
        synth_val_size: int = 500,
        synth_test_size: int = 1000,
        source_domain: str = "source",
        target_domain: str = "target",
        num_identities: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        if not 0.0 < source_val_fraction < 1.0:
            raise ValueError(f"source_val_fraction must be in (0, 1), got {source_val_fraction}")
        self.image_size, self.margin = image_size, margin
        self.target_batch_size = target_batch_size or self.batch_size
        self.flip = PoseFlip(flip_p if self.augment != "none" else 0.0)
        self.source_csv, self.source_val_fraction = source_csv, source_val_fraction
        self.target_root, self.target_labels = target_root, target_labels
        self.synth_sizes = {
            "source": synth_source_size,
            "target": synth_target_size,
            "val": synth_val_size,
            "test": synth_test_size,
        }
        self.source_domain, self.target_domain = source_domain, target_domain
        self.num_identities = num_identities
        self.collate_fn = collate_crops
        self.source_train: Dataset | None = None
        self.target_train: Dataset | None = None
        self.target_val: Dataset | None = None
        self.source_sampler: WeightedDistributedSampler | None = None
        self._source_weights: torch.Tensor | None = None

    # ---- datasets --------------------------------------------------------------------------
    def _synthetic(self, offset: int, size: int, domain: str, desc: str) -> Dataset:
        from facelit.synth import FaceCropDataset

        ds = FaceCropDataset(
            seed=self.seed + offset,
            length=size,
            size=self.image_size,
            domain=domain,
            num_identities=self.num_identities,
        )
        return self.maybe_cache(ds, desc)

    def _real(self) -> tuple[Dataset, Dataset, Dataset, Dataset, Dataset]:
        from pathlib import Path

        from facelit.datasets.biwi import BIWI_TEST_SEQUENCES, BIWI_TRAIN_SEQUENCES, BiwiDataset
        from facelit.datasets.synhead import SynHeadDataset, read_synhead_csv

        root = Path(self.data_dir)  # type: ignore[arg-type]
        csv_file = root / self.source_csv
        n = len(read_synhead_csv(csv_file)[0])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = max(1, round(n * self.source_val_fraction))
        source_val = SynHeadDataset(csv_file, self.image_size, self.margin, sorted(order[:n_val]))
        source_train = SynHeadDataset(csv_file, self.image_size, self.margin, sorted(order[n_val:]))
        labels = root / self.target_labels if self.target_labels else None
        biwi = root / self.target_root
        target_train = BiwiDataset(biwi, BIWI_TRAIN_SEQUENCES, labels, self.image_size, self.margin)
        target_test = BiwiDataset(biwi, BIWI_TEST_SEQUENCES, labels, self.image_size, self.margin)
        return source_train, source_val, target_train, target_train, target_test

    def build_datasets(self, stage: str) -> None:
        if self.synthetic:
            self.note_synthetic(
                f"source domain {self.source_domain!r} -> target domain {self.target_domain!r}"
            )
            s = self.synth_sizes
            source_val = self._synthetic(1, s["val"], self.source_domain, "synthetic source val crops")
            target_val = self._synthetic(3, s["val"], self.target_domain, "synthetic target val crops")
            target_test = self._synthetic(4, s["test"], self.target_domain, "synthetic target test crops")
            if stage == "fit":  # training sets only when fitting (rendering them costs most)
                self.source_train = self._synthetic(
                    0, s["source"], self.source_domain, "synthetic source crops"
                )
                self.target_train = self._synthetic(
                    2, s["target"], self.target_domain, "synthetic target crops"
                )
        else:
            self.source_train, source_val, self.target_train, target_val, target_test = self._real()
        self.val_set, self.target_val, self.test_set = source_val, target_val, target_test

    def source_poses(self) -> torch.Tensor:
        """(N, 3) labels of the source training set, in the order the sampler indexes it."""
        if self.source_train is None:
            raise RuntimeError("source_poses() needs setup('fit')")
        return dataset_poses(self.source_train)

    def set_source_weights(self, weights: torch.Tensor | None) -> None:
        """Source sampling weights (N,) for the following epochs (``None``: uniform)."""
        if weights is not None and self.source_train is not None and len(weights) != len(self.source_train):
            raise ValueError(f"expected {len(self.source_train)} source weights, got {len(weights)}")
        self._source_weights = weights
        if self.source_sampler is not None:
            self.source_sampler.set_weights(weights)

    # ---- loaders ---------------------------------------------------------------------------
    def _dist(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _plain(
        self, dataset: Dataset, batch_size: int, sampler: Any = None, drop_last: bool = False
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> CombinedLoader:
        if self.source_train is None or self.target_train is None:
            raise RuntimeError("PadacoDataModule has no training sets: call setup('fit') first")
        world, rank = self._dist()
        source = TransformDataset(IndexedDataset(self.source_train), self.flip)
        target = TransformDataset(self.target_train, self.flip)
        self.source_sampler = WeightedDistributedSampler(
            self._source_weights, num_replicas=world, rank=rank, seed=self.seed, num_items=len(source)
        )
        target_sampler = WeightedDistributedSampler(
            None, num_replicas=world, rank=rank, seed=self.seed + 1, num_items=len(target)
        )
        loaders = {
            "source": self._plain(
                source,
                self.batch_size,
                self.source_sampler,
                drop_last=self.source_sampler.num_samples >= self.batch_size,
            ),
            "target": self._plain(
                target,
                self.target_batch_size,
                target_sampler,
                drop_last=target_sampler.num_samples >= self.target_batch_size,
            ),
        }
        return CombinedLoader(loaders, mode="max_size_cycle")

    def target_predict_dataloader(self) -> DataLoader:
        """The unlabelled target training set, un-augmented and in order (stage-2 predictions)."""
        if self.target_train is None:
            raise RuntimeError("target_predict_dataloader() needs setup('fit')")
        return self._plain(self.target_train, self.val_batch_size)

    def val_dataloader(self) -> list[DataLoader]:
        if self.val_set is None or self.target_val is None:
            raise RuntimeError("PadacoDataModule has no validation sets: call setup() first")
        return [
            self._plain(self.val_set, self.val_batch_size),
            self._plain(self.target_val, self.val_batch_size),
        ]

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise RuntimeError("PadacoDataModule has no test set: call setup('test') first")
        return self._plain(self.test_set, self.val_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
