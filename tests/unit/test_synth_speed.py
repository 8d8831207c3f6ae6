"""The sped-up synthetic world renders the same bits as before at the sizes that are benchmarked.

The digests below were recorded with the renderer of commit 36ba593 (before the speed-ups of
issue 8) at the benchmark's sizes (128 x 128 crops, 640 x 640 scenes) and at odd sizes, batched
and one sample per call; ``test_synth_pinned.py`` pins smaller renders from before the module
split. Rendered single-threaded, as DataLoader workers render. The other tests pin what the
speed-ups rely on: channels-last bilinear upsampling gives the NCHW call's bits, and rendering
never edits the shared (uncopied) cache values it reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from facelit.synth import render_crop, render_crops, render_scene, render_scenes
from facelit.synth.background import _bilinear3, noise_tile, upscale, upscale_canvas
from facelit.synth.compose import _identity_assets, _stack_assets

from . import test_synth_pinned as pinned

digest = pinned.digest
one_thread = pinned.one_thread  # the fixture: render single-threaded

Render = Callable[[], list[dict[str, torch.Tensor]]]

CASES: dict[str, tuple[Render, list[str]]] = {
    "crops_128_batched": (
        lambda: render_crops(0, [0, 1, 2, 3], 128),
        ["7e15b510c7a734cc", "317ba01a721d9369", "b72dc644bab2ba06", "a9f8b8cab60464a1"],
    ),
    "crops_128_single": (
        lambda: [render_crop(0, 0, 128), render_crop(0, 3, 128)],
        ["7e15b510c7a734cc", "b5d3422c6d957350"],
    ),
    "crops_128_target_mesh": (
        lambda: render_crops(9, [17, 18, 500], 128, "target", "human", "aflw21", 40, True),
        ["c2f42106df600fd4", "9dfc759242a7f174", "47c243b53ce2ef39"],
    ),
    "crops_75_sheep": (
        lambda: render_crops(4, [2, 3], 75, "source", "sheep", "animal5"),
        ["88f0e8c2f11f5592", "dc8411f96b7e46f6"],
    ),
    "scenes_640_batched": (
        lambda: render_scenes(0, [0, 1], 640, 640),
        ["5aadf82b96b85fce", "918854584a1c5e8b"],
    ),
    "scenes_640_single": (lambda: [render_scene(0, 1)], ["fa8f3113ce1a0565"]),
    "scenes_97x131_target": (
        lambda: render_scenes(6, [5, 8], 97, 131, "target", 8, 4.0),
        ["703051ccea46ae22", "c6a35dd790b7e4d7"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.usefixtures("one_thread")
def test_renders_the_bits_of_the_renderer_before_the_speed_ups(name: str) -> None:
    render, expected = CASES[name]
    assert [digest(s) for s in render()] == expected


@pytest.mark.usefixtures("one_thread")
def test_a_sample_rendered_alone_matches_its_batched_render() -> None:
    """Labels are bit-equal; pixels agree to float rounding, not always to the bit (sin/exp kernels
    round the tails of their vector loops differently; both renders are pinned above)."""
    batch = render_crops(0, [0, 1, 2, 3], 128)
    for i in (0, 3):
        alone = render_crop(0, i, 128)
        for key in alone:
            if key == "image":
                torch.testing.assert_close(alone[key], batch[i][key], atol=1e-5, rtol=0)
            else:
                assert torch.equal(alone[key], batch[i][key]), key
    scene = render_scene(0, 1)
    batched = render_scenes(0, [0, 1], 640, 640)[1]
    torch.testing.assert_close(scene["image"], batched["image"], atol=1e-5, rtol=0)
    assert torch.equal(scene["boxes"], batched["boxes"])


@pytest.mark.parametrize("size", [(128, 128), (640, 640), (75, 75), (97, 131), (41, 200)])
@pytest.mark.usefixtures("one_thread")
def test_channels_last_bilinear_gives_the_nchw_bits(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(size))
    for source in [((size[0] + 1) // 2, (size[1] + 1) // 2), (4, 4), (10, 10)]:
        for batch in (1, 5):
            images = torch.rand(batch, 3, *source, generator=g)
            expected = F.interpolate(images, size=size, mode="bilinear")
            assert torch.equal(_bilinear3(images, size), expected), (source, batch)


@pytest.mark.usefixtures("one_thread")
def test_upscale_canvas_is_the_channel_major_upscale() -> None:
    g = torch.Generator().manual_seed(0)
    half, grain = torch.rand(3, 3, 20, 33, generator=g), torch.randn(3, 1, 10, 15, generator=g)
    full = F.interpolate(half, size=(40, 65), mode="bilinear")
    expected = full + 0.06 * F.interpolate(grain, size=(40, 65), mode="bilinear")
    assert torch.equal(upscale(half, grain, 40, 65), expected)
    canvas = upscale_canvas(half, grain, 40, 65)
    assert canvas.shape == (3, 3 * 40, 65)
    assert torch.equal(canvas.view(3, 3, 40, 65).permute(1, 0, 2, 3), expected)


def _flat_tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat_tensors(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for name in value.__dataclass_fields__ for t in _flat_tensors(getattr(value, name))]
    return []


def test_rendering_leaves_the_shared_cache_values_as_computed() -> None:
    """The renderer reads the identity assets and the noise tile without copying them; a render
    (crops of every identity of a small world, with in-place work on its canvas) must not edit them."""
    skin = (0, 1, 2, 3, 4, 5, 6, 7)  # the source domain's skin tones
    shared = [_identity_assets.shared(5, k, "human", skin) for k in range(3)] + [noise_tile.shared()]
    before = [t.clone() for t in _flat_tensors(shared)]
    samples = render_crops(5, list(range(12)), 48, num_identities=3)
    assert {int(s["identity"]) for s in samples} == {0, 1, 2}
    render_crops(5, [0], 48, num_identities=3)
    after = _flat_tensors(shared)
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        assert torch.equal(old, new)


@pytest.mark.parametrize("count", [1, 3])
def test_stacked_assets_share_no_storage_with_the_cache(count: int) -> None:
    items = [_identity_assets.shared(2, k, "human", (0, 1)) for k in range(count)]
    stacked = _tensors_storage(_stack_assets(items))
    cached = _tensors_storage(items)
    assert not stacked & cached


def _tensors_storage(value: object) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in _flat_tensors(value) if t.numel()}


def test_a_render_under_inference_mode_leaves_later_renders_working() -> None:
    """The rasteriser's reusable z-buffer may first be allocated inside a validation loop's inference
    mode (rendering in the main process, ``num_workers=0``); renders outside it must still work and
    give the same pixels. Run in a fresh thread: the buffer is per thread."""
    results: dict[str, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                results["inference"] = render_crop(5, 0, size=64)["image"].clone()
            results["normal"] = render_crop(5, 0, size=64)["image"]
            with torch.inference_mode():  # a larger buffer allocated under inference mode, then reused
                render_crop(5, 1, size=160)
            render_crop(5, 1, size=160)
        except BaseException as exc:  # surfaced in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors, errors
    assert torch.equal(results["inference"], results["normal"])
