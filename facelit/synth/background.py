"""Backgrounds, clutter/occluder shapes and image post-processing of the synthetic world.

Convention
----------
Images are (3, H, W) float32 RGB in [0, 1]; shape positions are (x, y) pixels in the pixel-area
frame (pixel i covers [i, i + 1)). Everything is drawn from the caller's generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .cache import tensor_cache
from .domains import Domain

__all__ = [
    "BACKGROUND_DRAWS",
    "background_noise_size",
    "backgrounds",
    "upscale",
    "upscale_canvas",
    "superellipse_fans",
    "gaussian_blur",
    "finish",
    "noise_tile",
]


@tensor_cache(8)
def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    return xs, ys


@tensor_cache(1)
def noise_tile() -> torch.Tensor:
    """(3, 1024, 1024) fixed standard-normal tile (sensor noise is cut from it at random offsets; larger
    images get no sensor noise)."""
    return torch.randn(3, 1024, 1024, generator=torch.Generator().manual_seed(1234))


BACKGROUND_DRAWS = 12
"""Uniform draws per image consumed by ``backgrounds``."""

_COARSE, _MEDIUM = 4, 10  # grid sizes of the smooth colour noise
_FINE_CELL = 5  # pixels per cell of the fine grey texture


def background_noise_size(height: int, width: int) -> int:
    """Number of standard-normal draws per image consumed by ``backgrounds``."""
    return 3 * (_COARSE**2 + _MEDIUM**2) + (height // _FINE_CELL + 2) * (width // _FINE_CELL + 2)


def backgrounds(
    u: torch.Tensor, noise: torch.Tensor, height: int, width: int, domain: Domain
) -> tuple[torch.Tensor, torch.Tensor]:
    """B textured backgrounds at half resolution: smooth colour noise plus stripes or checks.

    Args:
        u: (B, BACKGROUND_DRAWS) uniform draws. noise: (B, background_noise_size(H, W)) normal draws.
        height, width: full image size.

    Returns:
        images (B, 3, ceil(H / 2), ceil(W / 2)) and the fine grey grain (B, 1, h, w) that ``upscale``
        adds at full resolution.
    """
    b = u.shape[0]
    c0, c1 = 3 * _COARSE**2, 3 * (_COARSE**2 + _MEDIUM**2)
    coarse = noise[:, :c0].view(b, 3, _COARSE, _COARSE)
    medium = noise[:, c0:c1].view(b, 3, _MEDIUM, _MEDIUM)
    fine = noise[:, c1:].view(b, 1, height // _FINE_CELL + 2, width // _FINE_CELL + 2)
    hh, hw = (height + 1) // 2, (width + 1) // 2
    size = (hh, hw)
    base = u[:, 0:3] * 0.7 + 0.15
    mix = u[:, 3:4, None, None]
    smooth = torch.lerp(
        _bilinear3(medium, size).contiguous(),
        _bilinear3(coarse, size).contiguous(),
        mix,
    )
    img = base[:, :, None, None] + 0.22 * smooth
    weights = torch.tensor(domain.background, dtype=torch.float32)
    cdf = weights.cumsum(0) / weights.sum()
    kind = torch.searchsorted(cdf, u[:, 4].contiguous()).clamp(max=2)
    patterned = (kind > 0).nonzero().squeeze(1)
    if patterned.numel():
        xs, ys = _grid(hh, hw)
        k = kind.index_select(0, patterned)
        angle = (u.index_select(0, patterned)[:, 5] * math.pi)[:, None, None]
        # periods of 8 to 40 full-resolution pixels
        freq = (2 * math.pi / (4.0 + 16.0 * u.index_select(0, patterned)[:, 6]))[:, None, None]
        ca, sa = torch.cos(angle), torch.sin(angle)
        stripes = torch.sin((xs * ca + ys * sa) * freq)
        checks = torch.sign(stripes * torch.sin((ys * ca - xs * sa) * freq))
        pattern = torch.where((k == 1)[:, None, None], stripes, checks)
        up = u.index_select(0, patterned)
        colour = (up[:, 7:10] - 0.5) * (0.15 + 0.2 * up[:, 10:11])
        img = img.index_add(0, patterned, colour[:, :, None, None] * pattern[:, None])
    return img.clamp(0, 1), fine


def _bilinear3(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(images, size, mode="bilinear")`` of (B, 3, h, w) images, channels-last.

    Single-threaded, the channels-last kernel gives bit-identical values to the NCHW call (which
    then takes the separable kernel for three channels; checked over image and batch sizes in
    tests/unit/test_synth_speed.py) in about 60 % of its time. The result is channels-last.
    """
    return F.interpolate(images.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear")


def upscale_canvas(half: torch.Tensor, grain: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Full-resolution backgrounds from half-resolution ones (B, 3, h, w) plus the fine grain,
    written channel-major as one canvas (3, B * H, W) (image b is rows b * H .. (b + 1) * H)."""
    b = half.shape[0]
    full = _bilinear3(half, (height, width))
    grain_up = 0.06 * F.interpolate(grain, size=(height, width), mode="bilinear")
    canvas = torch.empty(3, b, height, width)
    torch.add(full.permute(1, 0, 2, 3), grain_up.permute(1, 0, 2, 3), out=canvas)
    return canvas.view(3, b * height, width)


def upscale(half: torch.Tensor, grain: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Full-resolution backgrounds (B, 3, H, W) from half-resolution ones plus the fine grain."""
    b = half.shape[0]
    return (
        upscale_canvas(half, grain, height, width).view(3, b, height, width).permute(1, 0, 2, 3).contiguous()
    )


def superellipse_fans(
    centre: torch.Tensor, axes: torch.Tensor, angle: torch.Tensor, power: torch.Tensor, segments: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangle fans of K superellipses ``|x/a|^p + |y/b|^p = 1`` (p=2 ellipse, large p: rectangle).

    Args:
        centre: (K, 2) pixels. axes: (K, 2) half axes. angle: (K,) radians. power: (K,) exponents.

    Returns:
        vertices (K, segments + 1, 2) with the centre first, triangles (K * segments, 3) indexing the
        flattened vertices (outward orientation for y-down images, i.e. front-facing).
    """
    k = centre.shape[0]
    t = torch.linspace(0, 2 * math.pi, segments + 1)[:-1]
    c, s = torch.cos(t), torch.sin(t)
    e = 2.0 / power[:, None]
    x = axes[:, :1] * torch.sign(c) * c.abs() ** e
    y = axes[:, 1:] * torch.sign(s) * s.abs() ** e
    ca, sa = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    rim = torch.stack([x * ca - y * sa, x * sa + y * ca], -1) + centre[:, None, :]
    verts = torch.cat([centre[:, None, :], rim], 1)
    j = torch.arange(segments)
    base = (torch.arange(k) * (segments + 1))[:, None]
    # (centre, j + 1, j) is counter-clockwise on screen (y down) -> front-facing
    tris = torch.stack([base.expand(k, segments), base + 1 + (j + 1) % segments, base + 1 + j], -1)
    return verts, tris.reshape(-1, 3)


def _kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (3, H, W) with replicate padding; large sigmas via a pyramid."""
    if sigma <= 0.3:
        return img
    x = img[None]
    h, w = img.shape[-2:]
    factor = 1
    if sigma > 3.0:
        factor = min(int(sigma / 1.5), max(1, min(h, w) // 4))
        if factor > 1:
            x = F.avg_pool2d(x, factor, ceil_mode=True)
            sigma = math.sqrt(max(sigma**2 - (factor**2) / 4.0, 0.25)) / factor
    k = _kernel(sigma)
    r = k.numel() // 2
    c = x.shape[1]
    x = F.pad(x, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    if factor > 1:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x[0]


def finish(img: torch.Tensor, u: torch.Tensor, domain: Domain, in_place: bool = False) -> torch.Tensor:
    """Domain colour style (saturation, gain, contrast) and sensor noise of B images, clamped to [0, 1].

    Args:
        img: (B, 3, H, W). u: (B, 3) uniform draws (noise level, noise tile offsets).
        in_place: for domains without a colour style, write the result into ``img`` (and return it)
            instead of a copy; the renderer finishes its own canvas so.
    """
    b, _, h, w = img.shape
    s, c = domain.saturation, domain.contrast
    if (s, c, domain.colour_gain) != (1.0, 1.0, (1.0, 1.0, 1.0)):
        # one linear colour map: contrast * gain * (s * I + (1 - s) / 3 * ones) and an offset
        m = (
            c
            * torch.diag(torch.tensor(domain.colour_gain))
            @ (s * torch.eye(3) + (1 - s) / 3 * torch.ones(3, 3))
        )
        out = torch.matmul(m, img.reshape(b, 3, h * w)).view(b, 3, h, w) + 0.5 * (1 - c)
    else:
        out = img if in_place else img.clone()
    lo, hi = domain.noise_std
    tile = noise_tile.shared()  # read-only here
    if hi > 0 and h <= tile.shape[1] and w <= tile.shape[2]:
        std = (lo + (hi - lo) * u[:, 0]).tolist()
        oy = (u[:, 1] * (tile.shape[1] - h + 1)).long().clamp(max=tile.shape[1] - h).tolist()
        ox = (u[:, 2] * (tile.shape[2] - w + 1)).long().clamp(max=tile.shape[2] - w).tolist()
        for i in range(b):
            out[i].add_(tile[:, oy[i] : oy[i] + h, ox[i] : ox[i] + w], alpha=std[i])
    return out.clamp_(0, 1)
