"""RetinaFace nets: backbones and feature_info, FPN variants, context modules, heads, mesh head,
size of mnet0.25, post-processing (detect) and flip/multi-scale test-time augmentation."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from facelit.geometry.anchors import ANCHOR_PRESETS, AnchorSet, generate_anchors
from facelit.geometry.coding import encode_boxes, encode_landmarks
from facelit.geometry.matching import match_anchors
from facelit.geometry.schemes import FIVE_POINT
from facelit.nets import FPN, SSH, ImageNormalize, RetinaFace, create_backbone, detect, detect_multiscale
from facelit.nets.mobilenet import MobileNetV1
from facelit.nets.retinaface import ANCHOR_CACHE_SIZE
from facelit.nets.retinaface_post import box_voting


def _shapes(model: RetinaFace, size: tuple[int, int], batch: int = 2) -> dict:
    out = model(torch.rand(batch, 3, *size))
    a = model.anchors_for(size).boxes.shape[0]
    assert out["cls"].shape == (batch, a, 2)
    assert out["box"].shape == (batch, a, 4)
    assert out["landmarks"].shape == (batch, a, 10)
    return out


def test_mnet025_three_levels_size_and_shapes() -> None:
    torch.manual_seed(0)
    model = RetinaFace()  # mnet0.25, P3-P5, 64 channels, mnet anchors, SSH
    params = sum(p.numel() for p in model.parameters())
    size_mb = params * 4 / 1e6
    print(f"mnet0.25 RetinaFace (3 levels, no mesh head): {params} parameters, {size_mb:.3f} MB fp32")
    assert size_mb < 2.0
    assert model.backbone.feature_info.channels() == [64, 128, 256]
    assert model.backbone.feature_info.reduction() == [8, 16, 32]
    out = _shapes(model, (37, 53))  # odd sizes: ceil feature maps match the anchors
    assert [f.shape[-2:] for f in out["features"]] == [(5, 7), (3, 4), (2, 2)]
    assert model.anchors_for((37, 53)) is model.anchors_for((37, 53))  # cached
    assert model.anchors_for((64, 64)).boxes.shape[0] == ANCHOR_PRESETS["mnet"].num_anchors((64, 64))


def test_mnet025_paper_pyramid_p2_p6() -> None:
    model = RetinaFace(fpn_levels=(2, 3, 4, 5, 6), fpn_channels=64, anchors="paper")
    assert model.backbone.feature_info.reduction() == [4, 8, 16, 32]
    out = _shapes(model, (64, 64), batch=2)
    assert [f.shape[-1] for f in out["features"]] == [16, 8, 4, 2, 1]


@pytest.mark.parametrize(("levels", "anchors"), [((3, 4, 5), "mnet"), ((2, 3, 4, 5, 6), "paper")])
def test_timm_backbone_both_fpn_variants(levels: tuple[int, ...], anchors: str) -> None:
    model = RetinaFace("resnet18", fpn_levels=levels, fpn_channels=32, anchors=anchors)
    expected = {4: 64, 8: 128, 16: 256, 32: 512}
    reductions = model.backbone.feature_info.reduction()
    assert model.backbone.feature_info.channels() == [expected[r] for r in reductions]
    assert [lat[0].in_channels for lat in model.fpn.lateral] == [expected[r] for r in reductions]
    _shapes(model, (64, 96), batch=1)


def test_create_backbone_feature_info_and_errors(tmp_path) -> None:
    mnet = create_backbone("mnet0.25", out_strides=(4, 8, 16, 32))
    assert mnet.feature_info.channels() == [32, 64, 128, 256]
    feats = mnet.eval()(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == mnet.feature_info.channels()
    assert [32 // f.shape[-1] for f in feats] == mnet.feature_info.reduction()
    with pytest.raises(ValueError, match="weights_file"):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_backbone("resnet18", weights_file=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="strides"):
        create_backbone("mnet0.25", out_strides=(64,))
    # a local weights file round-trips into a fresh backbone
    path = tmp_path / "mnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in mnet.state_dict().items()}}, path)
    loaded = create_backbone("mnet0.25", out_strides=(4, 8, 16, 32), weights_file=path)
    reference = mnet.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    # timm: a local classification checkpoint through pretrained_cfg_overlay (no download)
    full = timm.create_model("mobilenetv3_small_050", pretrained=False)
    nn.init.constant_(full.conv_stem.weight, 0.123)
    torch.save(full.state_dict(), tmp_path / "mnv3.pth")
    timm_bb = create_backbone("mobilenetv3_small_050", (8, 16, 32), weights_file=tmp_path / "mnv3.pth")
    assert (timm_bb.body.conv_stem.weight == 0.123).all()
    assert timm_bb.feature_info.reduction() == [8, 16, 32]


def _port_mobilenet_025() -> nn.Module:
    """The MobileNetV1-0.25 of Pytorch_Retinaface (models/net.py), rebuilt here to write a checkpoint
    in its key layout (stage1.*, stage2.*, stage3.*, fc.*)."""

    def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)
        )

    def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.1),
        )

    net = nn.Module()
    net.stage1 = nn.Sequential(
        conv_bn(3, 8, 2),
        conv_dw(8, 16, 1),
        conv_dw(16, 32, 2),
        conv_dw(32, 32, 1),
        conv_dw(32, 64, 2),
        conv_dw(64, 64, 1),
    )
    net.stage2 = nn.Sequential(conv_dw(64, 128, 2), *(conv_dw(128, 128, 1) for _ in range(5)))
    net.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))
    net.fc = nn.Linear(256, 1000)
    return net


def _randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)


def test_port_mobilenet_checkpoint_loads_through_the_key_map(tmp_path) -> None:
    port = _port_mobilenet_025().eval()
    _randomise(port, 0)
    path = tmp_path / "mobilenetV1X0.25_pretrain.tar"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in port.state_dict().items()}}, path)
    ours = create_backbone("mnet0.25", (8, 16, 32), weights_file=path).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        c3 = port.stage1(x)
        c4 = port.stage2(c3)
        c5 = port.stage3(c4)
        for got, want in zip(ours(x), (c3, c4, c5), strict=True):
            torch.testing.assert_close(got, want)
    assert create_backbone("mnet0.25", (8, 16), weights_file=path).feature_info.reduction() == [8, 16]
    del port.stage2[3]
    torch.save(port.state_dict(), path)
    with pytest.raises(ValueError, match="unknown key 'stage2.3.0.weight'|missing"):
        create_backbone("mnet0.25", (8, 16, 32), weights_file=path)


@pytest.mark.parametrize("layout", ["torchvision", "timm_wrapped", "detector_body"])
def test_resnet_checkpoints_load_through_the_key_map(tmp_path, layout: str) -> None:
    """torchvision and timm ResNets share key names (conv1, bn1, layer1..4, fc); wrapped checkpoints
    and a detector's ``body.`` backbone load too, and a checkpoint that lacks weights is refused."""
    import torchvision

    if layout == "torchvision":
        net = torchvision.models.resnet18(weights=None)
        _randomise(net, 1)
        state = net.state_dict()
    else:
        net = timm.create_model("resnet18", pretrained=False)
        _randomise(net, 2)
        inner = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
        state = (
            {"state_dict": {f"module.{k}": v for k, v in inner.items()}}
            if layout == "timm_wrapped"
            else {**{f"body.{k}": v for k, v in inner.items()}, "fpn.output1.0.weight": torch.zeros(1)}
        )
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    bb = create_backbone("resnet18", (8, 16, 32), weights_file=path)
    assert torch.equal(bb.body.layer3[1].conv2.weight, net.layer3[1].conv2.weight)
    assert torch.equal(bb.body.bn1.running_var, net.bn1.running_var)
    partial = {k: v for k, v in net.state_dict().items() if not k.startswith("layer4.")}
    torch.save(partial, path)
    with pytest.raises(ValueError, match="layer4"):
        create_backbone("resnet18", (8, 16, 32), weights_file=path)


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="anchor strides"):
        RetinaFace(fpn_levels=(2, 3, 4, 5, 6), anchors="mnet")
    with pytest.raises(ValueError, match="consecutive"):
        RetinaFace(fpn_levels=(3, 5))
    with pytest.raises(ValueError, match="unknown context"):
        RetinaFace(context="ssh2")


def test_normalisation_inside_and_fpn_ssh_blocks() -> None:
    norm = ImageNormalize()
    mean_image = norm.mean.expand(1, 3, 4, 4)
    assert norm(mean_image).abs().max() < 1e-6
    fpn = FPN([8, 16, 32], 16, num_extra_levels=1)
    outs = fpn([torch.rand(1, 8, 9, 9), torch.rand(1, 16, 5, 5), torch.rand(1, 32, 3, 3)])
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 9, 9), (16, 5, 5), (16, 3, 3), (16, 2, 2)]
    ssh = SSH(16, 16)
    y = ssh(torch.randn(2, 16, 5, 5))
    assert y.shape == (2, 16, 5, 5) and (y >= 0).all()
    with pytest.raises(ValueError, match="divisible by 4"):
        SSH(16, 18)


def test_deformable_and_cascade_variant_runs_and_backprops() -> None:
    model = RetinaFace(fpn_channels=16, deformable=True, cascade=True)
    out = model(torch.rand(2, 3, 32, 32))
    assert {"cls_2", "box_2", "landmarks_2"} <= set(out)
    (out["cls"].sum() + out["box_2"].sum()).backward()
    offset_conv = model.context[0].shared.offset
    assert offset_conv.weight.grad is not None and offset_conv.weight.grad.abs().sum() > 0


def test_mesh_head_is_a_restricted_1x1_conv() -> None:
    torch.manual_seed(0)
    model = RetinaFace(fpn_channels=16, num_mesh_vertices=7).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 48, 32))
    feats = out["features"]
    a = out["cls"].shape[1]
    batch_idx = torch.tensor([0, 1, 1, 0, 1])
    anchor_idx = torch.tensor([0, 47, a - 1, 50, 61])  # levels 0, 0, 2, 1, 2 (48 + 12 + 4 anchors)
    with torch.no_grad():
        mesh = model.mesh_at(feats, batch_idx, anchor_idx)
        dense = []
        for level, f in enumerate(feats):
            w, b = model.mesh_head.as_conv_weight(level)
            y = nn.functional.conv2d(f, w, b)  # (B, n * 3V, h, w): the dense equivalent
            dense.append(y.permute(0, 2, 3, 1).reshape(2, -1, 21))
        dense = torch.cat(dense, dim=1).view(2, a, 7, 3)
    assert mesh.shape == (5, 7, 3)
    torch.testing.assert_close(mesh, dense[batch_idx, anchor_idx], atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="no mesh head"):
        RetinaFace(fpn_channels=16).mesh_at(feats, batch_idx, anchor_idx)


def _perfect_outputs(anchors: AnchorSet, boxes: torch.Tensor, landmarks: torch.Tensor) -> dict:
    """Dense outputs that a perfect network would give for one image with faces ``boxes`` (M, 4)."""
    match = match_anchors(anchors.boxes, boxes[None], torch.ones(1, boxes.shape[0], dtype=torch.bool))
    _, a_idx, f_idx = match.positive_indices()
    n = anchors.boxes.shape[0]
    cls = torch.zeros(1, n, 2)
    cls[..., 0] = 5.0  # background everywhere ...
    cls[0, a_idx] = torch.tensor([0.0, 5.0])  # ... except at positives
    box = torch.zeros(1, n, 4)
    box[0, a_idx] = encode_boxes(boxes[f_idx], anchors.boxes[a_idx])
    lm = torch.zeros(1, n, 10)
    lm[0, a_idx] = encode_landmarks(landmarks[f_idx], anchors.boxes[a_idx]).flatten(1)
    return {"cls": cls, "box": box, "landmarks": lm}


def test_detect_recovers_ground_truth_from_perfect_predictions() -> None:
    cfg = ANCHOR_PRESETS["mnet"]
    anchors = generate_anchors((160, 160), cfg.strides, cfg.sizes)
    boxes = torch.tensor([[10.0, 12.0, 40.0, 50.0], [60.0, 30.0, 140.0, 130.0], [100.0, 5.0, 118.0, 25.0]])
    landmarks = boxes[:, None, :2] + torch.rand(3, 5, 2) * (boxes[:, None, 2:] - boxes[:, None, :2])
    outputs = _perfect_outputs(anchors, boxes, landmarks)
    assert (outputs["cls"][0, :, 1] > 0).sum() > 3  # several anchors per face: NMS must merge them
    (res,) = detect(outputs, anchors)
    assert res["boxes"].shape == (3, 4) and res["landmarks"].shape == (3, 5, 2)
    order = res["boxes"][:, 0].argsort()
    torch.testing.assert_close(res["boxes"][order], boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(res["landmarks"][order], landmarks, atol=1e-3, rtol=0)
    assert (res["scores"] > 0.99).all()
    match = match_anchors(anchors.boxes, boxes[None], torch.ones(1, 3, dtype=torch.bool))
    assert match.positive[0, res["anchor_index"]].all()
    # batched: a second image without faces yields no detection
    two = {
        k: torch.cat((v, _perfect_outputs(anchors, boxes[:0], landmarks[:0])[k])) for k, v in outputs.items()
    }
    res2 = detect(two, anchors, keep_top_k=2)
    assert [len(r["scores"]) for r in res2] == [2, 0]
    with pytest.raises(ValueError, match="anchors"):
        detect(outputs, anchors.boxes[:-1])


def test_detect_cascade_regresses_from_stage_one_boxes() -> None:
    cfg = ANCHOR_PRESETS["mnet"]
    anchors = generate_anchors((96, 96), cfg.strides, cfg.sizes)
    gt = torch.tensor([[20.0, 20.0, 60.0, 64.0]])
    stage1 = gt + torch.tensor([[-3.0, 2.0, 4.0, -1.0]])  # stage 1 is off by a few pixels
    landmarks = torch.rand(1, 5, 2) * 40 + 20
    outputs = _perfect_outputs(anchors, stage1, landmarks)
    pos = outputs["cls"][0, :, 1] > 0
    refined = stage1.expand(int(pos.sum()), 4)
    box_2 = torch.zeros_like(outputs["box"])
    box_2[0, pos] = encode_boxes(gt.expand_as(refined), refined)
    lm_2 = torch.zeros_like(outputs["landmarks"])
    lm_2[0, pos] = encode_landmarks(landmarks.expand(len(refined), 5, 2), refined).flatten(1)
    outputs.update(cls_2=outputs["cls"], box_2=box_2, landmarks_2=lm_2)
    (res,) = detect(outputs, anchors)
    torch.testing.assert_close(res["boxes"], gt, atol=1e-3, rtol=0)
    torch.testing.assert_close(res["landmarks"], landmarks, atol=1e-3, rtol=0)


class _FakeDetector(nn.Module):
    """Stands in for RetinaFace in detect_multiscale: it 'sees' one known face in every pass.

    The face lives in the original (H0, W0) frame; a pass of size (h, w) sees it scaled, and mirrored
    when the bright marker stripe (left quarter of the original image) appears on the right.
    Scores differ per pass so that every pass's detection is identifiable.
    """

    def __init__(self, box: torch.Tensor, landmarks: torch.Tensor, size: tuple[int, int]) -> None:
        super().__init__()
        self.box, self.landmarks, self.size = box, landmarks, size
        self.anchor_config = ANCHOR_PRESETS["mnet"]
        self.calls = 0

    def anchors_for(self, image_size, device=None) -> AnchorSet:
        return generate_anchors(image_size, self.anchor_config.strides, self.anchor_config.sizes, device)

    def forward(self, images: torch.Tensor) -> dict:
        h, w = images.shape[-2:]
        anchors = self.anchors_for((h, w))
        scale = torch.tensor([w / self.size[1], h / self.size[0]])
        outs = []
        for i, image in enumerate(images):
            mirrored = image[0, :, w // 2 :].mean() > image[0, :, : w // 2].mean()
            box = self.box.view(2, 2) * scale
            lm = self.landmarks * scale
            if mirrored:  # what a perfect detector reports on the mirrored image
                box = torch.stack((w - box[1, 0], box[0, 1], w - box[0, 0], box[1, 1])).view(2, 2)
                lm = lm[list(FIVE_POINT.flip_perm)]
                lm = torch.stack((w - lm[:, 0], lm[:, 1]), dim=-1)
            out = _perfect_outputs(anchors, box.view(1, 4), lm[None])
            out["cls"][..., 1] += 0.01 * (self.calls * 2 + i)  # distinct scores per pass
            outs.append(out)
        self.calls += 1
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def test_flip_and_multiscale_tta_map_back_to_the_original_frame() -> None:
    h, w = 96, 128
    image = torch.zeros(3, h, w)
    image[:, :, : w // 4] = 1.0  # asymmetric marker so the fake detector can tell mirrored passes
    box = torch.tensor([30.0, 20.0, 90.0, 84.0])
    # asymmetric five points: left eye, right eye, nose, left / right mouth corner (image sides)
    landmarks = torch.tensor([[45.0, 40.0], [72.0, 44.0], [62.0, 58.0], [50.0, 70.0], [75.0, 68.0]])
    model = _FakeDetector(box, landmarks, (h, w))
    res = detect_multiscale(model, image, scales=(1.0, 0.5), flip=True, nms_threshold=1.0, merge="nms")
    assert sorted(res["source"].unique().tolist()) == [0, 1, 2, 3]  # all four passes kept
    for i in range(len(res["scores"])):
        torch.testing.assert_close(res["boxes"][i], box, atol=1e-3, rtol=0)
        torch.testing.assert_close(res["landmarks"][i], landmarks, atol=1e-3, rtol=0)
    # NMS merges the passes; the best (last, flipped, half-scale) pass wins
    model.calls = 0
    merged = detect_multiscale(model, image, scales=(1.0, 0.5), flip=True, merge="nms")
    assert merged["source"].tolist() == [3]
    torch.testing.assert_close(merged["landmarks"][0], landmarks, atol=1e-3, rtol=0)
    # box voting (the default) also gives one detection here, at the same place, with the best score
    model.calls = 0
    voted = detect_multiscale(model, image, scales=(1.0, 0.5), flip=True)
    assert voted["source"].tolist() == [3] and voted["scores"][0] == merged["scores"][0]
    torch.testing.assert_close(voted["boxes"][0], box, atol=1e-3, rtol=0)
    torch.testing.assert_close(voted["landmarks"][0], landmarks, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="one"):
        detect_multiscale(model, torch.zeros(2, 3, h, w))


def test_mobilenet_rejects_bad_strides() -> None:
    with pytest.raises(ValueError, match="subset"):
        MobileNetV1(out_strides=(8, 12))


def test_box_voting_hand_computed() -> None:
    """Two boxes at IoU 9/11 vote (score-weighted mean, best score); a lone box is kept as is."""
    boxes = torch.tensor([[1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.6, 0.9, 0.5])
    landmarks = torch.stack([torch.full((5, 2), v) for v in (3.0, 1.5, 7.0)])
    out = box_voting(boxes, scores, landmarks, iou_threshold=0.4)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.4, 0.0, 10.4, 10.0], [50.0, 50.0, 60.0, 60.0]]))
    assert out["scores"].tolist() == pytest.approx([0.9, 0.5]) and out["head"].tolist() == [1, 2]
    torch.testing.assert_close(out["landmarks"][:, 0, 0], torch.tensor([(0.9 * 1.5 + 0.6 * 3) / 1.5, 7.0]))
    apart = box_voting(boxes, scores, landmarks, iou_threshold=0.9)  # 0.82 < 0.9: three clusters
    assert apart["head"].tolist() == [1, 0, 2]
    assert box_voting(boxes[:0], scores[:0], landmarks[:0])["boxes"].shape == (0, 4)


def test_anchor_cache_is_lru_bounded() -> None:
    model = RetinaFace(fpn_channels=8)
    sizes = [(32 * (i + 1), 32) for i in range(ANCHOR_CACHE_SIZE + 4)]
    first = model.anchors_for(sizes[0])
    for size in sizes[1:ANCHOR_CACHE_SIZE]:
        model.anchors_for(size)
    assert model.anchors_for(sizes[0]) is first  # a hit, now the most recently used
    for size in sizes[ANCHOR_CACHE_SIZE:]:
        model.anchors_for(size)
    assert len(model._anchor_cache) == ANCHOR_CACHE_SIZE
    assert model.anchors_for(sizes[0]) is first  # kept: recently used
    assert (sizes[1][0], sizes[1][1], torch.device("cpu"), torch.float32) not in model._anchor_cache
