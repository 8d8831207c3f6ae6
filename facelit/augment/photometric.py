"""Photometric distortion on [0, 1] RGB images, per sample or batched, as in the SSD/RetinaFace code.

One implementation serves (3, H, W) samples and (B, 3, H, W) batches; random parameters are drawn
per sample. The recipe is SSD's ``PhotometricDistort`` as used by RetinaFace's ``_distort``
(translated from 0..255 BGR to 0..1 RGB):

- brightness: ``x + beta``, ``beta ~ U[-32/255, 32/255]``, with probability ``p``;
- contrast: ``x * alpha``, ``alpha ~ U[0.5, 1.5]`` (a gain, as in SSD, not a blend with the mean),
  with probability ``p``, applied either right after brightness or at the very end (coin flip);
- saturation: HSV saturation times ``U[0.5, 1.5]`` with probability ``p``;
- hue: HSV hue shifted by ``U[-0.1, 0.1]`` of the full circle (OpenCV's +-18 of 180) with
  probability ``p``.

Every step clamps to [0, 1]. Saturation and hue are computed in closed form on RGB (HSV keeps
``max``; the chroma ``max - min`` scales with the saturation; the hue picks the channel weights),
without materialising an HSV image; the expensive steps run only on the samples that draw them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from facelit.augment.geometry import uniform

__all__ = [
    "PhotometricParams",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "sample_photometric_params",
    "photometric_distort",
    "PhotometricDistort",
]


@dataclass
class PhotometricParams:
    """Per-sample photometric parameters, each (B,); identity values where a step is skipped.

    Attributes:
        brightness: additive offset (0 = none).
        contrast: gain (1 = none).
        contrast_first: apply the gain right after brightness (else last).
        saturation: HSV saturation factor (1 = none).
        hue: hue shift in fractions of the full circle (0 = none).
    """

    brightness: torch.Tensor
    contrast: torch.Tensor
    contrast_first: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor


def _batched(image: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if image.dim() == 3:
        return image[None], True
    if image.dim() == 4:
        return image, False
    raise ValueError(f"expected a (3, H, W) or (B, 3, H, W) image, got shape {tuple(image.shape)}")


def _per_sample(value: torch.Tensor | float, image: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or (B,) value against a (B, C, H, W) image as (B, 1, 1, 1)."""
    v = torch.as_tensor(value, dtype=image.dtype, device=image.device)
    return v.reshape(-1, 1, 1, 1) if v.dim() > 0 else v


def _check_rgb(image: torch.Tensor) -> None:
    if image.shape[-3] != 3:
        raise ValueError(f"photometric ops need 3 RGB channels, got shape {tuple(image.shape)}")


def adjust_brightness(image: torch.Tensor, delta: torch.Tensor | float) -> torch.Tensor:
    """``clamp(x + delta)``; image (3, H, W) or (B, 3, H, W), delta scalar or (B,)."""
    img, single = _batched(image)
    out = (img + _per_sample(delta, img)).clamp_(0.0, 1.0)
    return out[0] if single else out


def adjust_contrast(image: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """``clamp(x * factor)`` (SSD's contrast gain); factor scalar or (B,)."""
    img, single = _batched(image)
    out = (img * _per_sample(factor, img)).clamp_(0.0, 1.0)
    return out[0] if single else out


# HSV -> RGB at full saturation and value, hue h in sextants [0, 6) (the shader form):
# R = |h - 3| - 1, G = 2 - |h - 2|, B = 2 - |h - 4|, each clamped to [0, 1].
_HUE_CENTRES = (3.0, 2.0, 4.0)
_HUE_SIGNS = (1.0, -1.0, -1.0)
_HUE_OFFSETS = (-1.0, 2.0, 2.0)


def _saturation_hue(
    img: torch.Tensor, factor: torch.Tensor | None, shift: torch.Tensor | None
) -> torch.Tensor:
    """HSV saturation times ``factor`` and hue plus ``shift`` turns on (B, 3, H, W), in closed form.

    HSV keeps the value ``v = max``; the chroma ``d = max - min`` becomes ``min(factor * d, v)``
    (the saturation clamped to 1); each channel is ``v - d + d * w_c(h)`` with the full-saturation
    weights ``w`` of the hue in sextants (``_HUE_*``). Without a hue shift the result is
    ``v - f' (v - c)`` with ``f' = min(f, v / d)``, which needs no hue at all. Branch-free
    arithmetic: ``torch.where`` costs several arithmetic passes on the CPU.
    """
    r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
    v = torch.maximum(torch.maximum(r, g), b)
    d = v - torch.minimum(torch.minimum(r, g), b)
    inv = d.clamp_min(1e-12).reciprocal_()
    if shift is None:
        if factor is None:
            return img
        # Grey pixels (d == 0) have v - img == 0: any ratio leaves them alone.
        ratio = torch.minimum(_per_sample(factor, img) * d, v).mul_(inv)
        return torch.addcmul(v, ratio, img - v).clamp_(0.0, 1.0)
    # Hue in sextants with OpenCV/kornia's priority (max = r, else g, else b); 0 for grey pixels.
    is_r = (v == r).to(img.dtype)
    is_g = (v == g).to(img.dtype).mul_(1.0 - is_r)
    is_b = 1.0 - is_r - is_g
    num = is_r * (g - b) + is_g * (b - r) + is_b * (r - g)
    h = num.mul_(inv).add_(is_g.mul_(2.0)).add_(is_b.mul_(4.0)).add_(6.0 * _per_sample(shift, img))
    h = torch.remainder(h, 6.0)
    chroma = d if factor is None else torch.minimum(_per_sample(factor, img) * d, v)
    consts = torch.tensor([_HUE_CENTRES, _HUE_SIGNS, _HUE_OFFSETS], dtype=img.dtype, device=img.device)
    centres, signs, offsets = consts.reshape(3, 1, 3, 1, 1).unbind(0)
    weight = (h - centres).abs_().mul_(signs).add_(offsets).clamp_(0.0, 1.0)
    return torch.addcmul(v - chroma, chroma, weight).clamp_(0.0, 1.0)


def adjust_saturation(image: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Multiply the HSV saturation by ``factor`` (scalar or (B,), result clamped to 1), keeping hue
    and value; image (3, H, W) or (B, 3, H, W)."""
    img, single = _batched(image)
    _check_rgb(img)
    out = _saturation_hue(img, torch.as_tensor(factor), None)
    return out[0] if single else out


def adjust_hue(image: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` turns (fractions of the full circle; scalar or (B,))."""
    img, single = _batched(image)
    _check_rgb(img)
    out = _saturation_hue(img, None, torch.as_tensor(shift))
    return out[0] if single else out


def _on_subset(
    img: torch.Tensor, mask: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``fn(img[i], i)`` for the samples with ``mask[i]``; the others are returned unchanged."""
    if bool(mask.all()):
        return fn(img, torch.arange(img.shape[0], device=img.device))
    if not bool(mask.any()):
        return img
    idx = mask.nonzero()[:, 0]
    return img.index_copy(0, idx, fn(img[idx], idx))


def sample_photometric_params(
    batch: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    brightness: float = 32.0 / 255.0,
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue: float = 0.1,
    p: float = 0.5,
) -> PhotometricParams:
    """Draw :class:`PhotometricParams` for ``batch`` samples (see the module docstring)."""
    device = torch.device(device)

    def coin(prob: float) -> torch.Tensor:
        return uniform((batch,), 0.0, 1.0, generator, device) < prob

    def maybe(value: torch.Tensor, identity: float) -> torch.Tensor:
        return torch.where(coin(p), value, torch.full_like(value, identity))

    return PhotometricParams(
        brightness=maybe(uniform((batch,), -brightness, brightness, generator, device), 0.0),
        contrast=maybe(uniform((batch,), contrast[0], contrast[1], generator, device), 1.0),
        contrast_first=coin(0.5),
        saturation=maybe(uniform((batch,), saturation[0], saturation[1], generator, device), 1.0),
        hue=maybe(uniform((batch,), -hue, hue, generator, device), 0.0),
    )


def photometric_distort(image: torch.Tensor, params: PhotometricParams) -> torch.Tensor:
    """Apply ``params`` to a (3, H, W) or (B, 3, H, W) image in the SSD order; output in [0, 1]."""
    img, single = _batched(image)
    _check_rgb(img)
    if params.brightness.shape[0] != img.shape[0]:
        raise ValueError(
            f"params are for {params.brightness.shape[0]} samples, image batch has {img.shape[0]}"
        )
    first = params.contrast_first
    one = torch.ones_like(params.contrast)
    gain_first = torch.where(first, params.contrast, one)
    gain_last = torch.where(first, one, params.contrast)
    sat, hue = params.saturation, params.hue
    # Each step runs only on the samples that draw it (half of them by default): the steps are
    # memory-bound passes over the image, and a skipped step is an exact identity.
    out = _on_subset(img, params.brightness != 0, lambda x, i: adjust_brightness(x, params.brightness[i]))
    out = _on_subset(out, gain_first != 1, lambda x, i: adjust_contrast(x, gain_first[i]))
    out = _on_subset(out, (sat != 1) | (hue != 0), lambda x, i: _saturation_hue(x, sat[i], hue[i]))
    out = _on_subset(out, gain_last != 1, lambda x, i: adjust_contrast(x, gain_last[i]))
    return out[0] if single else out


class PhotometricDistort(nn.Module):
    """Random SSD/RetinaFace photometric distortion of (3, H, W) or (B, 3, H, W) RGB in [0, 1].

    Args:
        brightness: maximum absolute additive brightness offset.
        contrast: range of the contrast gain.
        saturation: range of the saturation factor.
        hue: maximum absolute hue shift in fractions of the full circle.
        p: probability of each of the four steps, independently per sample.
    """

    def __init__(
        self,
        brightness: float = 32.0 / 255.0,
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue: float = 0.1,
        p: float = 0.5,
    ) -> None:
        super().__init__()
        if brightness < 0 or hue < 0:
            raise ValueError(f"brightness and hue must be >= 0, got {brightness}, {hue}")
        for name, rng in (("contrast", contrast), ("saturation", saturation)):
            if not 0 <= rng[0] <= rng[1]:
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {rng}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.brightness = float(brightness)
        self.contrast = (float(contrast[0]), float(contrast[1]))
        self.saturation = (float(saturation[0]), float(saturation[1]))
        self.hue = float(hue)
        self.p = float(p)

    def sample_params(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> PhotometricParams:
        """Draw per-sample parameters with this module's ranges."""
        return sample_photometric_params(
            batch, device, generator, self.brightness, self.contrast, self.saturation, self.hue, self.p
        )

    def forward(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        img, single = _batched(image)
        out = photometric_distort(img, self.sample_params(img.shape[0], img.device, generator))
        return out[0] if single else out
