"""Consensus-Driven Propagation (CDP) data: a recognition set split by identity into a labelled and
an unlabelled part, with pseudo-labelled retraining.

Recognition part (:class:`CDPDataModule`, a :class:`FaceRecognitionDataModule`): the *world* is
either a real recognition folder layout (``data_dir``, CASIA-WebFace style, one folder per identity
plus a landmark file) or ``synth_world_size`` synthetic crops of ``synth_identities`` identities.
Its identities are split (:func:`split_identities`, deterministic in ``split_seed``, identities
disjoint) into a labelled part (``labelled_fraction``, 1:9 as the paper) and an unlabelled part;
optionally a share of the labelled identities (``held_out_fraction``) is kept out of recognition
training for the mediator. ``part`` chooses what ``fit`` trains on:

- ``labelled``: the labelled images, classes renumbered 0..L-1 (``num_identities`` = L): the base
  model, the committee and the "labelled only" baseline;
- ``all``: every image with its true identity (``num_identities`` = all identities): the
  "all labels" upper bound;
- ``pseudo``: labelled images and pseudo-labelled unlabelled images (``pseudo_labels``, one label
  per unlabelled image, -1 = discarded), each batch half of each (the authors' two-head scheme;
  ``num_pseudo_identities`` = number of pseudo classes).

``predict`` serves the images of ``predict_part`` (``labelled`` | ``held_out`` | ``unlabelled``)
in node order: item ``index`` = node id of the part, ``identity`` = its class (labelled) or true
identity (held out: the mediator's targets; unlabelled: for evaluation only). Validation and test
are the verification pairs of :class:`FaceRecognitionDataModule` (unseen identities), so every
model is scored the same way.

The mediator's pairs: :mod:`datamodules.cdp_mediator`.

Batches: as :mod:`datamodules.face_recognition`, plus ``pseudo`` (B,) bool with ``part=pseudo``
(True for the pseudo-labelled half).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from datamodules.base import CachedDataset, TransformDataset
from datamodules.face_recognition import FaceRecognitionDataModule, RandomFlip

__all__ = [
    "CDPDataModule",
    "IdentitySplit",
    "JointDataset",
    "PartDataset",
    "StoredDataset",
    "collate_joint",
    "split_identities",
    "part_num_identities",
]

Part = Literal["labelled", "all", "pseudo"]
PredictPart = Literal["labelled", "held_out", "unlabelled"]
DEFAULT_LABELLED_FRACTION = 0.1
"""Labelled share of the identities: 1:9, as the paper's MS-Celeb-1M split."""


@dataclass(frozen=True)
class IdentitySplit:
    """Disjoint identity sets (sorted int64): ``labelled`` (recognition training), ``held_out``
    (labelled, but kept out of recognition training: the mediator's training identities when
    ``held_out_fraction > 0``) and ``unlabelled``."""

    labelled: np.ndarray
    held_out: np.ndarray
    unlabelled: np.ndarray


def split_identities(
    num_identities: int,
    labelled_fraction: float = DEFAULT_LABELLED_FRACTION,
    seed: int = 0,
    held_out_fraction: float = 0.0,
) -> IdentitySplit:
    """Split identities 0..num_identities-1 into labelled, held-out and unlabelled sets.

    A random permutation seeded by ``seed``: the first round(labelled_fraction x n) identities (at
    least 1, at most n - 1) are labelled; of those, the first round(held_out_fraction x L) (at
    least 1 when the fraction is > 0, and at least one labelled identity left) are held out.
    """
    if not 0.0 < labelled_fraction < 1.0:
        raise ValueError(f"labelled_fraction must be in (0, 1), got {labelled_fraction}")
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    if num_identities < 2:
        raise ValueError(f"need at least 2 identities to split, got {num_identities}")
    n = int(num_identities)
    count = int(min(n - 1, max(1, round(labelled_fraction * n))))
    held = 0 if held_out_fraction == 0 else int(min(count - 1, max(1, round(held_out_fraction * count))))
    if held_out_fraction > 0 and held < 1:
        raise ValueError(
            f"{count} labelled identities leave none to hold out (held_out_fraction {held_out_fraction})"
        )
    perm = np.random.default_rng(int(seed)).permutation(n)
    parts = (perm[held:count], perm[:held], perm[count:])
    return IdentitySplit(*(np.sort(p).astype(np.int64) for p in parts))


def part_num_identities(
    num_identities: int, labelled_fraction: float, part: str, held_out_fraction: float = 0.0
) -> int:
    """Classifier classes of ``part``: the trained labelled identities (``labelled``, ``pseudo``: the
    labelled head) or all of them (``all``)."""
    if part == "all":
        return int(num_identities)
    return len(split_identities(num_identities, labelled_fraction, 0, held_out_fraction).labelled)


class StoredDataset(CachedDataset):
    """A :class:`CachedDataset` kept in a file: rendered once, loaded by every later run.

    The file holds the stacked samples (uint8 images); it is written atomically, so a killed run
    leaves no half file. Without ``path`` it is a plain in-memory cache.
    """

    def __init__(self, dataset: Dataset, desc: str, path: str | Path | None = None) -> None:
        path = Path(path) if path is not None else None
        if path is not None and path.is_file():
            stacked = torch.load(path, map_location="cpu", weights_only=True)
            n = len(next(iter(stacked.values())))
            self.samples = [{k: v[i] for k, v in stacked.items()} for i in range(n)]
            return
        super().__init__(dataset, desc)
        if path is not None and self.samples:
            path.parent.mkdir(parents=True, exist_ok=True)
            keys = self.samples[0].keys()
            tmp = path.with_suffix(".tmp")
            torch.save({k: torch.stack([s[k] for s in self.samples]) for k in keys}, tmp)
            tmp.replace(path)


class PartDataset(Dataset):
    """The samples of ``dataset`` at ``positions`` (node order), with new labels.

    Items: the sample with ``identity`` = ``labels[i]`` and ``index`` = i (node id in the part).

    Args:
        dataset: the world; positions: (M,) positions in it; labels: (M,) identity of each item.
    """

    def __init__(self, dataset: Dataset, positions: np.ndarray, labels: np.ndarray) -> None:
        if len(positions) != len(labels):
            raise ValueError(f"{len(positions)} positions but {len(labels)} labels")
        self.dataset = dataset
        self.positions = np.asarray(positions, dtype=np.int64)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[int(self.positions[index])])
        sample["identity"] = self.labels[index]
        sample["index"] = torch.tensor(index)
        return sample


class JointDataset(Dataset):
    """Pairs (labelled item, pseudo-labelled item) so that every batch holds as many of each.

    Item i is (``labelled[i % L]``, ``pseudo[i % P]``), length max(L, P): a shuffled epoch visits
    every item of the larger part once and cycles through the smaller one.
    """

    def __init__(self, labelled: Dataset, pseudo: Dataset) -> None:
        self.labelled, self.pseudo = labelled, pseudo
        self.sizes = (len(labelled), len(pseudo))  # type: ignore[arg-type]
        if min(self.sizes) == 0:
            raise ValueError(f"both parts need samples, got {self.sizes[0]} labelled, {self.sizes[1]} pseudo")

    def __len__(self) -> int:
        return max(self.sizes)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.labelled[index % self.sizes[0]], self.pseudo[index % self.sizes[1]]


def collate_joint(items: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Collate (labelled, pseudo) items into one batch of 2B: the labelled half first, ``pseudo``
    (2B,) bool marks the second half. ``identity`` holds each half's own label space."""
    labelled = default_collate([a for a, _ in items])
    pseudo = default_collate([b for _, b in items])
    batch = {k: torch.cat([labelled[k], pseudo[k]]) for k in ("image", "identity", "landmarks", "index")}
    batch["pseudo"] = torch.cat(
        [torch.zeros(len(items), dtype=torch.bool), torch.ones(len(items), dtype=torch.bool)]
    )
    return batch


class CDPDataModule(FaceRecognitionDataModule):
    """A recognition set split by identity for CDP (see the module doc).

    Args:
        part: ``labelled`` | ``all`` | ``pseudo``: what ``fit`` trains on.
        predict_part: ``labelled`` | ``held_out`` | ``unlabelled``: whose images ``predict`` serves.
        labelled_fraction: share of labelled identities (0.1 = 1:9).
        split_seed: seed of the identity split (one split for every model of a run).
        held_out_fraction: share of the labelled identities kept out of recognition training
            (``predict_part=held_out`` serves them: pairs for the mediator that behave as unseen
            identities do; 0 = the paper, whose mediator learns on the training identities).
        pseudo_labels: pseudo-label file of the unlabelled images (``part=pseudo``).
        num_pseudo_identities: pseudo classes (``part=pseudo``; must match the file).
        synth_identities: identities of the synthetic world (labelled and unlabelled).
        synth_world_size: images of the synthetic world.
        synth_variation: scale of the synthetic world's nuisances: pose ranges, blur and occluder
            probabilities of ``RECOGNITION_DOMAIN`` (1 = the SphereFace world; smaller = faces that
            small, briefly trained models can already cluster).
        cache_dir: folder where the rendered synthetic sets are kept between runs (``None``: memory).
        num_identities: classifier classes of ``part`` (checked: :func:`part_num_identities`).
        **kwargs: :class:`FaceRecognitionDataModule` arguments (``synth_train_size`` is unused).
    """

    def __init__(
        self,
        part: Part = "labelled",
        predict_part: PredictPart = "unlabelled",
        labelled_fraction: float = DEFAULT_LABELLED_FRACTION,
        split_seed: int = 0,
        held_out_fraction: float = 0.0,
        pseudo_labels: str | None = None,
        num_pseudo_identities: int = 0,
        synth_identities: int = 200,
        synth_world_size: int = 3000,
        synth_variation: float = 1.0,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if part not in ("labelled", "all", "pseudo"):
            raise ValueError(f"part must be 'labelled', 'all' or 'pseudo', got {part!r}")
        if predict_part not in ("labelled", "held_out", "unlabelled"):
            raise ValueError(
                f"predict_part must be 'labelled', 'held_out' or 'unlabelled', got {predict_part!r}"
            )
        if part == "pseudo" and (pseudo_labels is None or num_pseudo_identities < 1):
            raise ValueError(
                "part='pseudo' needs pseudo_labels (a label file) and num_pseudo_identities >= 1"
            )
        self.part, self.predict_part = part, predict_part
        self.labelled_fraction, self.split_seed = float(labelled_fraction), int(split_seed)
        self.held_out_fraction = float(held_out_fraction)
        self.pseudo_labels, self.num_pseudo_identities = pseudo_labels, int(num_pseudo_identities)
        self.synth_identities, self.synth_world_size = int(synth_identities), int(synth_world_size)
        if not 0.0 <= synth_variation <= 1.0:
            raise ValueError(f"synth_variation must be in [0, 1], got {synth_variation}")
        self.synth_variation = float(synth_variation)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.world_identity: np.ndarray | None = None
        self.split: IdentitySplit | None = None

    # ---- the world and its split ----------------------------------------------------------------
    def _synth_images(self, seed: int, length: int, identities: int) -> Dataset:
        """The parent's synthetic crops, in a domain whose nuisances are scaled by ``synth_variation``."""
        from dataclasses import replace

        from facelit.synth.recognition import RECOGNITION_DOMAIN, RecognitionCropDataset

        d, v = RECOGNITION_DOMAIN, self.synth_variation
        domain = replace(
            d,
            name=f"{d.name}_x{v:g}",
            yaw=(d.yaw[0] * v, d.yaw[1] * v),
            pitch=(d.pitch[0] * v, d.pitch[1] * v),
            roll=(d.roll[0] * v, d.roll[1] * v),
            occluder_prob=d.occluder_prob * v,
            blur_prob=d.blur_prob * v,
        )
        return RecognitionCropDataset(
            seed, length, identities, self.image_size, self.synth_render_size, domain, self.template
        )

    def _cache_path(self, desc: str, seed: int, length: int, identities: int) -> Path | None:
        if self.cache_dir is None:
            return None
        h, w = self.image_size
        name = (
            f"{desc.replace(' ', '_')}_s{seed}_n{length}_id{identities}_{h}x{w}_r{self.synth_render_size}.pt"
        )
        return self.cache_dir / name

    def _world(self) -> tuple[Dataset, np.ndarray, int]:
        """(dataset, (N,) identity of every image, number of identities) of the whole set."""
        if self.synthetic:
            desc = "synthetic CDP world"
            if desc not in self._caches:
                images = self._synth_images(self.seed, self.synth_world_size, self.synth_identities)
                path = self._cache_path(desc, self.seed, self.synth_world_size, self.synth_identities)
                self._caches[desc] = StoredDataset(images, desc, path)
            world = self._caches[desc]
            identity = torch.stack([s["identity"] for s in world.samples]).numpy()
            return world, identity, self.synth_identities
        from facelit.datasets.recognition import AlignedFaceDataset, scan_identity_folders

        items, names = scan_identity_folders(self.data_dir)  # type: ignore[arg-type]
        world = AlignedFaceDataset(
            self.data_dir,  # type: ignore[arg-type]
            items,
            self.landmarks_for(self.data_dir, self.landmarks_file),  # type: ignore[arg-type]
            self.image_size,
            self.template,
            str(self.landmarks_file),
        )
        return world, np.array([label for _, label in world.items], dtype=np.int64), len(names)

    def _synth_pairs(self, seed: int, desc: str) -> Dataset:
        """Verification pairs as the parent's, their images kept in ``cache_dir`` when given."""
        if desc not in self._caches and self.cache_dir is not None:
            images = self._synth_images(seed, self.synth_eval_size, self.synth_eval_identities)
            path = self._cache_path(desc, seed, self.synth_eval_size, self.synth_eval_identities)
            self._caches[desc] = StoredDataset(images, desc, path)
        return super()._synth_pairs(seed, desc)

    def part_positions(self, which: str) -> np.ndarray:
        """(M,) world positions of the ``labelled``, ``held_out`` or ``unlabelled`` images, in node order."""
        if self.world_identity is None or self.split is None:
            raise RuntimeError("call setup() first")
        return np.flatnonzero(np.isin(self.world_identity, getattr(self.split, which)))

    def _labelled_part(self, world: Dataset) -> PartDataset:
        pos = self.part_positions("labelled")
        return PartDataset(world, pos, np.searchsorted(self.split.labelled, self.world_identity[pos]))  # type: ignore[union-attr,index]

    def _pseudo_part(self, world: Dataset) -> PartDataset:
        from facelit.cluster.io import load_labels

        pos = self.part_positions("unlabelled")
        labels = load_labels(self.pseudo_labels, num_nodes=len(pos), allow_unlabelled=True)  # type: ignore[arg-type]
        kept = labels >= 0
        classes = int(labels.max()) + 1 if kept.any() else 0
        if classes != self.num_pseudo_identities:
            raise ValueError(
                f"{self.pseudo_labels}: {classes} pseudo classes (largest label + 1), but "
                f"num_pseudo_identities = {self.num_pseudo_identities}; set it to {classes} in data and model"
            )
        return PartDataset(world, pos[kept], labels[kept])

    def build_datasets(self, stage: str) -> None:
        from facelit.synth.recognition import unseen_seed

        world, self.world_identity, total = self._world()
        self.split = split_identities(total, self.labelled_fraction, self.split_seed, self.held_out_fraction)
        expected = part_num_identities(total, self.labelled_fraction, self.part, self.held_out_fraction)
        if self.num_identities != expected:
            raise ValueError(
                f"part={self.part!r} of {total} identities (labelled_fraction {self.labelled_fraction}) has "
                f"{expected} classes, but num_identities = {self.num_identities}; "
                f"set data.init_args.num_identities={expected}"
            )
        if self.synthetic:
            self.note_synthetic(f"{total} identities split {self.labelled_fraction:g} labelled")
            val = self._synth_pairs(unseen_seed(self.seed), "synthetic recognition val")
            test = (
                self._synth_pairs(unseen_seed(self.seed) + 1, "synthetic recognition test")
                if stage in ("test", "predict")
                else None
            )
        else:
            val = self._real_pairs(self.val_spec, "val")
            test = self._real_pairs(self.test_spec, "test")
        flip = RandomFlip(self.flip_p) if self.augment == "cpu" and self.flip_p > 0 else None

        def augmented(dataset: Dataset) -> Dataset:
            return TransformDataset(dataset, flip) if flip is not None else dataset

        train: Dataset | None = None
        if stage == "fit":
            if self.part == "all":
                train = augmented(
                    PartDataset(world, np.arange(len(self.world_identity)), self.world_identity)
                )
            elif self.part == "labelled":
                train = augmented(self._labelled_part(world))
            else:
                train = JointDataset(
                    augmented(self._labelled_part(world)), augmented(self._pseudo_part(world))
                )
        self.collate_fn = collate_joint if self.part == "pseudo" and stage == "fit" else default_collate
        self.train_set, self.val_set, self.test_set = train, val, test
        if self.predict_part == "labelled":
            self.predict_set = self._labelled_part(world)
        else:  # held-out and unlabelled images keep their true identity (mediator targets, evaluation)
            pos = self.part_positions(self.predict_part)
            self.predict_set = PartDataset(world, pos, self.world_identity[pos])

    def train_dataloader(self):
        """With ``part=pseudo`` each loader item is a (labelled, pseudo) couple: half as many items
        make a batch of ``batch_size`` images."""
        if self.part != "pseudo":
            return super().train_dataloader()
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"part='pseudo' needs an even batch_size >= 2, got {self.batch_size}")
        return self._loader(self.train_set, True, self.batch_size // 2, "train")
