"""Synthetic face embeddings of a committee of models: identity clusters on the unit sphere, for the
clustering side of CDP (mediator, propagation, baselines) without training any network.

Node i of identity y_i has, under model m, the feature

    normalise(Q_m (c_{y_i} + a_i + e_{m,i}))

with c_y ~ N(0, I) the identity centre, a_i ~ N(0, sample_noise^2 I) the sample's own deviation
(pose, occlusion: shared by every model, so no committee can undo it), e_{m,i} ~ N(0,
model_noise_m^2 I) the model's own error (independent across models: what a committee's consensus
averages away) and Q_m a random rotation (models live in different feature spaces, so only
similarities are comparable, as with real networks). Deterministic in ``seed``; another seed gives
other identities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["committee_embeddings"]


def _rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix


def committee_embeddings(
    seed: int,
    num_nodes: int,
    num_identities: int,
    model_noise: Sequence[float] = (0.8, 0.8, 0.8),
    dim: int = 32,
    sample_noise: float = 0.6,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Features of ``num_nodes`` nodes under ``len(model_noise)`` models (base first).

    Args:
        seed: world seed (identities, samples and model errors).
        num_nodes: N nodes; each identity drawn uniformly from ``num_identities``.
        model_noise: per model, the std of its own error relative to the unit-variance centres.
        dim: feature dimension.
        sample_noise: std of the per-sample deviation shared by every model.

    Returns:
        (features, labels): a list of (N, dim) float32 L2-normalised arrays, one per model, and the
        (N,) int64 identities.
    """
    if num_nodes < 1 or num_identities < 1 or dim < 1 or not model_noise:
        raise ValueError(
            f"need num_nodes, num_identities, dim >= 1 and a model, got {num_nodes}, {num_identities}, "
            f"{dim}, {list(model_noise)}"
        )
    rng = np.random.default_rng([int(seed), 0])
    labels = rng.integers(0, num_identities, num_nodes).astype(np.int64)
    centres = rng.standard_normal((num_identities, dim))
    clean = centres[labels] + sample_noise * rng.standard_normal((num_nodes, dim))
    features = []
    for m, noise in enumerate(model_noise):
        model_rng = np.random.default_rng([int(seed), m + 1])
        x = (clean + float(noise) * model_rng.standard_normal((num_nodes, dim))) @ _rotation(model_rng, dim)
        features.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return features, labels
