"""Mesh regression losses: L1 on vertices and L1 on triangle edge lengths (RetinaFace dense branch).

Convention
----------
Vertices are (P, V, 3) in any common frame (``MultiBoxLoss`` uses the anchor-normalised frame of
``encode_mesh``); ``faces`` are (F, 3) int64 vertex indices of triangles. The edge term compares
the lengths of the unique undirected triangle edges, which penalises local stretching that the
per-vertex term alone tolerates.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mesh_edges", "mesh_vertex_loss", "mesh_edge_loss"]

_EPS = 1e-12


def mesh_edges(faces: Tensor, num_vertices: int | None = None) -> Tensor:
    """Unique undirected edges of a triangle list.

    Args:
        faces: (F, 3) integer vertex indices.
        num_vertices: V, to check the indices (optional).

    Returns:
        (E, 2) int64, each row sorted (i < j), rows sorted.
    """
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.is_floating_point():
        raise ValueError(f"faces must be an integer (F, 3) tensor, got {faces.dtype} {tuple(faces.shape)}")
    faces = faces.long()
    if faces.numel() and (
        int(faces.min()) < 0 or (num_vertices is not None and int(faces.max()) >= num_vertices)
    ):
        raise ValueError(
            f"face indices must lie in [0, {num_vertices}), got [{int(faces.min())}, {int(faces.max())}]"
        )
    pairs = torch.cat((faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]))
    return torch.unique(pairs.sort(dim=1).values, dim=0)


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(
            f"pred and target must both be (P, V, 3), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean() if per_sample.numel() else per_sample.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def mesh_vertex_loss(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Per-sample mean over vertices of the L1 distance (summed over x, y, z).

    Args:
        pred, target: (P, V, 3).
        reduction: ``"mean"`` over samples (0 for P = 0), ``"sum"`` or ``"none"`` -> (P,).
    """
    _check_pair(pred, target)
    return _reduce((pred - target).abs().sum(-1).mean(-1), reduction)


def mesh_edge_loss(pred: Tensor, target: Tensor, faces: Tensor, reduction: str = "mean") -> Tensor:
    """Per-sample mean over unique triangle edges of ``| |e_pred| - |e_target| |``.

    Args:
        pred, target: (P, V, 3).
        faces: (F, 3) triangle vertex indices (or precomputed (E, 2) edges from :func:`mesh_edges`).
        reduction: ``"mean"`` over samples (0 for P = 0), ``"sum"`` or ``"none"`` -> (P,).
    """
    _check_pair(pred, target)
    edges = faces if faces.ndim == 2 and faces.shape[1] == 2 else mesh_edges(faces, pred.shape[1])
    edges = edges.to(pred.device)

    def lengths(v: Tensor) -> Tensor:
        d = v[:, edges[:, 0]] - v[:, edges[:, 1]]
        return torch.sqrt((d * d).sum(-1) + _EPS)  # eps: finite gradient for collapsed edges

    return _reduce((lengths(pred) - lengths(target)).abs().mean(-1), reduction)
