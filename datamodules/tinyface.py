"""Face / non-face proposal crops for the tiny-face GAN (Bai et al., CVPR 2018), WIDER FACE or synthetic.

Real data (``data_dir``, the official WIDER FACE layout, read by ``facelit.datasets.wider_face``):
training crops come from WIDER train images: the ground-truth faces plus the proposals of a
detector run on WIDER train (``proposals_dir``: a folder of our JSON lines,
``predictions.rank*.jsonl``, as ``python cli.py predict ... --model.init_args.predict_dir=DIR``
writes them), labelled face when IoU >= 0.5 with a face, non-face otherwise. Validation crops come
from WIDER val the same way (``val_proposals_dir``). Without a proposal folder, proposals are
synthesised (jittered faces plus random boxes, ``facelit.datasets.proposal_crops.synthetic_proposals``).

Synthetic world (no ``data_dir``): scenes of ``facelit.synth.SceneDataset`` (train: seed, val:
seed + 1, the convention of ``datamodules.wider_face``) with synthesised proposals, or with a
detector's proposals on those scenes when ``proposals_dir``/``val_proposals_dir`` is given. A
detector's predict on synthetic scenes names images ``<batch>_<i>``; the records sorted by file
name are taken as scenes 0, 1, ... (the order predict visits them), and their count must match.

Predict (``predict_proposals_dir``, required for ``predict``): the detector's proposals on WIDER
val (real) or on the synthetic val scenes; each image's proposals smaller than ``rescore_below``
pixels are cropped at ``hr_size / scale`` for the GAN to re-score (``RescoreDataset``).

Batches (``collate_proposal_crops``): ``hr`` (N, 3, S, S), ``lr`` (N, 3, S/4, S/4), ``is_face`` (N,),
``boxes`` (N, 4), ``image_index`` (N,), ``meta``; N = all crops of ``batch_size`` images.
Predict batches hold one image (the ``RescoreDataset`` item, unbatched).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.base import FaceDataModule
from facelit.datasets.proposal_crops import (
    SEED_STRIDE,
    ProposalCropDataset,
    Proposals,
    RescoreDataset,
    collate_proposal_crops,
    read_proposals,
    synthetic_proposals,
)

__all__ = ["TinyFaceDataModule", "ProposalLookup"]

_PROPOSAL_STREAM = 7  # offsets the synthesised proposals' seed from the crop draws' (same image)


class ProposalLookup:
    """``(index, sample) -> Proposals`` from a detector's JSON lines (synthesised when ``pred_dir`` is None).

    Real images are looked up by ``(meta["event"], meta["file"])``; synthetic scenes (no meta) by
    position in the file-name order of the records. An image the detector did not list has no
    proposal (an empty set, as a detector that found nothing).
    """

    def __init__(self, pred_dir: str | None, seed: int, length: int, synth_kwargs: dict[str, Any]) -> None:
        self.pred_dir, self.seed, self.synth_kwargs = pred_dir, seed, synth_kwargs
        self.by_key: dict[tuple[str, str], Proposals] = {}
        self.by_order: list[Proposals] = []
        self.length = length
        if pred_dir is not None:
            self.by_key = read_proposals(pred_dir)
            self.by_order = [self.by_key[k] for k in sorted(self.by_key)]

    def __call__(self, index: int, sample: dict[str, Any]) -> Proposals:
        if self.pred_dir is None:
            g = torch.Generator().manual_seed(self.seed * SEED_STRIDE + index + _PROPOSAL_STREAM)
            return synthetic_proposals(
                sample["boxes"], tuple(sample["image"].shape[-2:]), g, **self.synth_kwargs
            )
        meta = sample.get("meta") or {}
        if "event" in meta and "file" in meta:
            empty = Proposals(torch.zeros(0, 4), torch.zeros(0))
            return self.by_key.get((str(meta["event"]), str(meta["file"])), empty)
        if len(self.by_order) != self.length:
            raise ValueError(
                f"{self.pred_dir}: {len(self.by_order)} images of proposals for {self.length} "
                "synthetic scenes (predict on the same scenes: same seed, size and count)"
            )
        return self.by_order[index]


class TinyFaceDataModule(FaceDataModule):
    """HR/LR face and non-face crops from detector proposals (WIDER FACE or synthetic scenes).

    Args:
        hr_size: HR crop side (128 in the paper); the LR side is ``hr_size // scale``.
        scale: super-resolution factor (4).
        crop_margin: square crop margin around a box (fraction of its longer side per side).
        crops_per_image: crops drawn per image (half faces when the image has enough).
        face_fraction: share of faces among them.
        min_crop_size: training/validation candidates smaller than this (image pixels) are dropped.
        proposals_dir / val_proposals_dir: detector JSON lines on the train / val images (None:
            synthesised proposals).
        predict_proposals_dir: detector JSON lines to re-score in ``predict``.
        rescore_below: re-score proposals whose longer side is below this many pixels (None: all).
        rescore_min_score: re-score only proposals whose detector score is at least this.
        synth_train_size / synth_val_size: synthetic scenes per split.
        synth_scene_size: synthetic scene side in pixels (match the detector's when reading its proposals).
        synth_max_faces: faces per synthetic scene at most.
        synth_proposals_per_face, synth_jitter, synth_false_positives: synthesised proposals.
        **kwargs: FaceDataModule arguments (data_dir, batch_size (images per batch), num_workers,
            seed, val_batch_size, synth_cache, ...).
    """

    def __init__(
        self,
        hr_size: int = 128,
        scale: int = 4,
        crop_margin: float = 0.1,
        crops_per_image: int = 8,
        face_fraction: float = 0.5,
        min_crop_size: float = 16.0,
        proposals_dir: str | None = None,
        val_proposals_dir: str | None = None,
        predict_proposals_dir: str | None = None,
        rescore_below: float | None = 20.0,
        rescore_min_score: float = 0.0,
        synth_train_size: int = 2000,
        synth_val_size: int = 100,
        synth_scene_size: int = 256,
        synth_max_faces: int = 8,
        synth_proposals_per_face: int = 2,
        synth_jitter: float = 0.25,
        synth_false_positives: int = 6,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("augment", "none")
        super().__init__(**kwargs)
        if hr_size < 16 or hr_size % scale:
            raise ValueError(f"hr_size must be >= 16 and a multiple of scale={scale}, got {hr_size}")
        self.hr_size, self.scale, self.crop_margin = hr_size, scale, crop_margin
        self.crops_per_image, self.face_fraction, self.min_crop_size = (
            crops_per_image,
            face_fraction,
            min_crop_size,
        )
        self.proposals_dir, self.val_proposals_dir = proposals_dir, val_proposals_dir
        self.predict_proposals_dir, self.rescore_below = predict_proposals_dir, rescore_below
        self.rescore_min_score = rescore_min_score
        self.synth_train_size, self.synth_val_size = synth_train_size, synth_val_size
        self.synth_scene_size, self.synth_max_faces = synth_scene_size, synth_max_faces
        self.synth_kwargs = {
            "per_face": synth_proposals_per_face,
            "jitter": synth_jitter,
            "false_positives": synth_false_positives,
        }
        self.collate_fn = collate_proposal_crops

    # ---- sources ------------------------------------------------------------------------------
    def _images(self, split: str) -> Dataset:
        if self.synthetic:
            from facelit.synth import SceneDataset

            seed, length = (
                (self.seed, self.synth_train_size)
                if split == "train"
                else (self.seed + 1, self.synth_val_size)
            )
            size = self.synth_scene_size
            scenes = SceneDataset(
                seed=seed, length=length, height=size, width=size, max_faces=self.synth_max_faces
            )
            return self.maybe_cache(scenes, f"synthetic {split} scenes")
        from facelit.datasets.wider_face import WiderFaceDataset

        return WiderFaceDataset(self.data_dir, split=split, landmarks=False)

    def _lookup(self, pred_dir: str | None, seed: int, images: Dataset) -> ProposalLookup:
        return ProposalLookup(pred_dir, seed, len(images), self.synth_kwargs)  # type: ignore[arg-type]

    def _crops(self, split: str, pred_dir: str | None, seed: int) -> ProposalCropDataset:
        images = self._images(split)
        return ProposalCropDataset(
            images,
            self._lookup(pred_dir, seed, images),
            self.hr_size,
            self.scale,
            self.crop_margin,
            self.crops_per_image,
            self.face_fraction,
            self.min_crop_size,
            seed,
        )

    def build_datasets(self, stage: str) -> None:
        self.note_synthetic("scenes with synthesised or detector proposals")
        if stage == "fit":
            self.train_set = self._crops("train", self.proposals_dir, self.seed)
        if stage in ("fit", "validate", "test"):
            self.val_set = self._crops("val", self.val_proposals_dir, self.seed + 1)
        if stage == "predict":
            if self.predict_proposals_dir is None:
                raise ValueError(
                    "TinyFaceDataModule: predict needs predict_proposals_dir (a detector's JSON lines)"
                )
            images = self._images("val")
            self.predict_set = RescoreDataset(
                images,
                self._lookup(self.predict_proposals_dir, self.seed + 1, images),
                self.hr_size // self.scale,
                self.crop_margin,
                self.rescore_below,
                self.rescore_min_score,
            )

    # ---- loaders ------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Shuffled by a sampler seeded by (seed, epoch) (``DistributedSampler``, one shard per rank),
        so a run resumed at an epoch boundary sees exactly the batches of an uninterrupted one."""
        if self.train_set is None:
            raise RuntimeError("TinyFaceDataModule has no train set for this stage")
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DistributedSampler(
            self.train_set,
            num_replicas=replicas,
            rank=rank,
            shuffle=True,
            seed=self.seed,
            drop_last=len(self.train_set) >= self.batch_size * replicas,
        )
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def predict_dataloader(self) -> DataLoader:
        """One image per batch (its proposals vary in number); the item is passed unbatched."""
        if self.predict_set is None:
            raise RuntimeError("TinyFaceDataModule has no predict set (call setup('predict'))")
        return DataLoader(self.predict_set, batch_size=None, shuffle=False, num_workers=self.num_workers)
