"""Shared LightningDataModule plumbing.

A facelit datamodule reads the official on-disk layout when given ``data_dir`` and serves the
synthetic face world otherwise (saying so once in the log). Training augmentation runs either
per sample in the DataLoader workers (``augment="cpu"``, fastest on CPU machines) or batched on
the device in ``on_after_batch_transfer`` (``augment="gpu"``, kornia), or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = [
    "AugmentMode",
    "CachedDataset",
    "CropDataModule",
    "EpochShuffleSampler",
    "FaceDataModule",
    "ResumableDataLoader",
    "TransformDataset",
]

log = logging.getLogger(__name__)

AugmentMode = Literal["cpu", "gpu", "none"]


class TransformDataset(Dataset):
    """Apply ``transform`` to each sample dict of ``dataset`` (in the DataLoader worker).

    The transform draws from torch's global RNG, which Lightning seeds per worker
    (``seed_everything(..., workers=True)``, set by ``seed_everything`` in every config), so
    augmentation is reproducible and differs between epochs and workers.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[dict[str, Any]], dict[str, Any]]):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(self.dataset[index])


class CachedDataset(Dataset):
    """Render/read every sample of ``dataset`` once, keep it in memory, serve copies.

    Images are kept as uint8 (quantised to 1/255, as a PNG of the render would be) to quarter the
    memory; DataLoader workers share the cache copy-on-write. A progress bar shows the one-time cost.
    """

    def __init__(self, dataset: Dataset, desc: str = "caching", chunk: int = 64) -> None:
        from tqdm.auto import tqdm

        n = len(dataset)  # type: ignore[arg-type]
        fetch_many = getattr(dataset, "__getitems__", None)  # batched rendering where offered
        self.samples = []
        with tqdm(total=n, desc=desc, leave=False) as bar:
            for start in range(0, n, chunk):
                indices = list(range(start, min(n, start + chunk)))
                chunk_samples = fetch_many(indices) if fetch_many else [dataset[i] for i in indices]
                for sample in chunk_samples:
                    sample = dict(sample)
                    sample["image"] = (sample["image"].clamp(0, 1) * 255).round().to(torch.uint8)
                    self.samples.append(sample)
                bar.update(len(indices))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.samples[index])
        sample["image"] = sample["image"].float() / 255
        return sample


class EpochShuffleSampler(DistributedSampler):
    """Shuffled indices seeded by (seed, epoch), sharded over ranks, resumable in the middle of an epoch.

    The order of epoch e is ``torch.randperm`` seeded with ``seed + e`` (``DistributedSampler``'s rule),
    so it does not depend on how many epochs this process has run: a resumed run draws the same
    order as an uninterrupted one. Lightning calls :meth:`set_epoch` before every epoch and leaves a
    ``DistributedSampler`` in place under DDP (each rank takes its shard of the same permutation).
    After :meth:`resume` ``(epoch, batches)``, the next pass over ``epoch`` starts after the first
    ``batches`` batches of this rank's shard.

    Args:
        dataset: the dataset (only its length is used).
        batch_size: per-rank batch size (to turn consumed batches into consumed indices).
        seed: shuffle seed.
        num_replicas, rank: DDP world size and this rank (1, 0 without DDP).
        drop_last: drop the tail that does not divide evenly over the ranks.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last
        )
        self.batch_size = batch_size
        self._resume: tuple[int, int] | None = None

    def resume(self, epoch: int, batches: int) -> None:
        """Skip the first ``batches`` batches of the next pass over ``epoch``."""
        self._resume = (int(epoch), int(batches))

    def __iter__(self):  # type: ignore[override]
        indices = list(super().__iter__())
        if self._resume is not None:
            epoch, batches = self._resume
            self._resume = None
            if epoch == self.epoch:
                indices = indices[batches * self.batch_size :]
        return iter(indices)


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose position in the epoch is saved in Lightning checkpoints.

    Lightning saves ``state_dict()`` of a loader that has one and calls ``load_state_dict`` before the
    resumed run iterates it. The position is the number of batches the trainer finished in the
    current epoch (``progress()``), not the number the loader yielded (Lightning prefetches).

    Args:
        sampler: an :class:`EpochShuffleSampler`.
        progress: returns the batches of the current epoch the trainer has processed.
        **kwargs: DataLoader arguments.
    """

    def __init__(self, dataset: Dataset, sampler: EpochShuffleSampler, progress: Callable[[], int],
                 **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self.progress())}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(state["epoch"], state["batches"])  # type: ignore[attr-defined]


class FaceDataModule(pl.LightningDataModule):
    """Base datamodule.

    Args:
        data_dir: root of the dataset in its official layout; ``None`` serves the synthetic world.
        batch_size: training batch size (validation uses ``val_batch_size`` or the same).
        num_workers: DataLoader worker processes.
        augment: ``cpu`` (per sample, in workers), ``gpu`` (batched on the device), ``none``.
        seed: seed of the synthetic world and of the augmentation streams.
        val_batch_size: validation/test batch size.
        pin_memory: pin host memory (useful with GPUs).
        synth_cache: render the synthetic sets once into memory (fast epochs over a fixed set)
            instead of rendering every index on the fly (a new sample per index, no memory).

    The init arguments of the concrete class (subclass arguments included) are saved as
    hyperparameters, hence in every checkpoint (``datamodule_hyper_parameters``). The training
    order is seeded by (seed, epoch) and resumes mid-epoch where the checkpoint left it
    (:class:`EpochShuffleSampler`, :class:`ResumableDataLoader`).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        augment: AugmentMode = "cpu",
        seed: int = 0,
        val_batch_size: int | None = None,
        pin_memory: bool = False,
        synth_cache: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if augment not in ("cpu", "gpu", "none"):
            raise ValueError(f"augment must be 'cpu', 'gpu' or 'none', got {augment!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.seed = seed
        self.val_batch_size = val_batch_size or batch_size
        self.pin_memory = pin_memory
        self.synth_cache = synth_cache
        self._caches: dict[str, CachedDataset] = {}
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None
        self.batched_augment: nn.Module | None = None
        self._said_synthetic = False

    # ---- to implement ---------------------------------------------------------------------
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def build_datasets(self, stage: str) -> None:
        """Create ``train_set``/``val_set``/``test_set``/``predict_set`` for ``stage``."""
        raise NotImplementedError

    # ---- shared -----------------------------------------------------------------------------
    @property
    def synthetic(self) -> bool:
        return self.data_dir is None

    def note_synthetic(self, what: str) -> None:
        """Say once in the log that the synthetic world is served."""
        if self.synthetic and not self._said_synthetic:
            log.warning(
                "%s: no data_dir given, serving the synthetic face world (%s)", type(self).__name__, what
            )
            self._said_synthetic = True

    def maybe_cache(self, dataset: Dataset, desc: str) -> Dataset:
        """``dataset`` held in memory when ``synth_cache`` is on (synthetic data only); built once per
        ``desc`` and reused by later stages (validate, then fit)."""
        if not (self.synth_cache and self.synthetic):
            return dataset
        if desc not in self._caches:
            self._caches[desc] = CachedDataset(dataset, desc)
        return self._caches[desc]

    def setup(self, stage: str) -> None:
        self.build_datasets(stage)

    def _batches_processed(self) -> int:
        """Training batches of the current epoch the trainer has finished (0 without a trainer)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def _loader(self, dataset: Dataset | None, shuffle: bool, batch_size: int, name: str) -> DataLoader:
        """A DataLoader over ``dataset``; ``shuffle`` gives the resumable (seed, epoch) training order."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no {name} set for this stage")
        kwargs: dict[str, Any] = dict(
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
        if not shuffle:
            return DataLoader(dataset, **kwargs)
        trainer = self.trainer
        sampler = EpochShuffleSampler(
            dataset,
            batch_size,
            seed=self.seed,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )
        drop_last = len(sampler) >= batch_size
        return ResumableDataLoader(dataset, sampler, self._batches_processed, drop_last=drop_last, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size, "train")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.val_batch_size, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set or self.val_set, False, self.val_batch_size, "test")

    def predict_dataloader(self) -> DataLoader:
        dataset = self.predict_set or self.test_set or self.val_set
        return self._loader(dataset, False, self.val_batch_size, "predict")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if (
            self.augment == "gpu"
            and self.batched_augment is not None
            and trainer is not None
            and trainer.training
        ):
            self.batched_augment.to(batch["image"].device)
            batch = self.batched_augment(batch)
        return batch


class CropDataModule(FaceDataModule):
    """Face-crop datamodule base (landmarks, head pose): synthetic crops or a real dataset.

    Subclasses implement :meth:`real_datasets`. Augmentation is the landmark recipe (flip with the
    scheme's permutation, rotation, scale, translation, colour) per sample in workers or batched on
    the device.

    Args:
        scheme: landmark scheme name (``facelit.geometry.schemes``).
        image_size: crop side in pixels.
        synth_train_size / synth_val_size: synthetic crops per split.
        synth_domain: synthetic domain name (``facelit.synth.DOMAINS``).
        num_identities: synthetic identities.
        flip_p, rotation, scales, translation: augmentation ranges (degrees, factors, fraction of size).
        **kwargs: FaceDataModule arguments (data_dir, batch_size, num_workers, augment, seed, ...).
    """

    def __init__(
        self,
        scheme: str = "ibug68",
        image_size: int = 256,
        synth_train_size: int = 20000,
        synth_val_size: int = 500,
        synth_domain: str = "source",
        num_identities: int = 100,
        flip_p: float = 0.5,
        rotation: float = 30.0,
        scales: tuple[float, float] = (0.75, 1.25),
        translation: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from facelit.batch import collate_crops
        from facelit.geometry.schemes import get_scheme

        self.scheme = get_scheme(scheme).name
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.image_size = image_size
        self.synth_train_size = synth_train_size
        self.synth_val_size = synth_val_size
        self.synth_domain = synth_domain
        self.num_identities = num_identities
        self.augment_kwargs = {"flip_p": flip_p, "rotation": rotation, "scales": tuple(scales),
                               "translation": translation}
        self.collate_fn = collate_crops

    def real_datasets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        """(train, val, test) datasets read from ``data_dir`` in the official layout."""
        raise NotImplementedError

    def _synthetic(self, seed: int, length: int) -> Dataset:
        from facelit.synth import FaceCropDataset

        return FaceCropDataset(seed=seed, length=length, size=self.image_size, domain=self.synth_domain,
                               scheme=self.scheme, num_identities=self.num_identities)

    def build_datasets(self, stage: str) -> None:
        from facelit.augment.landmarks import BatchedLandmarkAugment, LandmarkAugment

        if self.synthetic:
            self.note_synthetic(f"{self.scheme} crops, domain {self.synth_domain}")
            train = self._synthetic(self.seed, self.synth_train_size)
            if stage == "fit":
                train = self.maybe_cache(train, "synthetic train crops")
            val = self.maybe_cache(self._synthetic(self.seed + 1, self.synth_val_size), "synthetic val crops")
            test = None
        else:
            train, val, test = self.real_datasets()
        if self.augment == "cpu":
            train = TransformDataset(train, LandmarkAugment(self.scheme, **self.augment_kwargs))
        elif self.augment == "gpu":
            self.batched_augment = BatchedLandmarkAugment(self.scheme, **self.augment_kwargs)
        self.train_set, self.val_set, self.test_set = train, val, test
