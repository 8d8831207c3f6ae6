"""``crop_resize`` (separable weighted row sums) equals the previous roi_align implementation.

The reference below is the previous body of ``facelit.augment.crop.crop_resize`` (roi_align with
adaptive sampling on the image padded by one ``fill`` pixel), kept here to pin the new arithmetic
to it up to float rounding: random boxes inside, across and outside the image, both fills, with
and without anti-aliasing, batched, a 4x anti-aliased downscale, and the gradient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from facelit.augment.crop import crop_resize

TOL = 2e-6  # float32 rounding of sums of <= 2 * grid^2 weighted pixels in [0, 1]


def reference_crop_resize(images, boxes, out_size, fill=0.0, antialias=True):
    """The previous implementation (roi_align, aligned=True, on a one-pixel ``fill`` border)."""
    boxes = boxes.to(torch.float32)
    source = F.pad(images - fill if fill else images, (1, 1, 1, 1))
    index = torch.arange(len(boxes), dtype=boxes.dtype)[:, None]
    rois = torch.cat([index, boxes + 1.0], 1)
    out = roi_align(source.float(), rois, out_size, 1.0, -1 if antialias else 1, aligned=True)
    return (out + fill if fill else out).to(images.dtype)


def random_case(g: torch.Generator, t: int):
    b = int(torch.randint(1, 4, (1,), generator=g))
    h, w = (int(v) for v in torch.randint(5, 70, (2,), generator=g))
    images = torch.rand(b, 3, h, w, generator=g)
    x1 = torch.rand(b, generator=g) * w * 1.4 - 0.2 * w
    y1 = torch.rand(b, generator=g) * h * 1.4 - 0.2 * h
    bw = 0.5 + torch.rand(b, generator=g) * w * 1.5
    bh = 0.5 + torch.rand(b, generator=g) * h * 1.5
    if t % 3 == 0:  # integral square windows, as the detection crops
        x1, y1, bw = x1.round(), y1.round(), bw.round().clamp(min=1.0)
        bh = bw
    boxes = torch.stack([x1, y1, x1 + bw, y1 + bh], 1)
    size = tuple(int(v) for v in torch.randint(1, 50, (2,), generator=g))
    return images, boxes, size


@pytest.mark.parametrize("fill", [0.0, 0.5, -1.0])
@pytest.mark.parametrize("antialias", [True, False])
def test_random_boxes_equal_roi_align(fill: float, antialias: bool) -> None:
    g = torch.Generator().manual_seed(int(fill * 10) + antialias)
    for t in range(40):
        images, boxes, size = random_case(g, t)
        new = crop_resize(images, boxes, size, fill, antialias)
        old = reference_crop_resize(images, boxes, size, fill, antialias)
        assert new.shape == old.shape
        torch.testing.assert_close(new, old, rtol=0, atol=TOL, msg=f"case {t}: boxes {boxes.tolist()}")


def test_downscale_4x_antialias_equal_and_is_box_filter() -> None:
    g = torch.Generator().manual_seed(3)
    image = torch.rand(3, 96, 128, generator=g)
    box = torch.tensor([0.0, 0.0, 128.0, 96.0])
    new = crop_resize(image, box, (24, 32))
    torch.testing.assert_close(
        new, reference_crop_resize(image[None], box[None], (24, 32))[0], rtol=0, atol=TOL
    )
    # 4 samples per axis at offsets 0.5..3.5 px inside each 4x4 footprint: the mean of the 4x4 block
    torch.testing.assert_close(new, F.avg_pool2d(image[None], 4)[0], rtol=0, atol=TOL)


def test_detection_sized_crop_and_fill_outside() -> None:
    g = torch.Generator().manual_seed(4)
    image = torch.rand(3, 150, 200, generator=g)
    boxes = torch.tensor([[20.0, 0.0, 170.0, 150.0], [0.0, 0.0, 200.0, 200.0], [-300.0, 0.0, -100.0, 90.0]])
    for box in boxes:
        new = crop_resize(image, box, 128, fill=0.25)
        old = reference_crop_resize(image[None], box[None], (128, 128), fill=0.25)[0]
        torch.testing.assert_close(new, old, rtol=0, atol=TOL)
    assert torch.equal(crop_resize(image, boxes[2], 8, fill=0.25), torch.full((3, 8, 8), 0.25))


def test_batched_equals_per_image_and_keeps_dtype() -> None:
    g = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 40, 50, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [10.0, 5.0, 60.0, 55.0], [3.0, 3.0, 13.0, 13.0]])
    batched = crop_resize(images, boxes, 32)
    for i in range(3):
        torch.testing.assert_close(batched[i], crop_resize(images[i], boxes[i], 32), rtol=0, atol=TOL)
    assert batched.is_contiguous()
    half = crop_resize(images.half(), boxes, 32)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half, reference_crop_resize(images.half(), boxes, (32, 32)), rtol=0, atol=1e-3)


def test_gradient_equals_roi_align() -> None:
    g = torch.Generator().manual_seed(6)
    images = torch.rand(2, 3, 30, 40, generator=g)
    boxes = torch.tensor([[-5.0, 2.0, 35.0, 42.0], [4.5, 3.25, 21.0, 19.5]])
    weights = torch.rand(2, 3, 12, 12, generator=g)
    grads = []
    for fn in (crop_resize, reference_crop_resize):
        x = images.clone().requires_grad_(True)
        (fn(x, boxes, (12, 12), 0.5) * weights).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=TOL)
