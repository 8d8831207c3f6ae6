"""Deterministic random streams of the synthetic world.

Every sample is a pure function of integer keys, e.g. ``(seed, index)`` for a sample or
``(seed, identity)`` for the shape and colours of an identity: ``generator(*keys)`` returns a fresh
local ``torch.Generator`` seeded by a stable 64-bit mix of the keys (never the global RNG, never
Python's salted ``hash``), so results do not depend on worker processes, call order or platform.
"""

from __future__ import annotations

import torch

__all__ = ["stable_seed", "generator"]

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def stable_seed(*keys: int | str) -> int:
    """A 63-bit seed that depends on every key (ints or short strings), stable across runs."""
    h = 0x6A09E667F3BCC908
    for k in keys:
        if isinstance(k, str):
            k = int.from_bytes(k.encode()[:8].ljust(8, b"\0"), "little") ^ len(k)
        h = _splitmix64(h ^ (int(k) & _MASK))
    return h & ((1 << 63) - 1)


def generator(*keys: int | str) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded from ``keys``."""
    return torch.Generator().manual_seed(stable_seed(*keys))
