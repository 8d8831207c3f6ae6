"""WIDER FACE detection data (with the RetinaFace landmark release), or synthetic scenes.

Official layout under ``data_dir`` (see README "WIDER FACE")::

    WIDER_train/images/<event>/<file>.jpg
    WIDER_val/images/<event>/<file>.jpg
    wider_face_split/wider_face_{train,val}_bbx_gt.txt   (+ wider_face_val.mat, wider_{easy,medium,hard}_val.mat)
    train/label.txt                                       (RetinaFace release: 5 landmarks per face)

Without ``data_dir`` the synthetic world's scenes (faces from 6 px to most of the image, five
landmarks, projected mesh, easy/medium/hard flags) are served.

Training images go through the RetinaFace recipe (random square crop of [0.3, 1] of the short
side, photometric distortion, flip with landmark swap, resize to ``image_size``), per sample in
workers (``augment="cpu"``) or batched on the device (``augment="gpu"``). Both crop from the
original image: for the device path the workers pass the images at their own size and the collate
pads them bottom/right to the batch's largest size, recording each true size in ``image_size``
(B, 2) (:func:`collate_padded`), so crops never contain padding and small faces keep their pixels.
Validation images are letterboxed to ``image_size`` (long side scaled, padded bottom/right);
``meta["scale"]`` maps predictions back to the original pixels.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from datamodules.base import FaceDataModule, TransformDataset
from facelit.augment.crop import crop_resize
from facelit.batch import collate_detections

__all__ = ["WiderFaceDataModule", "collate_padded", "letterbox"]

_POINT_KEYS = ("boxes", "landmarks", "mesh")


def letterbox(sample: dict[str, Any], size: int) -> dict[str, Any]:
    """Scale a detection sample so that its long side is ``size``, pad to (size, size).

    Points and boxes scale by the same factor (pixel-area frame: x' = s * x); mesh z scales too.
    ``meta["scale"]`` records s and ``meta["orig_size"]`` the original (H, W).
    """
    image = sample["image"]
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = dict(sample)
    resized = crop_resize(image, torch.tensor([0.0, 0.0, w, h]), (nh, nw))
    out["image"] = F.pad(resized, (0, size - nw, 0, size - nh))
    sx, sy = nw / w, nh / h
    factor = torch.tensor([sx, sy])
    for key in _POINT_KEYS:
        if key not in sample:
            continue
        value = sample[key]
        if key == "boxes":
            out[key] = value * factor.repeat(2)
        elif key == "mesh":
            out[key] = torch.cat([value[..., :2] * factor, value[..., 2:] * scale], dim=-1)
        else:
            out[key] = value * factor
    meta = dict(sample.get("meta", {}))
    meta.setdefault("orig_size", (h, w))
    meta["scale"] = (sx, sy)
    out["meta"] = meta
    return out


def collate_padded(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``collate_detections`` of images of any sizes: each is padded bottom/right with zeros to the
    batch's largest (H, W) (points and boxes keep their pixel coordinates), and ``image_size``
    (B, 2) int64 holds each image's true (H, W)."""
    sizes = torch.tensor([tuple(s["image"].shape[-2:]) for s in samples], dtype=torch.int64)
    h, w = (int(v) for v in sizes.max(0).values)
    padded = [
        s if tuple(s["image"].shape[-2:]) == (h, w)
        else {**s, "image": F.pad(s["image"], (0, w - s["image"].shape[-1], 0, h - s["image"].shape[-2]))}
        for s in samples
    ]  # fmt: skip
    batch = collate_detections(padded)
    batch["image_size"] = sizes
    return batch


class WiderFaceDataModule(FaceDataModule):
    """WIDER FACE (official layout) or synthetic scenes for face detection.

    Args:
        image_size: training/validation square size (the paper trains at 640).
        mesh: serve projected mesh ground truth (synthetic only; WIDER has none).
        synth_train_size: synthetic training scenes (each index renders a new scene).
        synth_val_size: synthetic validation scenes (a fixed set, seed + 1).
        synth_max_faces: faces per synthetic scene at most.
        synth_render_size: size the synthetic scenes are rendered at before augmentation.
        crop_scales: the random square crop range, as fractions of the short side.
        predict_images: a folder of images for ``predict`` (original sizes, one image per batch);
            without it ``predict`` runs on WIDER val at original scale (real data) or on the
            synthetic validation scenes.
        **kwargs: FaceDataModule arguments (data_dir: WIDER FACE root in the layout above or None for
            synthetic scenes; batch_size, num_workers, augment, seed, val_batch_size, synth_cache, ...).
    """

    def __init__(
        self,
        image_size: int = 640,
        mesh: bool = False,
        synth_train_size: int = 4000,
        synth_val_size: int = 200,
        synth_max_faces: int = 16,
        synth_render_size: int | None = None,
        crop_scales: tuple[float, float] = (0.3, 1.0),
        predict_images: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if image_size < 32 or image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        self.image_size = image_size
        self.mesh = mesh
        self.synth_train_size = synth_train_size
        self.synth_val_size = synth_val_size
        self.synth_max_faces = synth_max_faces
        self.synth_render_size = synth_render_size or image_size
        self.crop_scales = tuple(crop_scales)
        self.predict_images = predict_images
        self.collate_fn = collate_padded

    def _augment_kwargs(self) -> dict[str, Any]:
        mesh_flip = None
        if self.mesh and self.synthetic:
            from facelit.geometry.mirror import mirror_permutation
            from facelit.synth import head_model

            mesh_flip = mirror_permutation(head_model("human").vertices)
        return {"output_size": self.image_size, "crop_scales": self.crop_scales, "mesh_flip_perm": mesh_flip}

    def _scenes(self, seed: int, length: int) -> Any:
        from facelit.synth import SceneDataset

        size = self.synth_render_size
        return SceneDataset(seed=seed, length=length, height=size, width=size, max_faces=self.synth_max_faces)

    def build_datasets(self, stage: str) -> None:
        from facelit.augment.detection import BatchedDetectionAugment, DetectionAugment

        if self.synthetic:
            self.note_synthetic("scenes with 5 landmarks" + (" and mesh" if self.mesh else ""))
            train_raw = self._scenes(self.seed, self.synth_train_size)
            val_raw = self._scenes(self.seed + 1, self.synth_val_size)
        else:
            from facelit.datasets.wider_face import WiderFaceDataset

            train_raw = WiderFaceDataset(self.data_dir, split="train", landmarks=True)
            val_raw = WiderFaceDataset(self.data_dir, split="val", landmarks=False)
        if not self.mesh:
            train_raw, val_raw = _DropMesh(train_raw), _DropMesh(val_raw)
        val_raw = self.maybe_cache(val_raw, "synthetic val scenes")

        size = self.image_size
        if stage == "fit":
            train_raw = self.maybe_cache(train_raw, "synthetic train scenes")
            if self.augment == "cpu":
                self.train_set = TransformDataset(train_raw, DetectionAugment(**self._augment_kwargs()))
            elif self.augment == "gpu":  # original sizes, padded by collate_padded, cropped on the device
                self.train_set = train_raw
                self.batched_augment = BatchedDetectionAugment(**self._augment_kwargs())
            else:
                self.train_set = TransformDataset(train_raw, partial(letterbox, size=size))
        self.val_set = TransformDataset(val_raw, partial(letterbox, size=size))
        self.test_set = self.val_set
        if stage == "predict":
            if self.predict_images is not None:
                from facelit.datasets.images import ImageFolderDataset

                self.predict_set = ImageFolderDataset(self.predict_images)
            else:
                self.predict_set = val_raw if not self.synthetic else self.val_set

    def predict_dataloader(self):  # noqa: D102  (original-size images: one per batch)
        if self.predict_images is None and self.synthetic:
            return super().predict_dataloader()
        return self._loader(self.predict_set, False, 1, "predict")


class _DropMesh(torch.utils.data.Dataset):
    """Serve a detection dataset without its mesh keys (saves collate and transfer time)."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        sample.pop("mesh", None)
        sample.pop("mesh_valid", None)
        return sample
