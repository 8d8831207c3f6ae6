"""MTCNN training samples mined from WIDER FACE (official layout) or synthetic scenes.

``fit``/``validate`` serve 12/24/48 px crops (``facelit.datasets.mtcnn_samples``: negatives,
positives, part faces, landmark faces, 3:1:1:2 by default) cut from the detection images of
:class:`WiderFaceDataModule` (WIDER train/val with the RetinaFace landmark release, or synthetic
scenes with faces from 6 px and five landmarks). R-Net and O-Net train on hard samples: with
``detector_ckpt`` the earlier stages (P-Net; P-Net + R-Net) run over every training image and their
proposals become the samples; random windows fill what they leave open. ``landmark_dir`` adds
landmark faces from a CelebA tree (``facelit.datasets.celeba``).

Mining runs once, with a progress bar, in shards of ``shard_images`` images written to
``cache_dir/<key>/`` (the key hashes every setting that changes the samples); a killed run resumes
at the first missing shard. ``predict`` is WIDER FACE's (``predict_images``: original-size images,
one per batch, with their meta).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from datamodules.wider_face import WiderFaceDataModule
from facelit.batch import collate_crops, collate_detections
from facelit.datasets.mtcnn_samples import NEGATIVE, MiningConfig, concat_samples, mine_image
from facelit.geometry.schemes import FIVE_POINT
from facelit.nets.mtcnn import STAGE_SIZES, load_stage
from facelit.nets.mtcnn_cascade import CascadeSettings, detect_faces, get_preset

__all__ = ["MTCNNDataModule", "CropSamples"]

log = logging.getLogger(__name__)
_PREVIOUS = {"pnet": (), "rnet": ("pnet",), "onet": ("pnet", "rnet")}


def _source_key(source: str) -> list[Any]:
    """A detector source for the cache key: a checkpoint file with its size and modification time
    (a retrained checkpoint at the same path must not reuse the old samples)."""
    path = Path(source)
    if not path.is_file():
        return [source]
    stat = path.stat()
    return [source, stat.st_size, stat.st_mtime_ns]


class CropSamples(Dataset):
    """Mined crops held in memory (uint8), served as float crops, optionally flipped at random.

    Args:
        samples: ``mine_image`` outputs stacked (``image`` (K, 3, S, S) uint8, ``kind``, ``boxes``, ...).
        flip: flip half the crops horizontally (x' = S - x, left/right points swapped).
    """

    def __init__(self, samples: dict[str, torch.Tensor], flip: bool = False) -> None:
        self.samples = samples
        self.flip = flip
        self.perm = FIVE_POINT.flip_tensor()

    def __len__(self) -> int:
        return len(self.samples["kind"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {k: v[index] for k, v in self.samples.items()}
        item["image"] = item["image"].float() / 255
        if self.flip and bool(torch.rand(()) < 0.5):
            size = item["image"].shape[-1]
            item["image"] = item["image"].flip(-1)
            x1, y1, x2, y2 = item["boxes"].unbind()
            if item["kind"] != NEGATIVE:  # negatives carry no box
                item["boxes"] = torch.stack([size - x2, y1, size - x1, y2])
            pts = item["landmarks"][self.perm]
            item["landmarks"] = torch.where(
                item["landmarks_valid"], torch.stack([size - pts[:, 0], pts[:, 1]], -1), pts
            )
        return item


class MTCNNDataModule(WiderFaceDataModule):
    """Mined MTCNN samples for one cascade stage.

    Args:
        stage: ``pnet`` (12 px), ``rnet`` (24 px) or ``onet`` (48 px) samples.
        detector_ckpt: the earlier stages for hard mining, in order (``rnet``: [P-Net];
            ``onet``: [P-Net, R-Net]); each a checkpoint of ``MTCNNModule`` or ``"pretrained"``.
            None: random windows only (and a warning for R/O-Net).
        samples_per_image: crops per training image (val images give as many).
        ratio: negatives : positives : parts : landmark faces.
        min_face: smallest face (max side, px) cut into positives/parts/landmark faces; also the
            cascade's smallest searched face while mining.
        mining_preset: cascade thresholds used for hard mining (``default`` | ``wider``).
        landmark_dir: a CelebA root (``facelit.datasets.celeba``) adding landmark faces.
        landmark_images: CelebA images used (the first ones of the official train partition).
        cache_dir: where the mined shards go (None: in memory only, nothing written).
        shard_images: images per cached shard.
        flip: random horizontal flips of the training crops.
        **kwargs: WiderFaceDataModule arguments (data_dir, synth_train_size = training scenes,
            synth_val_size, synth_max_faces, synth_render_size, predict_images, batch_size, ...).
    """

    def __init__(
        self,
        stage: Literal["pnet", "rnet", "onet"] = "pnet",
        detector_ckpt: str | list[str] | None = None,
        samples_per_image: int = 28,
        ratio: tuple[float, float, float, float] = (3.0, 1.0, 1.0, 2.0),
        min_face: float = 12.0,
        mining_preset: str = "default",
        landmark_dir: str | None = None,
        landmark_images: int = 20000,
        cache_dir: str | None = None,
        shard_images: int = 64,
        flip: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if stage not in STAGE_SIZES:
            raise ValueError(f"stage must be one of {sorted(STAGE_SIZES)}, got {stage!r}")
        sources = [detector_ckpt] if isinstance(detector_ckpt, str) else list(detector_ckpt or [])
        if sources and len(sources) != len(_PREVIOUS[stage]):
            raise ValueError(
                f"detector_ckpt for stage {stage} must list {len(_PREVIOUS[stage])} net(s) "
                f"{list(_PREVIOUS[stage])}, got {sources}"
            )
        self.stage = stage
        self.detector_sources = sources
        self.mining = MiningConfig(
            size=STAGE_SIZES[stage],
            samples_per_image=samples_per_image,
            ratio=tuple(ratio),
            min_face=min_face,
        )
        self.mining_preset = get_preset(mining_preset)
        self.landmark_dir = landmark_dir
        self.landmark_images = landmark_images
        self.cache_dir = cache_dir
        self.shard_images = shard_images
        self.flip = flip
        self.collate_fn = collate_crops

    # ---- mining ---------------------------------------------------------------------------------
    def _detector(self) -> list[torch.nn.Module]:
        if not self.detector_sources:
            if self.stage != "pnet":
                log.warning(
                    "MTCNNDataModule(%s): no detector_ckpt, mining random windows only (no hard samples)",
                    self.stage,
                )
            return []
        return [
            load_stage(src, st) for src, st in zip(self.detector_sources, _PREVIOUS[self.stage], strict=False)
        ]

    def _cache_key(self, split: str, length: int) -> str:
        sources = [_source_key(src) for src in self.detector_sources]
        spec = {
            "split": split,
            "length": length,
            "stage": self.stage,
            "mining": repr(self.mining),
            "preset": repr(self.mining_preset),
            "sources": sources,
            "seed": self.seed,
            "data": str(self.data_dir),
            "render": [self.synth_render_size, self.synth_max_faces],
            "landmarks": [self.landmark_dir, self.landmark_images],
        }
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.stage}_{split}_{digest}"

    def _mine(
        self,
        images: Dataset,
        split: str,
        seed: int,
        nets: list[torch.nn.Module],
        cfg: MiningConfig | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mine every image of ``images`` (in shards, cached and resumable when ``cache_dir`` is set)."""
        from tqdm.auto import tqdm

        cfg = cfg or self.mining
        n = len(images)  # type: ignore[arg-type]
        folder = Path(self.cache_dir) / self._cache_key(split, n) if self.cache_dir else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        settings = CascadeSettings(
            **{**self.mining_preset.__dict__, "min_face": max(12.0, self.mining.min_face)}
        )
        shards = []
        with tqdm(total=n, desc=f"mining {self.stage} {split} samples", leave=False) as bar:
            for first in range(0, n, self.shard_images):
                path = folder / f"shard_{first // self.shard_images:05d}.pt" if folder else None
                if path is not None and path.is_file():
                    shards.append(torch.load(path, weights_only=True))
                    bar.update(min(self.shard_images, n - first))
                    continue
                parts = []
                for i in range(first, min(n, first + self.shard_images)):
                    parts.append(self._mine_one(images[i], nets, settings, cfg, seed * 1_000_003 + i))
                    bar.update(1)
                shard = concat_samples(parts)
                if path is not None:
                    tmp = path.with_suffix(".tmp")
                    torch.save(shard, tmp)
                    tmp.replace(path)  # atomic: a killed run never leaves a half shard
                shards.append(shard)
        return concat_samples(shards)

    def _mine_one(
        self,
        sample: dict[str, Any],
        nets: list[torch.nn.Module],
        settings: CascadeSettings,
        cfg: MiningConfig,
        seed: int,
    ) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        proposals = None
        if nets:
            rnet = nets[1] if len(nets) > 1 else None
            proposals = detect_faces(sample["image"][None], nets[0], rnet, None, settings)[0]["boxes"]
        return mine_image(
            sample["image"],
            sample["boxes"],
            cfg,
            generator,
            sample.get("landmarks"),
            sample.get("landmarks_valid"),
            sample.get("ignore"),
            proposals,
        )

    def _landmark_samples(self) -> dict[str, torch.Tensor] | None:
        if self.landmark_dir is None:
            return None
        from dataclasses import replace

        from facelit.datasets.celeba import CelebALandmarks

        faces = CelebALandmarks(self.landmark_dir, split="train", limit=self.landmark_images)
        only_landmarks = replace(self.mining, ratio=(0.0, 0.0, 0.0, 1.0))
        return self._mine(faces, "celeba", self.seed + 7, [], only_landmarks)

    # ---- datasets --------------------------------------------------------------------------------
    def build_datasets(self, stage: str) -> None:
        if stage == "predict":
            self.collate_fn = collate_detections
            if self.predict_images is not None:  # a folder of images needs no annotation files
                from facelit.datasets.images import ImageFolderDataset

                self.predict_set = ImageFolderDataset(self.predict_images)
            else:
                super().build_datasets(stage)
            return
        self.collate_fn = collate_crops
        if self.synthetic:
            self.note_synthetic(f"scenes mined into {self.mining.size} px {self.stage} samples")
            train_raw = self._scenes(self.seed, self.synth_train_size)
            val_raw = self._scenes(self.seed + 1, self.synth_val_size)
        else:
            from facelit.datasets.wider_face import WiderFaceDataset

            train_raw = WiderFaceDataset(self.data_dir, split="train", landmarks=True)
            val_raw = WiderFaceDataset(self.data_dir, split="val", landmarks=False)
        nets = self._detector()
        val = self._mine(val_raw, "val", self.seed + 1, nets)
        self.val_set = CropSamples(val)
        self.test_set = self.val_set
        if stage == "fit":
            train = self._mine(train_raw, "train", self.seed, nets)
            extra = self._landmark_samples()
            if extra is not None:
                train = concat_samples([train, extra])
            self.train_set = CropSamples(train, flip=self.flip and self.augment != "none")
            counts = torch.bincount(train["kind"], minlength=4).tolist()
            log.info("MTCNN %s samples: %d negative, %d positive, %d part, %d landmark", self.stage, *counts)
