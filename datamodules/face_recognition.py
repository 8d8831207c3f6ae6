"""Face recognition datamodule: aligned identity-labelled crops for training, verification pairs for
validation/test, images for feature extraction (``predict``).

Real data (``data_dir``): CASIA-WebFace as distributed (one folder per identity) plus a 5-point
landmark file (``landmarks_file``, the SphereFace ``casia_landmark.txt`` layout); images without
landmarks are counted and reported in the log, never silently dropped. Evaluation sets: any
LFW-format ``pairs.txt`` with its image root and landmark file: ``test_*`` (LFW view 2, scored by
``cli.py test``) and optionally ``val_*`` (a validation set for checkpoint selection; without it
there is no validation: LFW is never used to select). Detection at prepare time is not wired yet:
landmarks come from a file (the hook for a detector is :meth:`FaceRecognitionDataModule.landmarks_for`).

Synthetic default: ``facelit.synth.recognition`` crops aligned by their ground-truth 5 points;
training identities from ``seed``, validation pairs from unseen identities (``unseen_seed(seed)``)
and test pairs from others again (``unseen_seed(seed) + 1``).

Batches: training ``image`` (B, 3, h, w), ``identity`` (B,), ``landmarks`` (B, 5, 2), ``index`` (B,);
pairs ``image`` (B, 3, h, w) left, ``image_right`` (B, 3, h, w), ``same`` (B,) bool, ``fold`` (B,),
``index`` (B,) pair number.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from datamodules.base import CachedDataset, FaceDataModule, TransformDataset
from facelit.datasets.recognition import (
    AlignedFaceDataset,
    LandmarkFrame,
    PairDataset,
    read_landmark_file,
    read_pairs,
    scan_identity_folders,
)
from facelit.geometry.align import TemplateName
from facelit.geometry.schemes import get_scheme

__all__ = ["FaceRecognitionDataModule", "RandomFlip"]


class RandomFlip:
    """Horizontal flip with probability ``p`` of an aligned sample (image and 5-point landmarks,
    ``x' = W - x`` with the five-point flip permutation)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p
        self.perm = get_scheme("five_point").flip_tensor()

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        if torch.rand(()) >= self.p:
            return sample
        sample = dict(sample)
        width = sample["image"].shape[-1]
        sample["image"] = sample["image"].flip(-1)
        pts = sample["landmarks"][self.perm].clone()
        pts[:, 0] = width - pts[:, 0]
        sample["landmarks"] = pts
        return sample


class FaceRecognitionDataModule(FaceDataModule):
    """Recognition data: CASIA-WebFace layout or synthetic identities; LFW-format pairs.

    Args:
        image_size: (height, width) of aligned crops (112x96 SphereFace; linked to the model).
        num_identities: training identities (classifier size; linked to the model). Real data:
            must equal the number of identity folders (10,575 for CASIA-WebFace).
        template: alignment template (``112x96`` or ``112x112``).
        landmarks_file: 5-point landmarks of the training images (required with ``data_dir``).
        landmark_frame: pixel frame of the landmark files (``matlab`` | ``zero_based`` | ``area``).
        val_root, val_pairs, val_landmarks_file: an optional validation pair set (real data).
        test_root, test_pairs, test_landmarks_file: the benchmark pair set (LFW view 2).
        flip_p: training flip probability (per sample, in workers).
        synth_train_size: synthetic training images.
        synth_eval_identities: unseen identities per synthetic pair set.
        synth_eval_size: images per synthetic pair set.
        synth_pairs_per_fold: matched (and mismatched) pairs per fold of the synthetic sets.
        synth_render_size: side of the rendered synthetic crop before alignment (default max(image_size)).
        **kwargs: FaceDataModule arguments (data_dir, batch_size, num_workers, augment, seed, ...).
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (112, 96),
        num_identities: int = 10575,
        template: TemplateName = "112x96",
        landmarks_file: str | None = None,
        landmark_frame: LandmarkFrame = "matlab",
        val_root: str | None = None,
        val_pairs: str | None = None,
        val_landmarks_file: str | None = None,
        test_root: str | None = None,
        test_pairs: str | None = None,
        test_landmarks_file: str | None = None,
        flip_p: float = 0.5,
        synth_train_size: int = 20000,
        synth_eval_identities: int = 200,
        synth_eval_size: int = 2000,
        synth_pairs_per_fold: int = 100,
        synth_render_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if len(image_size) != 2 or min(image_size) < 16:
            raise ValueError(f"image_size must be (height, width) >= 16, got {image_size}")
        if num_identities < 2:
            raise ValueError(f"num_identities must be >= 2, got {num_identities}")
        if self.augment == "gpu":
            raise ValueError("FaceRecognitionDataModule flips per sample: use augment 'cpu' or 'none'")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_identities, self.template = int(num_identities), template
        self.landmarks_file, self.landmark_frame = landmarks_file, landmark_frame
        self.val_spec = (val_root, val_pairs, val_landmarks_file)
        self.test_spec = (test_root, test_pairs, test_landmarks_file)
        self.flip_p = flip_p
        self.synth_train_size, self.synth_eval_identities = synth_train_size, synth_eval_identities
        self.synth_eval_size, self.synth_pairs_per_fold = synth_eval_size, synth_pairs_per_fold
        self.synth_render_size = synth_render_size
        self.collate_fn = default_collate

    # ---- real data ----------------------------------------------------------------------------
    def landmarks_for(
        self, root: str, landmarks_file: str | None
    ) -> dict[str, tuple[int | None, torch.Tensor]]:
        """5-point landmarks of the images below ``root``: from ``landmarks_file`` (a detector run at
        prepare time would plug in here, caching its output in the same file format)."""
        if landmarks_file is None:
            raise ValueError(
                f"{root}: a 5-point landmarks_file is required for real data "
                "(the 'path [label] x1 y1 ... x5 y5' layout, e.g. SphereFace's casia_landmark.txt)"
            )
        return read_landmark_file(landmarks_file, self.landmark_frame)

    def _real_pairs(self, spec: tuple[str | None, str | None, str | None], what: str) -> Dataset | None:
        root, pairs, landmarks = spec
        if root is None and pairs is None:
            return None
        if root is None or pairs is None:
            raise ValueError(f"{what}: give both {what}_root and {what}_pairs (got {root!r}, {pairs!r})")
        return PairDataset.from_pairs(
            root,
            read_pairs(pairs),
            self.landmarks_for(root, landmarks),
            self.image_size,
            self.template,
            source=str(landmarks),
        )

    def _real_train(self) -> Dataset:
        items, names = scan_identity_folders(self.data_dir)  # type: ignore[arg-type]
        if len(names) != self.num_identities:
            raise ValueError(
                f"{self.data_dir}: {len(names)} identity folders, but num_identities = "
                f"{self.num_identities}; set data.init_args.num_identities={len(names)}"
            )
        return AlignedFaceDataset(
            self.data_dir,
            items,
            self.landmarks_for(self.data_dir, self.landmarks_file),  # type: ignore[arg-type]
            self.image_size,
            self.template,
            str(self.landmarks_file),
        )

    # ---- synthetic ----------------------------------------------------------------------------
    def _synth_images(self, seed: int, length: int, identities: int) -> Dataset:
        from facelit.synth.recognition import RecognitionCropDataset

        return RecognitionCropDataset(
            seed, length, identities, self.image_size, self.synth_render_size, template=self.template
        )

    def _synth_pairs(self, seed: int, desc: str) -> Dataset:
        """Pairs over unseen identities. Their images are always rendered once into memory: the
        pairs need every image's identity, and pairs read each image several times."""
        from facelit.synth.recognition import verification_pairs

        if desc not in self._caches:
            images = self._synth_images(seed, self.synth_eval_size, self.synth_eval_identities)
            self._caches[desc] = CachedDataset(images, desc)
        images = self._caches[desc]
        identities = torch.stack([s["identity"] for s in images.samples])
        left, right, same, fold = verification_pairs(identities, self.synth_pairs_per_fold, seed=seed)
        return PairDataset(images, left, right, same, fold)

    def build_datasets(self, stage: str) -> None:
        from facelit.synth.recognition import unseen_seed

        if self.synthetic:
            self.note_synthetic(f"{self.num_identities} training identities, pairs of unseen identities")
            train = self._synth_images(self.seed, self.synth_train_size, self.num_identities)
            if stage == "fit":
                train = self.maybe_cache(train, "synthetic recognition train")
            val = self._synth_pairs(unseen_seed(self.seed), "synthetic recognition val")
            test = (
                self._synth_pairs(unseen_seed(self.seed) + 1, "synthetic recognition test")
                if stage in ("test", "predict")
                else None
            )
        else:
            train = self._real_train() if stage == "fit" else None
            val = self._real_pairs(self.val_spec, "val")
            test = self._real_pairs(self.test_spec, "test")
        if train is not None and self.augment == "cpu" and self.flip_p > 0:
            train = TransformDataset(train, RandomFlip(self.flip_p))
        self.train_set, self.val_set, self.test_set = train, val, test
        # features of every image of the benchmark set (for clustering, retrieval, CDP)
        pairs = test or val
        self.predict_set = pairs.images if isinstance(pairs, PairDataset) else None

    def val_dataloader(self):  # no validation set (real data without val_*): Lightning skips validation
        return [] if self.val_set is None else super().val_dataloader()
