"""The RetinaFace speed-ups give the outputs of the code they replaced.

- Inference folds BatchNorm into the convolutions and runs channels_last (``facelit.nets.fused``):
  dense outputs equal the plain conv-BN-act path up to float rounding; training and autograd
  paths are the plain path, bit for bit; the folded weights follow weight updates.
- Post-processing decodes only the surviving candidates and stops NMS at ``keep_top_k``
  (``nms_topk``): detections equal those of the previous implementation, kept below as reference.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import batched_nms, nms

from facelit.geometry.coding import decode_boxes, decode_landmarks
from facelit.nets.fused import ConvBNAct, fold_conv_bn
from facelit.nets.mobilenet import conv_bn_act
from facelit.nets.retinaface import RetinaFace, decode_outputs, detect
from facelit.nets.retinaface_post import _float32_below, nms_topk


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters (fresh BatchNorm folds to identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)


def _plain(module: nn.Module) -> nn.Module:
    """The same module run as before the change: every ConvBNAct as nn.Sequential, NCHW maps."""
    for m in module.modules():
        if isinstance(m, ConvBNAct):
            m.__class__ = nn.Sequential
    if isinstance(module, RetinaFace):
        module.channels_last_inference = False
    return module


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "groups", "slope"),
    [(3, 8, 3, 2, 1, 0.1), (8, 8, 3, 1, 8, 0.1), (8, 16, 1, 1, 1, 0.0), (16, 8, 3, 1, 1, None)],
)
def test_folded_conv_bn_equals_plain(cin, cout, kernel, stride, groups, slope) -> None:
    torch.manual_seed(0)
    block = conv_bn_act(cin, cout, kernel, stride, groups, slope)
    _randomise_bn(block)
    block.eval()
    x = torch.randn(2, cin, 13, 17)
    with torch.inference_mode():
        folded = block(x)
    with torch.enable_grad():
        plain = block(x).detach()
    assert folded.shape == plain.shape
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
    weight, bias = fold_conv_bn(block[0], block[1])
    assert weight.is_contiguous(memory_format=torch.channels_last) and bias.shape == (cout,)


def test_pointwise_block_on_channels_last_maps_is_a_gemm_equal_to_conv() -> None:
    torch.manual_seed(0)
    block = conv_bn_act(16, 24, 1, slope=0.1)
    _randomise_bn(block)
    block.eval()
    x = torch.randn(2, 16, 11, 13).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = block(x)
    with torch.enable_grad():
        plain = block(x.contiguous()).detach()
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_training_path_is_the_plain_sequential_bit_for_bit() -> None:
    torch.manual_seed(0)
    block = conv_bn_act(4, 8, 3, slope=0.1)
    reference = nn.Sequential(*block)  # same modules
    x = torch.randn(2, 4, 9, 9)
    assert torch.equal(block(x), reference(x))  # train mode: batch statistics
    block.eval()
    with torch.enable_grad():  # eval with autograd (e.g. input gradients) keeps the plain path
        assert torch.equal(block(x), reference(x))
    assert list(block.state_dict()) == ["0.weight", "1.weight", "1.bias", "1.running_mean",
                                        "1.running_var", "1.num_batches_tracked"]  # fmt: skip


def test_folded_weights_follow_updates() -> None:
    torch.manual_seed(0)
    block = conv_bn_act(4, 8, 3, slope=0.1).eval()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        before = block(x)
        block[0].weight.mul_(2.0)  # an in-place update (optimizer step) bumps the version
        after = block(x)
        block.load_state_dict({k: v.clone() for k, v in block.state_dict().items()})
        reloaded = block(x)
    with torch.enable_grad():
        plain = block(x).detach()
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reloaded, plain, rtol=1e-5, atol=1e-5)


def test_retinaface_inference_equals_plain_path() -> None:
    torch.manual_seed(0)
    fast = RetinaFace(num_mesh_vertices=8).eval()
    _randomise_bn(fast, seed=1)
    plain = _plain(RetinaFace(num_mesh_vertices=8).eval())
    plain.load_state_dict(fast.state_dict())
    x = torch.rand(2, 3, 75, 97)  # odd sizes: ceil-mode maps and size-matched upsampling
    with torch.inference_mode():
        a, b = fast(x), plain(x)
        batch_idx, anchor_idx = torch.tensor([0, 1, 1]), torch.tensor([0, 17, a["cls"].shape[1] - 1])
        mesh_a = fast.mesh_at(a["features"], batch_idx, anchor_idx)
        mesh_b = plain.mesh_at(b["features"], batch_idx, anchor_idx)
    assert a["features"][0].is_contiguous(memory_format=torch.channels_last)
    for key in ("cls", "box", "landmarks"):
        assert a[key].is_contiguous()
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mesh_a, mesh_b, rtol=1e-4, atol=1e-5)
    with torch.enable_grad():  # with autograd the fast model is the plain model, bit for bit
        c, d = fast(x), plain(x)
    assert torch.equal(c["cls"], d["cls"]) and torch.equal(c["landmarks"], d["landmarks"])


# ---- post-processing --------------------------------------------------------------------------
def _reference_detect(outputs, anchors, score_threshold, nms_threshold, top_k, keep_top_k):
    """The previous ``detect``: decode every anchor, top-k, threshold, batched NMS, cap per image."""
    scores, boxes, landmarks = decode_outputs(outputs, anchors)
    top_scores, top_idx = scores.topk(min(top_k, scores.shape[1]), dim=1)
    keep = top_scores > score_threshold
    image = torch.arange(scores.shape[0])[:, None].expand_as(top_idx)[keep]
    anchor = top_idx[keep]
    b, s, lm = boxes[image, anchor], scores[image, anchor], landmarks[image, anchor]
    kept = batched_nms(b, s, image, nms_threshold)
    out = []
    for i in range(scores.shape[0]):
        k = kept[image[kept] == i][:keep_top_k]
        out.append({"boxes": b[k], "scores": s[k], "landmarks": lm[k], "anchor_index": anchor[k]})
    return out


def _dense_outputs(num_images: int, size: tuple[int, int], seed: int) -> tuple[dict, torch.Tensor]:
    """Random dense outputs with a weak, dense score map (most anchors above 0.02)."""
    gen = torch.Generator().manual_seed(seed)
    model = RetinaFace()
    anchors = model.anchors_for(size, torch.device("cpu")).boxes
    a = anchors.shape[0]
    outputs = {
        "cls": torch.randn(num_images, a, 2, generator=gen) - torch.tensor([1.5, 0.0]),
        "box": 0.5 * torch.randn(num_images, a, 4, generator=gen),
        "landmarks": torch.randn(num_images, a, 10, generator=gen),
    }
    return outputs, anchors


def _by_score(det: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Order detections by (score desc, anchor) so that ties compare independent of sort stability."""
    key = det["anchor_index"].double() / 1e6 - det["scores"].double()
    order = key.argsort()
    return {k: v[order] for k, v in det.items()}


@pytest.mark.parametrize(("num_images", "keep_top_k"), [(1, 750), (2, 40), (3, 5000)])
def test_detect_equals_previous_implementation(num_images: int, keep_top_k: int) -> None:
    outputs, anchors = _dense_outputs(num_images, (160, 224), seed=num_images)
    args = (0.02, 0.4, 5000, keep_top_k)
    new = detect(outputs, anchors, *args)
    ref = _reference_detect(outputs, anchors, *args)
    assert len(new) == num_images
    for got, want in zip(new, ref, strict=True):
        assert got["boxes"].shape[0] == min(keep_top_k, want["boxes"].shape[0]) > 0
        assert (got["scores"][:-1] >= got["scores"][1:]).all()
        got, want = _by_score(got), _by_score(want)
        for key in ("boxes", "scores", "landmarks", "anchor_index"):
            assert torch.equal(got[key], want[key]), key


def test_decode_at_candidates_equals_decode_everything() -> None:
    outputs, anchors = _dense_outputs(1, (64, 96), seed=5)
    _, boxes, landmarks = decode_outputs(outputs, anchors)
    det = detect(outputs, anchors, score_threshold=0.5, keep_top_k=10**6, nms_threshold=1.0)[0]
    idx = det["anchor_index"]
    assert torch.equal(det["boxes"], boxes[0, idx]) and torch.equal(det["landmarks"], landmarks[0, idx])
    # hand check of one anchor: box centre moves by 0.1 * delta * anchor size
    a = anchors[idx[0]]
    expected = decode_boxes(outputs["box"][0, idx[0]], a)
    assert torch.equal(det["boxes"][0], expected)
    assert torch.equal(det["landmarks"][0], decode_landmarks(outputs["landmarks"][0, idx[0]].view(5, 2), a))


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_nms_topk_equals_torchvision_prefix(chunk: int) -> None:
    gen = torch.Generator().manual_seed(chunk)
    xy = torch.rand(600, 2, generator=gen) * 100
    boxes = torch.cat((xy, xy + 5 + 20 * torch.rand(600, 2, generator=gen)), 1)
    scores = torch.rand(600, generator=gen)
    full = nms(boxes, scores, 0.4)
    assert 40 < full.numel() < 600
    for max_keep in (1, 40, full.numel(), 10**6):
        assert torch.equal(nms_topk(boxes, scores, 0.4, max_keep, chunk), full[:max_keep])
    assert nms_topk(boxes[:0], scores[:0], 0.4, 10).numel() == 0


def test_nms_topk_threshold_is_strict_like_torchvision() -> None:
    # IoU exactly 0.5 (float32 and float64 alike): not suppressed at 0.5, suppressed below it
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0], [10.0, 10.0, 11.0, 11.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    for thr in (0.5, 0.49):
        for chunk in (1, 3):
            assert torch.equal(nms_topk(boxes, scores, thr, 10, chunk), nms(boxes, scores, thr))
    assert nms_topk(boxes, scores, 0.5, 10, 1).tolist() == [0, 1, 2]
    assert nms_topk(boxes, scores, 0.49, 10, 1).tolist() == [0, 2]


@pytest.mark.parametrize("threshold", [0.4, 0.5, 0.3, 0.7])
def test_float32_comparison_matches_the_double_threshold(threshold: float) -> None:
    t = torch.tensor(threshold, dtype=torch.float32)
    near = torch.stack([torch.nextafter(t, torch.tensor(-1.0)), t, torch.nextafter(t, torch.tensor(2.0))])
    assert ((near.double() > threshold) == (near > _float32_below(threshold))).all()
