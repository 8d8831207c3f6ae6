"""Left/right correspondence of a (near-)symmetric mesh.

Convention
----------
Model coordinates with x the left-right axis (the synthetic head is symmetric about x = 0).
"""

from __future__ import annotations

import torch

__all__ = ["mirror_permutation"]


def mirror_permutation(vertices: torch.Tensor, axis: int = 0, tolerance: float = 1e-3) -> torch.Tensor:
    """For each vertex, the index of its mirror image across the plane ``axis = 0``.

    Args:
        vertices: (V, 3) mesh vertices of a mesh symmetric about that plane.
        axis: the mirrored coordinate.
        tolerance: largest allowed distance (relative to the mesh extent) between a mirrored vertex
            and its partner; a mesh that is not symmetric raises ``ValueError``.

    Returns:
        (V,) int64 permutation ``p`` with ``vertices[p]`` equal to the mirrored vertices.
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"expected (V, 3) vertices, got {tuple(vertices.shape)}")
    mirrored = vertices.clone()
    mirrored[:, axis] = -mirrored[:, axis]
    dist = torch.cdist(mirrored.double(), vertices.double())
    best, perm = dist.min(dim=1)
    extent = (vertices.max(0).values - vertices.min(0).values).max().item()
    if best.max().item() > tolerance * max(extent, 1e-12):
        raise ValueError(f"mesh is not symmetric about axis {axis}: worst mirror error {best.max().item():.3g}")
    if torch.unique(perm).numel() != perm.numel():
        raise ValueError("mirror correspondence is not one-to-one (duplicate vertices?)")
    return perm
