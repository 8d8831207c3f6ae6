"""The synthetic world renders bit-identical samples for the same (seed, indices) across refactors.

The digests below were recorded on the renderer before ``facelit/synth/render.py`` and ``world.py``
were split into smaller modules; any change of pixels or labels (a refactor that reorders float
operations included) changes them. A sample's digest hashes each of its tensors (dtype, shape and
raw bytes) and combines them independently of the key names. Rendered single-threaded: intra-op
threads change the float reduction order of some ops (scenes differ in the last bits with 2 threads).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest
import torch

from facelit.synth import render_crops, render_scenes

CASES: dict[str, tuple[Callable[[], list[dict[str, torch.Tensor]]], list[str]]] = {
    "crops_source_mesh": (
        lambda: render_crops(3, [0, 5, 11], 64, "source", "human", "ibug68", 10, True),
        ["8dcf1e2eeaafe60f", "93a546f249c16191", "3ebd19e6159c845a"],
    ),
    "crops_target_aflw19": (
        lambda: render_crops(7, [2, 3], 48, "target", "human", "aflw19", 5),
        ["3d6b137925d519a9", "133f4a605c6c85f0"],
    ),
    "crops_clean_five_point": (
        lambda: render_crops(1, [4], 40, "clean", "human", "five_point", 3),
        ["4a5f883c7933c953"],
    ),
    "crops_horse": (
        lambda: render_crops(2, [0, 1], 48, "source", "horse", "animal5"),
        ["49d197acee597be1", "51360af48ab2c4b5"],
    ),
    "crops_sheep": (lambda: render_crops(2, [9], 48, "source", "sheep", "animal5"), ["31bdc95c94d82716"]),
    "scenes_source": (
        lambda: render_scenes(5, [0, 1], 96, 128, "source", 6),
        ["25cc09ecd5d94676", "eb46c797654e266e"],
    ),
    "scenes_target": (lambda: render_scenes(4, [3], 80, 80, "target", 4, 4.0), ["9b4dcaec48b0631e"]),
}


def digest(sample: dict[str, torch.Tensor]) -> str:
    """16 hex digits over every tensor of ``sample`` (dtype, shape, bytes), independent of key names."""
    parts = []
    for value in sample.values():
        t = value.contiguous()
        header = str((t.dtype, tuple(t.shape))).encode()
        parts.append(hashlib.sha256(header + t.numpy().tobytes()).hexdigest())
    return hashlib.sha256("".join(sorted(parts)).encode()).hexdigest()[:16]


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendering_is_bit_identical_to_the_recorded_digests(name: str, one_thread: None):
    render, expected = CASES[name]
    assert [digest(s) for s in render()] == expected


def test_digest_sees_a_one_ulp_change():
    sample = {"image": torch.rand(3, 8, 8), "boxes": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    changed = dict(sample, boxes=torch.nextafter(sample["boxes"], torch.full((4,), 10.0)))
    assert digest(sample) != digest(changed)
    assert digest(sample) == digest({"b": sample["boxes"], "a": sample["image"]})
