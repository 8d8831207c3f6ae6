"""Label-space source weights (PADACO) and a DDP-correct weighted sampler.

PADACO (Kuhnke & Ostermann, ICCV 2019) estimates which part of the source label space the target
occupies from the model's own predictions on the unlabelled target: every target prediction puts
one unit of weight, shared equally, on its ``N_n`` nearest source samples in label space
(yaw, pitch, roll). Source samples near no target prediction get weight 0 (plus an optional
floor). The weights are computed once and enter training through the sampler.

:class:`WeightedDistributedSampler` draws ``num_replicas * num_samples`` indices with replacement
from the weights using a generator seeded by ``(seed, epoch)``, identically on every rank, and
gives rank ``r`` the draws ``r, r + R, r + 2R, ...``: the rank shards together are exactly the
global weighted draw of one process. It subclasses ``DistributedSampler`` so that Lightning does
not wrap it again (Lightning's ``DistributedSamplerWrapper`` would never advance the inner sampler's
epoch and would repeat one draw every epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch.utils.data import DistributedSampler

__all__ = ["label_space_weights", "label_space_weights_bruteforce", "WeightedDistributedSampler"]

_SEED_STRIDE = 1_000_003  # seed of epoch e: seed * _SEED_STRIDE + e (distinct for any epoch < stride)


def _check_labels(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty (N, D) array of labels, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{name}: row {bad} is not finite: {arr[bad].tolist()}")
    return arr


def _finish(counts: np.ndarray, floor: float) -> torch.Tensor:
    weights = counts + floor
    total = weights.sum()
    if total <= 0:
        raise ValueError("all source weights are zero")
    return torch.from_numpy(weights * (len(weights) / total)).float()


def label_space_weights(
    source: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_neighbours: int = 10,
    floor: float = 0.0,
    workers: int = 1,
) -> torch.Tensor:
    """PADACO source weights from target predictions (k-d tree; exact nearest neighbours).

    Args:
        source: (N, D) source labels (D = 3: yaw, pitch, roll in degrees).
        target: (M, D) predictions for the unlabelled target samples, same units.
        num_neighbours: N_n, the source neighbours each target prediction spreads its unit over.
        floor: weight added to every source sample before normalising (0: unseen poses never drawn).
        workers: threads of the k-d tree query.

    Returns:
        (N,) float32 weights with mean 1: ``w_i = (floor + sum_j [i in knn(t_j)] / N_n)``, rescaled.
        Ties between equidistant source samples are broken by the tree.
    """
    src = _check_labels(source, "source labels")
    tgt = _check_labels(target, "target predictions")
    if src.shape[1] != tgt.shape[1]:
        raise ValueError(f"source labels have {src.shape[1]} columns, target predictions {tgt.shape[1]}")
    if not 1 <= num_neighbours <= len(src):
        raise ValueError(f"num_neighbours must be in [1, {len(src)}] (source size), got {num_neighbours}")
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    _, idx = cKDTree(src).query(tgt, k=num_neighbours, workers=workers)
    counts = np.bincount(np.asarray(idx).reshape(-1), minlength=len(src)) / num_neighbours
    return _finish(counts.astype(np.float64), floor)


def label_space_weights_bruteforce(
    source: torch.Tensor, target: torch.Tensor, num_neighbours: int = 10, floor: float = 0.0, chunk: int = 256
) -> torch.Tensor:
    """The same weights by chunked brute force (``torch.cdist`` + ``topk``): reference and benchmark."""
    src = torch.as_tensor(_check_labels(source, "source labels"))
    tgt = torch.as_tensor(_check_labels(target, "target predictions"))
    counts = torch.zeros(len(src), dtype=torch.float64)
    for start in range(0, len(tgt), chunk):
        d = torch.cdist(tgt[start : start + chunk], src)
        idx = d.topk(num_neighbours, dim=1, largest=False).indices
        counts += torch.bincount(idx.reshape(-1), minlength=len(src)).double()
    return _finish((counts / num_neighbours).numpy(), floor)


class WeightedDistributedSampler(DistributedSampler):
    """Weighted sampling with replacement, seeded by (seed, epoch), sharded across ranks.

    Args:
        weights: (N,) non-negative sampling weights (``None`` = uniform over ``num_items``); may be
            replaced between epochs with :meth:`set_weights`.
        num_samples: draws per rank and epoch (default: ``ceil(N / num_replicas)``).
        num_replicas, rank: the DDP world size and this process's rank (1 and 0 without DDP).
        seed: base seed; epoch ``e`` uses ``seed * 1_000_003 + e``.
        num_items: dataset size when ``weights`` is None.
    """

    def __init__(
        self,
        weights: torch.Tensor | None,
        num_samples: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_items: int | None = None,
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}"
            )
        if weights is None and (num_items is None or num_items < 1):
            raise ValueError("give either weights or num_items >= 1")
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, int(seed), 0
        self.weights: torch.Tensor | None = None
        self.num_items = int(num_items) if weights is None else len(weights)
        if weights is not None:
            self.set_weights(weights)
        self.num_samples = int(num_samples) if num_samples else math.ceil(self.num_items / num_replicas)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.total_size = self.num_samples * num_replicas

    def set_weights(self, weights: torch.Tensor | None) -> None:
        """Replace the weights (takes effect at the next ``iter``); ``None`` = uniform."""
        if weights is None:
            self.weights = None
            return
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if len(w) != self.num_items:
            raise ValueError(f"expected {self.num_items} weights, got {len(w)}")
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        self.weights = w

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_draw(self) -> torch.Tensor:
        """(num_replicas * num_samples,) int64: this epoch's draw before sharding (same on every rank)."""
        g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + self.epoch)
        if self.weights is None:
            return torch.randint(self.num_items, (self.total_size,), generator=g)
        return torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_draw()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
