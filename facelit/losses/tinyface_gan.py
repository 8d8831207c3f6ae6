"""Losses of the tiny-face GAN (Bai et al., CVPR 2018, section 3.3).

Generator (per batch of N crops, HR targets ``I_HR``, LR inputs ``I_LR``, labels ``y`` face = 1)::

    L_G = MSE(G1(I_LR), I_HR) + MSE(G2(I_LR), I_HR)
          + alpha * BCE(D_real(G2), 1)        (adversarial: look like a real HR image)
          + beta  * BCE(D_face(G2), y)        (classification: keep the face / non-face identity)

Discriminator, on the four kinds of input (HR face, HR non-face, SR face, SR non-face) stacked as
one batch ``[HR; SR]`` of 2N crops::

    L_D = BCE(D_real([HR; SR]), [1; 0]) + BCE(D_face([HR; SR]), [y; y])

alpha and beta: the paper names them trade-off weights; we could not read its values from a
stored copy in this session, so the defaults are those of the public reimplementation the issue
cites (alpha = 1e-4, beta = 1e-3); both are arguments. BCE is taken on logits (numerically safe and
autocast-safe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ALPHA", "BETA", "discriminator_targets", "discriminator_loss", "generator_loss"]

ALPHA = 1e-4  # adversarial weight (public reimplementation)
BETA = 1e-3  # classification weight (public reimplementation)


def _check_labels(is_face: torch.Tensor, n: int, what: str) -> torch.Tensor:
    if is_face.shape != (n,):
        raise ValueError(f"{what}: is_face must be ({n},), got {tuple(is_face.shape)}")
    return is_face.to(torch.float32)


def discriminator_targets(is_face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the discriminator batch ``[HR; SR]`` built from N crops' face labels.

    Args:
        is_face: (N,) bool, the crop is a face.

    Returns:
        real (2N,) float: 1 for the N HR crops, 0 for the N SR crops; face (2N,) float: ``is_face``
        twice. Row k < N is (HR, face? is_face[k]); row N + k is (SR, face? is_face[k]).
    """
    y = is_face.to(torch.float32).reshape(-1)
    real = torch.cat([torch.ones_like(y), torch.zeros_like(y)])
    return real, torch.cat([y, y])


def discriminator_loss(
    real_logits: torch.Tensor, face_logits: torch.Tensor, is_face: torch.Tensor
) -> dict[str, torch.Tensor]:
    """BCE of D on ``[HR; SR]``.

    Args:
        real_logits, face_logits: (2N,) logits of D on the HR crops then the (detached) SR crops.
        is_face: (N,) bool labels of the crops.

    Returns:
        ``total`` = ``adversarial`` + ``classification`` (scalars).
    """
    n = real_logits.shape[0] // 2
    if real_logits.shape != (2 * n,) or face_logits.shape != (2 * n,):
        raise ValueError(
            f"expected (2N,) logits, got {tuple(real_logits.shape)} and {tuple(face_logits.shape)}"
        )
    _check_labels(is_face, n, "discriminator_loss")
    real_t, face_t = discriminator_targets(is_face)
    adv = F.binary_cross_entropy_with_logits(real_logits.float(), real_t.to(real_logits.device))
    cls = F.binary_cross_entropy_with_logits(face_logits.float(), face_t.to(face_logits.device))
    return {"total": adv + cls, "adversarial": adv, "classification": cls}


def generator_loss(
    g1: torch.Tensor,
    g2: torch.Tensor,
    hr: torch.Tensor,
    real_logits: torch.Tensor | None = None,
    face_logits: torch.Tensor | None = None,
    is_face: torch.Tensor | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
) -> dict[str, torch.Tensor]:
    """Generator loss; with ``real_logits=None`` the pixel loss only (the warm-up phase).

    Args:
        g1, g2, hr: (N, 3, H, W) up-sampled, refined and HR crops.
        real_logits, face_logits: (N,) D logits on ``g2`` (not detached).
        is_face: (N,) bool labels.

    Returns:
        ``total``, ``pixel`` (MSE(G1) + MSE(G2)), ``mse_g1``, ``mse_g2``, and when D is given
        ``adversarial`` and ``classification`` (unweighted).
    """
    if not (g1.shape == g2.shape == hr.shape):
        raise ValueError(f"G1 {tuple(g1.shape)}, G2 {tuple(g2.shape)} and HR {tuple(hr.shape)} must match")
    mse1 = F.mse_loss(g1.float(), hr.float())
    mse2 = F.mse_loss(g2.float(), hr.float())
    out = {"mse_g1": mse1, "mse_g2": mse2, "pixel": mse1 + mse2}
    total = out["pixel"]
    if real_logits is not None:
        if face_logits is None or is_face is None:
            raise ValueError("generator_loss: the adversarial terms need face_logits and is_face too")
        y = _check_labels(is_face, g2.shape[0], "generator_loss").to(face_logits.device)
        adv = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(y))
        cls = F.binary_cross_entropy_with_logits(face_logits.float(), y)
        out.update(adversarial=adv, classification=cls)
        total = total + alpha * adv + beta * cls
    out["total"] = total
    return out
