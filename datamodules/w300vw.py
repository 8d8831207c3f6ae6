"""300-VW video clips (68 points or the 7-point RED-Net subset), or synthetic video clips.

Layout under ``data_dir`` (see README "300-VW" and :mod:`facelit.datasets.w300vw`)::

    <clip>/vid.avi  <clip>/annot/000001.pts ...  [<clip>/frames/000001.png ... after extraction]

Splits: ``train`` = the 50 training videos minus the validation hold-out; ``val`` = the training
videos whose id falls in the hash hold-out of ``val_fraction`` (:mod:`facelit.datasets.holdout`,
by video, so no frame of a validation video is trained on); ``test`` = the test videos of
``test_categories`` (1-3), served whole (``test_clip_length=None``) or in consecutive windows.
Checkpoints are chosen on ``val``, never on the test categories.

Without ``data_dir``: synthetic clips (:mod:`facelit.synth.video`), ``num_train_clips`` for
training (seed ``seed``), ``num_val_clips`` for validation (seed ``seed + 1``) and as many for
test (seed ``seed + 2``: never the clips checkpoints were chosen on).

Batches are clip batches (:mod:`facelit.datasets.clips`): ``image`` (B, T, 3, S, S), ``landmarks``
(B, T, K, 2), ``landmarks_visible`` (B, T, K), ``frame_mask`` (B, T), ``occluded`` (B, T),
``identity`` (B,), ``category`` (B,), ``frame_index`` (B, T), ``clip`` list[str].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from datamodules.base import FaceDataModule, TransformDataset
from facelit.datasets.clips import collate_clips
from facelit.geometry.schemes import get_scheme

__all__ = ["W300VWDataModule"]

DEFAULT_VAL_FRACTION = 0.1  # of the 50 training videos: about 5 held out


class W300VWDataModule(FaceDataModule):
    """Clips of T frames for RED-Net-style sequence alignment.

    Args:
        data_dir: 300-VW root (one folder per video); ``None`` serves synthetic clips.
        clip_length: frames per training / validation clip T.
        image_size: crop side S.
        scheme: ``ibug68`` or ``rednet7`` (the 7-point subset).
        num_train_clips, num_val_clips: synthetic clips per split.
        synth_domain: synthetic domain (``video``: yaw up to +-75 degrees, occluders in half the clips).
        num_identities: synthetic identities; on 300-VW at least 50 (a clip's identity is its video's
            position in ``W300VW_VIDEOS``, training videos first).
        stride: frames between the starts of training windows (default ``clip_length``).
        val_fraction: share of the 300-VW training videos held out for validation.
        test_categories: 300-VW test categories served by ``test``.
        test_clip_length: ``None`` for whole test videos, or a window length.
        flip_p, rotation, scales, translation: per-clip augmentation (:class:`ClipAugment`).
        stills_dir: a 300W root in the HRNet CSV layout (``datamodules/w300.py``): train on its
            training photos as one-frame clips instead (single-frame pre-training; framed like the
            300-VW crops; no ``identity`` key); validation and test stay on the clips.
        **kwargs: FaceDataModule arguments (batch_size, num_workers, augment, seed, synth_cache, ...).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        clip_length: int = 16,
        image_size: int = 128,
        scheme: str = "rednet7",
        num_train_clips: int = 400,
        num_val_clips: int = 32,
        synth_domain: str = "video",
        num_identities: int = 100,
        stride: int | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        test_categories: Sequence[int] = (1, 2, 3),
        test_clip_length: int | None = None,
        flip_p: float = 0.5,
        rotation: float = 15.0,
        scales: tuple[float, float] = (0.9, 1.1),
        translation: float = 0.05,
        stills_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        from facelit.datasets.w300vw import W300VW_CATEGORIES, W300VW_TRAIN

        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1, got {clip_length}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        bad = [c for c in test_categories if c not in W300VW_CATEGORIES]
        if bad:
            raise ValueError(f"unknown 300-VW test categories {bad}; known: {sorted(W300VW_CATEGORIES)}")
        if data_dir is not None and num_identities < len(W300VW_TRAIN):
            raise ValueError(
                f"num_identities must be >= {len(W300VW_TRAIN)} on 300-VW (one identity per training video), "
                f"got {num_identities}"
            )
        self.scheme = get_scheme(scheme).name
        self.clip_length, self.image_size = int(clip_length), int(image_size)
        self.num_train_clips, self.num_val_clips = int(num_train_clips), int(num_val_clips)
        self.synth_domain, self.num_identities = synth_domain, int(num_identities)
        self.stride, self.val_fraction = stride, float(val_fraction)
        self.test_categories = tuple(int(c) for c in test_categories)
        self.test_clip_length = test_clip_length
        self.stills_dir = stills_dir
        self.augment_kwargs = {
            "flip_p": flip_p,
            "rotation": rotation,
            "scales": tuple(scales),
            "translation": translation,
        }
        self.collate_fn = collate_clips

    def _synthetic(self, seed: int, length: int) -> Dataset:
        from facelit.synth.video import VIDEO_DOMAIN, SyntheticClipDataset

        domain = VIDEO_DOMAIN if self.synth_domain == VIDEO_DOMAIN.name else self.synth_domain
        return SyntheticClipDataset(
            seed=seed,
            length=length,
            clip_length=self.clip_length,
            size=self.image_size,
            domain=domain,
            scheme=self.scheme,
            num_identities=self.num_identities,
        )

    def real_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """(train, val, test) clips read from ``data_dir``."""
        from facelit.datasets.holdout import holdout_split
        from facelit.datasets.w300vw import W300VW_CATEGORIES, W300VW_TRAIN, W300VWClips

        root = Path(self.data_dir)  # type: ignore[arg-type]
        train_idx, val_idx = holdout_split(list(W300VW_TRAIN), self.val_fraction)
        test_ids = [c for k in self.test_categories for c in W300VW_CATEGORIES[k]]

        def read(ids: Sequence[str], length: int | None, stride: int | None) -> W300VWClips:
            return W300VWClips(root, ids, length, stride, self.image_size, self.scheme)

        return (
            read([W300VW_TRAIN[i] for i in train_idx], self.clip_length, self.stride),
            read([W300VW_TRAIN[i] for i in val_idx], self.clip_length, None),
            read(test_ids, self.test_clip_length, None),
        )

    def _stills(self) -> Dataset:
        """300W training photos (the hold-out of ``datamodules/w300.py`` excluded) as one-frame clips."""
        from facelit.datasets.clips import StillsAsClips
        from facelit.datasets.holdout import DEFAULT_VAL_FRACTION as W300_VAL_FRACTION
        from facelit.datasets.w300 import W300Dataset
        from facelit.datasets.w300vw import DEFAULT_MARGIN

        root = Path(self.stills_dir)  # type: ignore[arg-type]
        photos = W300Dataset(
            root / "images",
            root / "face_landmarks_300w_train.csv",
            self.image_size,
            scale_factor=1 + 2 * DEFAULT_MARGIN,
            split="train",
            val_fraction=W300_VAL_FRACTION,
        )
        return StillsAsClips(photos, self.scheme)

    def build_datasets(self, stage: str) -> None:
        from facelit.augment.clips import ClipAugment

        if self.synthetic:
            self.note_synthetic(
                f"{self.scheme} clips of {self.clip_length} frames, domain {self.synth_domain}"
            )
            train = self._synthetic(self.seed, self.num_train_clips)
            if stage == "fit":
                train = self.maybe_cache(train, "synthetic train clips")
            val = self.maybe_cache(self._synthetic(self.seed + 1, self.num_val_clips), "synthetic val clips")
            test = self._synthetic(self.seed + 2, self.num_val_clips)  # rendered on demand
        else:
            train, val, test = self.real_datasets()
        if self.stills_dir is not None:
            train = self._stills()
        if self.augment == "cpu":
            train = TransformDataset(train, ClipAugment(self.scheme, **self.augment_kwargs))
        elif self.augment == "gpu":
            self.batched_augment = ClipAugment(self.scheme, **self.augment_kwargs)
        self.train_set, self.val_set, self.test_set = train, val, test
