"""Synthetic recognition sets: many identities with pose, expression, lighting, occlusion, blur and
background variation, aligned by their ground-truth five points, plus LFW-style verification pairs.

Built on the public crop renderer (``render_crops``): a sample's identity is drawn uniformly from
``num_identities`` and its appearance is deterministic in (seed, identity), so identities of a
different ``seed`` are different people. Training sets use ``seed``; verification sets use
:func:`unseen_seed` (``seed + UNSEEN_SEED_OFFSET``), whose identities were never seen in training.

Pairs (:func:`verification_pairs`) follow LFW view 2: folds are identity-disjoint, each with the
same number of matched pairs (two different images of one identity) and mismatched pairs (images
of two identities of the fold).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from facelit.geometry.align import TemplateName, align_faces
from facelit.synth import Domain, render_crops

__all__ = [
    "RECOGNITION_DOMAIN",
    "UNSEEN_SEED_OFFSET",
    "unseen_seed",
    "RecognitionCropDataset",
    "verification_pairs",
]

RECOGNITION_DOMAIN = Domain(
    name="recognition",
    yaw=(-45.0, 45.0),
    pitch=(-20.0, 20.0),
    roll=(-25.0, 25.0),
    expression=1.0,
    occluder_prob=0.2,
    blur_prob=0.15,
    blur_sigma=(0.5, 2.0),
)
"""Photographic style of ``source`` with LFW-like poses (alignment undoes roll, not yaw/pitch)."""

UNSEEN_SEED_OFFSET = 100_003
_CHUNK = 64


def unseen_seed(seed: int) -> int:
    """The seed of the identities held out from the training set of ``seed``."""
    return int(seed) + UNSEEN_SEED_OFFSET


class RecognitionCropDataset(Dataset):
    """Aligned synthetic face crops with identity labels, deterministic in (seed, index).

    Items: ``image`` (3, h, w) float in [0, 1], ``identity`` () int64 in [0, num_identities),
    ``landmarks`` (5, 2) in the aligned crop, ``index`` () int64. ``__getitems__`` renders and aligns
    whole batches at once (what ``CachedDataset`` and the DataLoader use).

    Args:
        seed: world seed (identities of another seed are other people).
        length: number of samples.
        num_identities: identities drawn from (about length / num_identities images each).
        size: (height, width) of the aligned crop (112x96 in the paper; 56x48 for CPU demos).
        render_size: side of the rendered square crop that is aligned (>= the crop's height).
        domain: pose ranges and style (``RECOGNITION_DOMAIN`` by default, or a registered name).
        template: alignment template name.
    """

    def __init__(
        self,
        seed: int = 0,
        length: int = 1000,
        num_identities: int = 100,
        size: tuple[int, int] = (112, 96),
        render_size: int | None = None,
        domain: str | Domain = RECOGNITION_DOMAIN,
        template: TemplateName = "112x96",
    ) -> None:
        if length < 0 or num_identities < 1:
            raise ValueError(f"need length >= 0 and num_identities >= 1, got {length}, {num_identities}")
        self.seed, self.length, self.num_identities = int(seed), int(length), int(num_identities)
        self.size = (int(size[0]), int(size[1]))
        self.render_size = int(render_size or max(self.size))
        self.domain, self.template = domain, template

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for k in range(0, len(indices), _CHUNK):
            idx = [int(i) for i in indices[k : k + _CHUNK]]
            bad = [i for i in idx if not 0 <= i < self.length]
            if bad:
                raise IndexError(f"index {bad[0]} out of range for a dataset of length {self.length}")
            crops = render_crops(
                self.seed,
                idx,
                self.render_size,
                self.domain,
                "human",
                "five_point",  # type: ignore[arg-type]
                self.num_identities,
            )
            images = torch.stack([c["image"] for c in crops])
            points = torch.stack([c["landmarks"] for c in crops])
            aligned, _, moved = align_faces(images, points, self.size, self.template)
            out.extend(
                {
                    "image": aligned[j].clamp(0, 1),
                    "identity": crops[j]["identity"],
                    "landmarks": moved[j],
                    "index": torch.tensor(i),
                }
                for j, i in enumerate(idx)
            )
        return out


def verification_pairs(
    identities: torch.Tensor, pairs_per_fold: int, num_folds: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LFW-style pairs over images with identity labels: identity-disjoint folds, balanced.

    Args:
        identities: (N,) identity of each image.
        pairs_per_fold: matched pairs per fold (and as many mismatched pairs).
        num_folds: folds (10 as LFW).
        seed: seed of the draw.

    Returns:
        left (P,), right (P,) image positions, same (P,) bool, fold (P,) int64 in 1..num_folds,
        P = 2 * pairs_per_fold * num_folds; per fold the matched pairs come first, as in pairs.txt.
    """
    g = torch.Generator().manual_seed(int(seed))
    ids, counts = torch.unique(identities, return_counts=True)
    order = torch.randperm(ids.numel(), generator=g)
    ids, counts = ids[order], counts[order]
    fold_of_id = torch.arange(ids.numel()) % num_folds
    left, right, same, fold = [], [], [], []
    for f in range(num_folds):
        members = ids[fold_of_id == f]
        repeated = members[counts[fold_of_id == f] >= 2]
        if repeated.numel() == 0 or members.numel() < 2:
            raise ValueError(f"fold {f + 1} has too few identities for pairs: use more images or fewer folds")
        images = [torch.nonzero(identities == i).squeeze(1) for i in members.tolist()]
        by_id = dict(zip(members.tolist(), images, strict=True))
        for _ in range(pairs_per_fold):  # matched: two different images of one identity
            pool = by_id[int(repeated[torch.randint(repeated.numel(), (1,), generator=g)])]
            a, b = pool[torch.randperm(pool.numel(), generator=g)[:2]].tolist()
            left.append(a), right.append(b), same.append(True), fold.append(f + 1)
        for _ in range(pairs_per_fold):  # mismatched: images of two identities of the fold
            i, j = torch.randperm(members.numel(), generator=g)[:2].tolist()
            pi, pj = images[i], images[j]
            left.append(int(pi[torch.randint(pi.numel(), (1,), generator=g)]))
            right.append(int(pj[torch.randint(pj.numel(), (1,), generator=g)]))
            same.append(False), fold.append(f + 1)
    return torch.tensor(left), torch.tensor(right), torch.tensor(same), torch.tensor(fold)
