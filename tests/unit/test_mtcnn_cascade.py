"""MTCNN nets, released weights and the batched cascade: equality with facenet-pytorch's outputs
recorded once (tests/data/mtcnn/reference.json, scripts/record_mtcnn_reference.py), exact pieces
(area crops, Min-NMS, P-Net mosaic), bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facelit.datasets.crops import load_rgb
from facelit.nets.mtcnn import (
    PACKAGE_WEIGHTS_DIR,
    ONet,
    PNet,
    RNet,
    load_pretrained,
    load_stage,
    pretrained_cascade_nets,
)
from facelit.nets.mtcnn_cascade import (
    CascadeSettings,
    area_crops,
    detect_faces,
    get_preset,
    integral_image,
    min_overlap_nms,
    pyramid_scales,
    run_pnet,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
REFERENCE = REPO / "tests" / "data" / "mtcnn"
ASTRONAUT = SHARED / "images" / "astronaut.png"


@pytest.fixture(scope="module")
def nets():
    torch.set_num_threads(1)
    return pretrained_cascade_nets()


def _reference_cases():
    return json.loads((REFERENCE / "reference.json").read_text())["cases"]


def _image(name: str) -> torch.Tensor:
    path = ASTRONAUT if name == "astronaut" else REFERENCE / "scene.png"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return load_rgb(path)


# ---- weights -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage,cls", [("pnet", PNet), ("rnet", RNet), ("onet", ONet)])
def test_released_weights_load_exactly(stage, cls):
    net = load_pretrained(cls(), stage)
    state = torch.load(PACKAGE_WEIGHTS_DIR / f"{stage}.pt", weights_only=True)
    ours = net.state_dict()
    assert set(state) == set(ours)
    for key, value in state.items():
        assert torch.equal(ours[key], value), key


def test_shipped_weights_equal_the_shared_copy():
    if not (SHARED / "mtcnn").is_dir():
        pytest.skip("../shared/data/mtcnn not present")
    for stage in ("pnet", "rnet", "onet"):
        assert (PACKAGE_WEIGHTS_DIR / f"{stage}.pt").read_bytes() == (
            SHARED / "mtcnn" / f"{stage}.pt"
        ).read_bytes()


def test_missing_weights_name_the_path_and_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pnet\.pt.*facenet_pytorch/data"):
        load_pretrained(PNet(), "pnet", tmp_path)


def test_wrong_stage_file_is_refused(tmp_path):
    (tmp_path / "rnet.pt").write_bytes((PACKAGE_WEIGHTS_DIR / "onet.pt").read_bytes())
    with pytest.raises(ValueError, match="does not fit RNet"):
        load_pretrained(RNet(), "rnet", tmp_path)


def test_optional_landmark_heads_and_output_shapes():
    p = load_pretrained(PNet(landmarks=True), "pnet")
    out = p(torch.rand(2, 3, 31, 40))
    # ceil((H - 2) / 2) - 4 cells: 31 -> 11, 40 -> 15
    assert out["logits"].shape == (2, 2, 11, 15) and out["landmarks"].shape == (2, 10, 11, 15)
    assert RNet(landmarks=True)(torch.rand(3, 3, 24, 24))["landmarks"].shape == (3, 10)
    assert ONet()(torch.rand(3, 3, 48, 48))["landmarks"].shape == (3, 10)


def test_load_stage_refuses_a_checkpoint_of_another_stage(tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in PNet().state_dict().items()},
            "hyper_parameters": {"stage": "pnet"},
        },
        path,
    )
    assert isinstance(load_stage(path, "pnet"), PNet)
    with pytest.raises(ValueError, match="holds an MTCNN pnet net"):
        load_stage(path, "rnet")
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_stage(tmp_path / "missing.ckpt", "pnet")


# ---- exact pieces -----------------------------------------------------------------------------------
def test_pyramid_scales_follow_the_release():
    # 12 / 20 = 0.6, times 0.709 while min side * scale >= 12: 100 px -> 0.6, 0.4254, 0.3016, 0.2138, 0.1516
    scales = pyramid_scales(100, 150, 20, 0.709)
    assert len(scales) == 5 and scales[0] == 0.6 and abs(scales[-1] - 0.6 * 0.709**4) < 1e-12
    assert pyramid_scales(20, 500, 20, 0.709) == [0.6] and pyramid_scales(19, 500, 20, 0.709) == []


def test_area_crops_equal_interpolate_area():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 40, 50, generator=g)
    table = integral_image(images)
    boxes = [(0, 3, 5, 30, 31), (1, 0, 0, 50, 40), (1, 17, 9, 20, 12), (0, 1, 2, 48, 7)]
    idx, x0, y0, x1, y1 = (torch.tensor(c) for c in zip(*boxes, strict=False))
    crops = area_crops(table, idx, x0, y0, x1, y1, 24)
    for k, (b, a0, b0, a1, b1) in enumerate(boxes):
        expected = F.interpolate(images[b : b + 1, :, b0:b1, a0:a1], size=(24, 24), mode="area")[0]
        assert torch.allclose(crops[k], expected, atol=1e-6)


def _greedy_min_nms(boxes, scores, threshold):
    """The release's loop (areas and intersections with +1), one group."""
    order = scores.argsort(descending=True).tolist()
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            w = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + 1)
            h = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + 1)
            area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
            if w * h / min(area(boxes[i]), area(boxes[j])) <= threshold:
                rest.append(j)
        order = rest
    return keep


def test_min_overlap_nms_equals_the_greedy_loop():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(60, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + 10 + torch.rand(60, 2, generator=g) * 30], 1)
    scores = torch.rand(60, generator=g)
    groups = torch.zeros(60, dtype=torch.long)
    keep = min_overlap_nms(boxes, scores, groups, 0.7).tolist()
    assert keep == _greedy_min_nms(boxes, scores, 0.7)
    # two groups never suppress each other
    both = min_overlap_nms(
        torch.cat([boxes, boxes]), torch.cat([scores, scores]), torch.cat([groups, groups + 1]), 0.7
    )
    assert len(both) == 2 * len(keep)


def test_packed_pnet_equals_one_call_per_level(nets):
    images = [torch.rand(3, 61, 83), torch.rand(3, 40, 40), torch.rand(3, 97, 52)]
    base = CascadeSettings(min_face=12, thresholds=(0.3, 0.7, 0.7))
    rows_a, img_a, _ = run_pnet(nets[0], images, base)
    rows_b, img_b, _ = run_pnet(
        nets[0], images, dataclasses.replace(base, pack_levels=True, page_pixels=3000)
    )
    assert len(rows_a) == len(rows_b) > 10
    key = lambda r, i: i.double() * 1e6 + r[:, 0].double() * 1e3 + r[:, 1].double() + r[:, 2].double() * 1e-3
    oa, ob = key(rows_a, img_a).argsort(), key(rows_b, img_b).argsort()
    assert torch.equal(img_a[oa], img_b[ob])
    assert torch.allclose(rows_a[oa], rows_b[ob], atol=1e-4)


# ---- the cascade ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _reference_cases(), ids=lambda c: f"{c['image']}-{c['preset']}")
@pytest.mark.parametrize("pack", [False, True], ids=["grouped", "packed"])
def test_cascade_equals_facenet_pytorch(nets, case, pack):
    image = _image(case["image"])
    settings = dataclasses.replace(get_preset(case["preset"]), pack_levels=pack)
    det = detect_faces(image[None], *nets, settings=settings)[0]
    boxes = torch.tensor(case["boxes"]).reshape(-1, 4)
    assert det["boxes"].shape == boxes.shape, (len(det["boxes"]), len(boxes))
    assert (det["boxes"] - boxes).abs().max() <= 1.0
    assert (det["scores"] - torch.tensor(case["scores"])).abs().max() <= 1e-3
    assert (det["landmarks"] - torch.tensor(case["landmarks"]).reshape(-1, 5, 2)).abs().max() <= 1.0


def test_astronaut_face_and_landmarks(nets):
    det = detect_faces(_image("astronaut"), *nets)[0]
    assert len(det["boxes"]) == 1 and det["scores"][0] > 0.99
    x1, y1, x2, y2 = det["boxes"][0].tolist()
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = det["landmarks"][0].tolist()
    assert x1 < lex < nx < rex < x2 and x1 < lmx < nx < rmx < x2  # image-left eye and mouth corner first
    assert y1 < max(ley, rey) < ny < min(lmy, rmy) < y2  # eyes above the nose above the mouth


def test_batch_of_different_sizes_equals_one_by_one(nets):
    scene = _image("scene")
    images = [scene, _image("astronaut"), scene[:, :100, :150], torch.rand(3, 11, 300)]
    batched = detect_faces(images, *nets)
    for img, det in zip(images, batched, strict=False):
        alone = detect_faces(img[None], *nets)[0]
        assert torch.allclose(det["boxes"], alone["boxes"], atol=1e-3)
        assert torch.allclose(det["landmarks"], alone["landmarks"], atol=1e-3)
    assert len(batched[3]["boxes"]) == 0  # smaller than 12 px: no detection, no error


def test_stages_report_shrinking_candidates_and_bounded_chunks(nets):
    scene = _image("scene")
    small_chunks = dataclasses.replace(get_preset("wider"), chunk=7)
    final, stages = detect_faces(scene[None], *nets, settings=small_chunks, return_stages=True)
    reference = detect_faces(scene[None], *nets, settings=get_preset("wider"))
    assert torch.allclose(final[0]["boxes"], reference[0]["boxes"], atol=1e-4)
    counts = [len(stages[s][0]["boxes"]) for s in ("pnet", "rnet", "onet")]
    assert counts[0] > counts[1] > counts[2] == len(final[0]["boxes"]) > 0


def test_bad_image_shapes_are_refused(nets):
    with pytest.raises(ValueError, match=r"expected \(3, H, W\)"):
        detect_faces([torch.rand(4, 30, 30)], *nets)
    with pytest.raises(ValueError, match="O-Net needs R-Net"):
        detect_faces(torch.rand(1, 3, 30, 30), nets[0], None, nets[2])
