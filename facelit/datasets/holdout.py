"""Validation hold-outs carved out of a training split, by group, the same on every machine.

Checkpoints and hyper-parameters are chosen on a validation split, never on the benchmark's test
split. Landmark benchmarks (300W-LP, AFLW-19, 300W) publish a training and a test split but no
validation split, so facelit holds one out of the training split:

* by **group**: every sample of one group (one source face of 300W-LP with all its synthesised
  views and their mirrored copies; one photo of AFLW or 300W with all its faces) lands on the same
  side, so no view of a validation face is ever trained on;
* by a **hash of the group name** (SHA-256 of ``"facelit-val:" + name``; CRC-32 mixes similar
  names too little), not by a random draw: the
  list follows from the file names alone, does not depend on the order files are listed in, on a
  seed or on which subsets are loaded, and is the same for every user of the release.

A group is held out when the first 8 bytes of its digest, read as an unsigned integer and divided
by ``2**64``, fall below ``fraction``, so about ``fraction`` of the groups are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["HOLDOUT_SALT", "DEFAULT_VAL_FRACTION", "in_holdout", "holdout_split"]

HOLDOUT_SALT = "facelit-val:"
DEFAULT_VAL_FRACTION = 0.05
_HASH_BYTES = 8
_HASH_RANGE = 2 ** (8 * _HASH_BYTES)


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}")


def in_holdout(group: str, fraction: float) -> bool:
    """Whether the group named ``group`` belongs to the validation hold-out."""
    _check_fraction(fraction)
    digest = hashlib.sha256((HOLDOUT_SALT + group).encode("utf-8")).digest()[:_HASH_BYTES]
    return int.from_bytes(digest, "big") / _HASH_RANGE < fraction


def holdout_split(groups: Sequence[str], fraction: float) -> tuple[list[int], list[int]]:
    """Split sample indices by their group names.

    Args:
        groups: (N,) group name of each sample.
        fraction: share of the groups held out, in (0, 1).

    Returns:
        (train indices, validation indices), each increasing.

    Raises:
        ValueError: for a fraction outside (0, 1), or when one side would be empty (too few groups).
    """
    _check_fraction(fraction)
    memo: dict[str, bool] = {}
    train, val = [], []
    for i, group in enumerate(groups):
        if group not in memo:
            memo[group] = in_holdout(group, fraction)
        (val if memo[group] else train).append(i)
    if groups and (not train or not val):
        side = "validation" if not val else "training"
        raise ValueError(
            f"holding out {fraction:.0%} of {len(memo)} groups leaves the {side} side empty; "
            f"use more data or another val_fraction"
        )
    return train, val
