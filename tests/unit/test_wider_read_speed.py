"""``load_rgb`` (torchvision's libjpeg-turbo for RGB and grey JPEGs) returns PIL's pixels.

The reference is the previous reader: ``PIL.Image.open(path).convert("RGB")`` as float in [0, 1],
(3, H, W). JPEGs of the kinds WIDER FACE holds (4:2:0 and 4:4:4 chroma, progressive, greyscale,
odd sizes) must be bit-identical; other formats and JPEG modes (CMYK, PNG) go through PIL. The
result is planar (contiguous (3, H, W)), which the crop's row sums read without a transpose.
``WiderFaceDataset`` reads its images with ``load_rgb``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelit.datasets.crops import load_rgb
from facelit.datasets.wider_face import WiderFaceDataset


def pil_reference(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        array = np.array(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def noisy(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    """A smooth gradient plus noise (JPEG artefacts everywhere), ``size`` = (W, H)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


CASES = {
    "rgb_420_q90.jpg": ("RGB", {"quality": 90}),
    "rgb_444_q95.jpg": ("RGB", {"quality": 95, "subsampling": 0}),
    "rgb_422_q75.jpg": ("RGB", {"quality": 75, "subsampling": 1}),
    "rgb_progressive.jpg": ("RGB", {"quality": 85, "progressive": True}),
    "grey.jpg": ("L", {"quality": 90}),
    "cmyk.jpg": ("CMYK", {"quality": 90}),
    "rgb.png": ("RGB", {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("size", [(97, 61), (320, 240)])
def test_load_rgb_equals_pil(tmp_path: Path, name: str, size: tuple[int, int]) -> None:
    mode, options = CASES[name]
    path = tmp_path / name
    noisy(size, mode, seed=len(name) + size[0]).save(path, **options)
    image = load_rgb(path)
    assert image.dtype == torch.float32 and image.shape == (3, size[1], size[0]) and image.is_contiguous()
    assert torch.equal(image, pil_reference(path))


def test_truncated_jpeg_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "truncated.jpg"
    noisy((64, 48), "RGB", 1).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:300])  # a valid header, the scan cut short
    with pytest.raises(ValueError, match="truncated.jpg"):
        load_rgb(path)


def test_wider_dataset_reads_pil_pixels(tmp_path: Path) -> None:
    rel = "0--Parade/0_Parade_a_1.jpg"
    image_path = tmp_path / "WIDER_train" / "images" / rel
    image_path.parent.mkdir(parents=True)
    noisy((130, 90), "RGB", 0).save(image_path, quality=90)
    (tmp_path / "wider_face_split").mkdir()
    (tmp_path / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text(
        f"{rel}\n1\n10 20 30 40 0 0 0 0 0 0 \n"
    )
    sample = WiderFaceDataset(tmp_path, "train")[0]
    assert torch.equal(sample["image"], pil_reference(image_path))
    assert sample["meta"]["orig_size"] == (90, 130)
