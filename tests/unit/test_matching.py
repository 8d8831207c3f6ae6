"""Box helpers and anchor matching: thresholds, best-anchor rule, ignore/padding, chunking, crowds."""

from __future__ import annotations

import pytest
import torch

from facelit.geometry.anchors import ANCHOR_PRESETS, generate_anchors
from facelit.geometry.boxes import box_area, box_iou, check_boxes, clip_boxes, degenerate_boxes
from facelit.geometry.matching import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    CASCADE_THRESHOLDS,
    LOW_QUALITY_MIN_IOU,
    match_anchors,
)


def _shifted(dx: float) -> list[float]:
    return [dx, 0.0, 10.0 + dx, 10.0]


def _iou_for_shift(dx: float) -> float:
    return (10 - dx) / (10 + dx)


# shifts giving IoU 1.0, 0.6, 0.4, 0.2 with the box [0, 0, 10, 10]
SHIFTS = [0.0, 2.5, 30 / 7, 20 / 3]


def test_box_helpers() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 9.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert box_area(a).tolist() == [100.0, 0.0]
    assert box_iou(a, b)[:, 0].tolist() == pytest.approx([50 / 150, 0.0])
    assert box_iou(a[None], b[None]).shape == (1, 2, 1)
    assert degenerate_boxes(a).tolist() == [False, True]
    assert clip_boxes(torch.tensor([[-3.0, 2.0, 12.0, 30.0]]), (20, 10)).tolist() == [[0.0, 2.0, 10.0, 20.0]]
    with pytest.raises(ValueError, match=r"boxes\[1\] is degenerate.*\[5.0, 5.0, 5.0, 9.0\]"):
        check_boxes(a)
    check_boxes(a, mask=torch.tensor([True, False]))  # masked out: fine


def test_thresholds_and_sentinels() -> None:
    anchors = torch.tensor([_shifted(dx) for dx in SHIFTS])
    assert box_iou(torch.tensor([_shifted(0)]), anchors)[0].tolist() == pytest.approx([1.0, 0.6, 0.4, 0.2])
    gt = torch.tensor([[_shifted(0.0)]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    res = match_anchors(anchors, gt, valid, low_quality_min_iou=0)
    assert res.matches[0].tolist() == [0, 0, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD]
    assert res.positive[0].tolist() == [True, True, False, False]
    assert res.ignored[0].tolist() == [False, False, True, False]
    assert res.negative[0].tolist() == [False, False, False, True]
    assert res.iou[0].tolist() == pytest.approx([1.0, 0.6, 0.4, 0.2])
    res = match_anchors(anchors, gt, valid, pos_threshold=0.35, neg_threshold=0.25, low_quality_min_iou=0)
    assert res.matches[0].tolist() == [0, 0, 0, BELOW_LOW_THRESHOLD]
    with pytest.raises(ValueError, match="neg_threshold"):
        match_anchors(anchors, gt, valid, pos_threshold=0.3, neg_threshold=0.5)


def test_every_face_keeps_its_best_anchor() -> None:
    # face 0 overlaps its best anchor only at IoU 0.4; face 1's best anchor is anchor 1 (IoU 1)
    anchors = torch.tensor([_shifted(30 / 7), [100.0, 0.0, 110.0, 10.0], [300.0, 0.0, 310.0, 10.0]])
    gt = torch.tensor([[_shifted(0.0), [100.0, 0.0, 110.0, 10.0]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    assert match_anchors(anchors, gt, valid, low_quality_min_iou=0).matches[0].tolist() == [-2, 1, -1]
    assert match_anchors(anchors, gt, valid).matches[0].tolist() == [0, 1, -1]


def test_best_anchor_goes_to_its_face_not_to_a_neighbour() -> None:
    """Anchor 0 is face 0's best (IoU 0.4) but overlaps face 1 more (0.6); face 1 owns anchor 1 (1.0).
    torchvision would hand anchor 0 to face 1, leaving face 0 without an anchor."""
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.5, 0.0, 12.5, 10.0]])
    gt = torch.tensor([[[-30 / 7, 0.0, 10 - 30 / 7, 10.0], [2.5, 0.0, 12.5, 10.0]]])
    iou = box_iou(gt[0], anchors)
    assert iou[0, 0] == pytest.approx(0.4) and iou[0, 1] < 0.4  # anchor 0 is face 0's best
    assert iou[1].tolist() == pytest.approx([0.6, 1.0])
    res = match_anchors(anchors, gt, torch.ones(1, 2, dtype=torch.bool))
    assert res.matches[0].tolist() == [0, 1]


def test_ignore_and_padding() -> None:
    anchors = torch.tensor([_shifted(0.0), _shifted(2.5), [50.0, 50.0, 60.0, 60.0], [80.0, 0.0, 90.0, 10.0]])
    gt = torch.tensor(
        [
            [
                _shifted(0.0),
                [50.0, 50.0, 60.0, 60.0],
                [0.0, 0.0, 0.0, 0.0],
            ],  # last: padding (degenerate zeros)
            [[80.0, 0.0, 90.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    valid = torch.tensor([[True, True, False], [True, False, False]])
    ignore = torch.tensor([[True, False, False], [False, False, False]])
    res = match_anchors(anchors, gt, valid, ignore)
    # image 0: face 0 is ignored (its anchors too, even its best one); face 1 matches anchor 2
    assert res.matches[0].tolist() == [BETWEEN_THRESHOLDS, BETWEEN_THRESHOLDS, 1, BELOW_LOW_THRESHOLD]
    # image 1: the padded face overlapping anchors 0/1 never matches
    assert res.matches[1].tolist() == [BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD, 0]
    empty = match_anchors(anchors, gt, torch.zeros(2, 3, dtype=torch.bool))
    assert (empty.matches == BELOW_LOW_THRESHOLD).all() and (empty.iou == 0).all()
    bad = gt.clone()
    bad[1, 0] = torch.tensor([5.0, 5.0, 3.0, 9.0])
    with pytest.raises(ValueError, match=r"boxes\[1, 0\] is degenerate"):
        match_anchors(anchors, bad, valid)


def _random_faces(b: int, m: int, size: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, m, 2, generator=g) * (size - 40)
    wh = torch.rand(b, m, 2, generator=g) * 60 + 4
    boxes = torch.cat((xy, xy + wh), dim=-1)
    valid = torch.rand(b, m, generator=g) > 0.2
    ignore = torch.rand(b, m, generator=g) > 0.9
    return boxes, valid, ignore


def test_chunked_equals_unchunked() -> None:
    cfg = ANCHOR_PRESETS["paper"]
    anchors = generate_anchors((96, 128), cfg.strides, cfg.sizes).boxes
    boxes, valid, ignore = _random_faces(3, 37, 96, 0)
    ref = match_anchors(anchors, boxes, valid, ignore, chunk_size=37)
    assert ref.positive.any() and ref.ignored.any() and ref.negative.any()
    for chunk in (1, 5, 16):
        res = match_anchors(anchors, boxes, valid, ignore, chunk_size=chunk)
        assert torch.equal(res.matches, ref.matches)
        assert torch.equal(res.iou, ref.iou)
    per_image = match_anchors(anchors[None].expand(3, -1, -1), boxes, valid, ignore)  # (B, A, 4) anchors
    assert torch.equal(per_image.matches, ref.matches)


def _mnet_anchors(size: int) -> torch.Tensor:
    cfg = ANCHOR_PRESETS["mnet"]
    return generate_anchors((size, size), cfg.strides, cfg.sizes).boxes


def test_overlapping_faces_both_keep_an_anchor_on_mnet_anchors() -> None:
    """(10,10,26,26) and (11,11,27,27) share their best anchor (12,12,28,28), which goes to the second
    (IoU 0.78 vs 0.62); the first takes its best remaining anchor (rule 5)."""
    anchors = _mnet_anchors(64)
    gt = torch.tensor([[[10.0, 10.0, 26.0, 26.0], [11.0, 11.0, 27.0, 27.0]]])
    res = match_anchors(anchors, gt, torch.ones(1, 2, dtype=torch.bool))
    faces = res.matches[res.positive]
    assert (faces == 0).sum() >= 1 and (faces == 1).sum() >= 1
    assert anchors[res.matches[0] == 1].tolist() == [[12.0, 12.0, 28.0, 28.0]]
    first = anchors[res.matches[0] == 0]
    assert box_iou(gt[0, :1], first).min() >= LOW_QUALITY_MIN_IOU
    # with forcing disabled (the authors' release) nothing is forced: neither face reaches IoU 0.5 on
    # another anchor, only face 1 keeps its best anchor by the threshold rule
    off = match_anchors(anchors, gt, torch.ones(1, 2, dtype=torch.bool), low_quality_min_iou=0)
    assert off.matches[off.positive].tolist() == [1]


def test_low_quality_floor() -> None:
    """A 3 px face overlaps its four best 16 px anchors at IoU 9/256 = 0.035: nothing is forced."""
    anchors = _mnet_anchors(64)
    gt = torch.tensor([[[6.5, 6.5, 9.5, 9.5]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    assert box_iou(gt[0], anchors).max() == pytest.approx(9 / 256)
    assert not match_anchors(anchors, gt, valid).positive.any()
    assert match_anchors(anchors, gt, valid, low_quality_min_iou=0.03).positive.sum() == 4
    assert not match_anchors(anchors, gt, valid, low_quality_min_iou=0).positive.any()
    with pytest.raises(ValueError, match="low_quality_min_iou"):
        match_anchors(anchors, gt, valid, low_quality_min_iou=1.5)


def test_cascade_thresholds_are_the_papers() -> None:
    assert CASCADE_THRESHOLDS == ((0.7, 0.3), (0.5, 0.4))


def test_crowded_image_every_face_keeps_an_anchor() -> None:
    """A crowd that builds the hard case: 300 pairs of 16-19 px faces, the second of each pair shifted
    by about one pixel, on the mnet anchors of a 320x320 image. In most pairs both faces share one
    best anchor, which only one of them can own; every face must still keep an anchor."""
    anchors = _mnet_anchors(320)
    g = torch.Generator().manual_seed(0)
    cells = torch.randperm(40 * 40, generator=g)[:300]
    centre = torch.stack(((cells % 40 + 0.5) * 8, (cells // 40 + 0.5) * 8), dim=-1)
    centre = centre + (torch.rand(300, 2, generator=g) - 0.5) * 4
    half = (torch.rand(300, 1, generator=g) * 3 + 16) / 2
    first = torch.cat((centre - half, centre + half), dim=-1)
    second = first + (0.5 + torch.rand(300, 1, generator=g))
    boxes = torch.cat((first, second))[None]  # (1, 600, 4)
    valid = torch.ones(1, 600, dtype=torch.bool)
    iou = box_iou(boxes[0], anchors)  # (600, A)
    best_anchor = iou.argmax(dim=1)
    owner = iou[:, best_anchor].argmax(dim=0)  # face with the largest IoU at each face's best anchor
    robbed = (owner != torch.arange(600)).sum()
    assert robbed >= 100  # the case arises: a neighbour takes these faces' best anchor
    res = match_anchors(anchors, boxes, valid)
    assert res.matches[res.positive].unique().numel() == 600  # every face keeps an anchor
    assert torch.equal(match_anchors(anchors, boxes, valid, chunk_size=70).matches, res.matches)
