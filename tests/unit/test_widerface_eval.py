"""Tests of the official WIDER FACE evaluation (facelit.metrics.widerface).

``reference_wider_ap`` below is a straightforward per-prediction loop written from the official
protocol (the MATLAB eval_tools and its Python port), independent of the vectorised core; the
benchmark (benchmarks/widerface_eval.py) imports it and ``jittered_predictions`` from this file.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facelit.metrics.widerface import (
    SETTINGS,
    WiderFaceAP,
    WiderGroundTruth,
    evaluate,
    load_wider_val_gt,
    official_iou,
    official_score_range,
    read_predictions,
    voc_ap,
    write_predictions,
)

REPO = Path(__file__).resolve().parents[2]
WIDER = REPO.parent / "shared" / "data" / "widerface"


# ----------------------------------------------------------------------------------------------
# Reference: one prediction at a time, as the protocol reads
# ----------------------------------------------------------------------------------------------


def _reference_iou_row(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of one (x, y, w, h) prediction with (G, 4) gts, +1 pixel convention of bbox_overlaps."""
    px2, py2 = box[0] + box[2], box[1] + box[3]
    gx2, gy2 = gts[:, 0] + gts[:, 2], gts[:, 1] + gts[:, 3]
    iw = np.minimum(px2, gx2) - np.maximum(box[0], gts[:, 0]) + 1
    ih = np.minimum(py2, gy2) - np.maximum(box[1], gts[:, 1]) + 1
    out = np.zeros(len(gts))
    for k in np.flatnonzero((iw > 0) & (ih > 0)):
        union = (px2 - box[0] + 1) * (py2 - box[1] + 1) + (gx2[k] - gts[k, 0] + 1) * (gy2[k] - gts[k, 1] + 1)
        out[k] = iw[k] * ih[k] / (union - iw[k] * ih[k])
    return out


def _reference_voc_ap(rec: list[float], prec: list[float]) -> float:
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = float(np.maximum(mpre[i - 1], mpre[i]))
    return float(
        np.sum(
            [(mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i]]
        )
    )


def reference_wider_ap(
    preds: dict, gt: WiderGroundTruth, thresh_num: int = 1000, iou_thresh: float = 0.5
) -> dict:
    """Official WIDER FACE AP by the book: per image, per prediction, per threshold."""
    lo, hi = 1.0, 0.0
    for v in preds.values():
        if len(v):
            lo, hi = min(lo, float(np.min(v[:, 4]))), max(hi, float(np.max(v[:, 4])))
    thresholds = [1 - (t + 1) / thresh_num for t in range(thresh_num)]
    result = {}
    for s, setting in enumerate(SETTINGS):
        proposals_at = np.zeros(thresh_num)
        recalled_at = np.zeros(thresh_num)
        count_face = 0
        for key, boxes, keep in zip(gt.keys(), gt.boxes, gt.keep, strict=True):
            count_face += int(keep[:, s].sum())
            pred = np.asarray(preds.get(key, np.zeros((0, 5))), dtype=np.float64)
            if len(boxes) == 0 or len(pred) == 0:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                score = (pred[:, 4] - lo) / (hi - lo)
            order = np.argsort(-score, kind="stable")
            pred, score = pred[order], score[order]
            state = [0] * len(boxes)  # 0 not found yet, 1 recalled, -1 matched but not kept
            proposal = [1] * len(pred)
            recalled_so_far = []
            recalled = 0
            for h in range(len(pred)):
                overlaps = _reference_iou_row(pred[h], boxes.astype(np.float64))
                g = int(np.argmax(overlaps))
                if overlaps[g] >= iou_thresh:
                    if not keep[g, s]:
                        state[g] = -1
                        proposal[h] = -1
                    elif state[g] == 0:
                        state[g] = 1
                        recalled += 1
                recalled_so_far.append(recalled)
            r = n_proposals = 0  # predictions with score >= threshold, walking down the thresholds
            for t, th in enumerate(thresholds):
                while r < len(pred) and score[r] >= th:
                    n_proposals += proposal[r] == 1
                    r += 1
                if r:
                    proposals_at[t] += n_proposals
                    recalled_at[t] += recalled_so_far[r - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = [recalled_at[t] / proposals_at[t] for t in range(thresh_num)]
            recall = [recalled_at[t] / np.float64(count_face) for t in range(thresh_num)]
        result[setting] = _reference_voc_ap(recall, precision)
    return result


def jittered_predictions(
    gt: WiderGroundTruth,
    seed: int,
    false_positives: tuple[int, int] = (50, 200),
    round_scores: int | None = None,
    drop_images: float = 0.0,
) -> dict:
    """Realistic detections: gt boxes jittered (score ~ Beta(5, 2)), a share of faces missed,
    ``false_positives`` random boxes per image (score ~ Beta(2, 5)), rows in random order."""
    rng = np.random.default_rng(seed)
    preds = {}
    for key, boxes in zip(gt.keys(), gt.boxes, strict=True):
        if rng.random() < drop_images:
            continue
        b = boxes.astype(np.float64)
        b = b[rng.random(len(b)) < 0.85]
        scale = np.maximum(np.abs(b[:, 2:4]), 2.0) * 0.1
        jit = b + rng.normal(0.0, 1.0, b.shape) * np.concatenate([scale, scale], axis=1)
        m = int(rng.integers(false_positives[0], false_positives[1] + 1))
        wh = rng.uniform(2.0, 120.0, (m, 2))
        fp = np.concatenate([rng.uniform(0.0, 1000.0, (m, 2)), wh], axis=1)
        score = np.concatenate([rng.beta(5, 2, len(jit)), rng.beta(2, 5, m)])
        if round_scores is not None:
            score = np.round(score, round_scores)
        rows = np.concatenate([np.concatenate([jit, fp]), score[:, None]], axis=1)
        preds[key] = rows[rng.permutation(len(rows))]
    return preds


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def val_gt() -> WiderGroundTruth:
    if not WIDER.is_dir():
        pytest.skip(f"shared WIDER FACE files not found at {WIDER}")
    return load_wider_val_gt(WIDER)


def _special_images(gt: WiderGroundTruth) -> list[int]:
    """Images with an all-zero row, a degenerate box or a duplicated box."""
    return [
        i
        for i, b in enumerate(gt.boxes)
        if (b[:, 2:] <= 0).any() or len({tuple(r) for r in b.tolist()}) != len(b)
    ]


@pytest.fixture(scope="module")
def special(val_gt: WiderGroundTruth) -> list[int]:
    return _special_images(val_gt)


@pytest.fixture(scope="module")
def val_subset(val_gt: WiderGroundTruth, special: list[int]) -> WiderGroundTruth:
    """~40 real images: every 97th small one plus the special ones (zero rows, degenerate, duplicates)."""
    small = [i for i in range(0, len(val_gt), 97) if len(val_gt.boxes[i]) <= 40]
    return val_gt.subset(sorted(set(small + [i for i in special if len(val_gt.boxes[i]) <= 250])))


def _tiny_gt(boxes: list[list[list[int]]], keep: list[list[list[bool]]]) -> WiderGroundTruth:
    n = len(boxes)
    return WiderGroundTruth(
        tuple(f"{i}--Event" for i in range(n)),
        tuple(f"{i}_image" for i in range(n)),
        tuple(np.array(b, dtype=np.int32).reshape(-1, 4) for b in boxes),
        tuple(np.array(k, dtype=bool).reshape(-1, 3) for k in keep),
    )


# ----------------------------------------------------------------------------------------------
# Ground truth loading
# ----------------------------------------------------------------------------------------------


def test_load_real_val_gt(val_gt: WiderGroundTruth) -> None:
    assert len(val_gt) == 3226
    assert sum(len(b) for b in val_gt.boxes) == 39708
    assert max(len(b) for b in val_gt.boxes) == 709
    assert [int(sum(k[:, s].sum() for k in val_gt.keep)) for s in range(3)] == [7211, 13319, 31958]
    assert len(set(val_gt.keys())) == 3226
    i = val_gt.keys().index(("39--Ice_Skating", "39_Ice_Skating_iceskiing_39_583"))
    assert (val_gt.boxes[i][:, 2] == -2).sum() == 1
    # easy faces are medium faces are hard faces
    for k in val_gt.keep:
        assert (k[:, 0] <= k[:, 1]).all() and (k[:, 1] <= k[:, 2]).all()


def test_load_gt_missing_file(tmp_path: Path) -> None:
    (tmp_path / "wider_face_val.mat").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="wider_easy_val.mat"):
        load_wider_val_gt(tmp_path)


# ----------------------------------------------------------------------------------------------
# Agreement with the reference loop
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_on_real_images(val_subset: WiderGroundTruth, seed: int) -> None:
    preds = jittered_predictions(val_subset, seed, false_positives=(5, 30), round_scores=2, drop_images=0.1)
    preds[("0--Parade", "not_in_gt")] = np.array([[1.0, 1.0, 5.0, 5.0, 1.3]])  # widens the score range
    fast = evaluate(preds, val_subset)
    ref = reference_wider_ap(preds, val_subset)
    for s in SETTINGS:
        assert abs(fast[s] - ref[s]) <= 1e-9, (s, fast[s], ref[s])
    assert 0.05 < fast["hard"] < 0.95  # a non-trivial curve


def test_matches_reference_with_logit_scores(val_subset: WiderGroundTruth) -> None:
    """Scores outside [0, 1] take the port's range rule min(., 1), max(., 0)."""
    preds = jittered_predictions(val_subset, 3, false_positives=(2, 10))
    preds = {k: np.concatenate([v[:, :4], 4.0 * v[:, 4:] + 2.0], axis=1) for k, v in preds.items()}
    fast, ref = evaluate(preds, val_subset), reference_wider_ap(preds, val_subset)
    for s in SETTINGS:
        assert abs(fast[s] - ref[s]) <= 1e-9


# ----------------------------------------------------------------------------------------------
# Perfect predictions and hand-built cases
# ----------------------------------------------------------------------------------------------


def _as_predictions(gt: WiderGroundTruth, seed: int, drop_unmatchable: bool) -> dict:
    rng = np.random.default_rng(seed)
    preds = {}
    for key, b in zip(gt.keys(), gt.boxes, strict=True):
        b = b.astype(np.float64)
        if drop_unmatchable:  # a box with w + 1 <= 0 or h + 1 <= 0 cannot overlap anything
            b = b[(b[:, 2] + 1 > 0) & (b[:, 3] + 1 > 0)]
        preds[key] = np.concatenate([b, rng.random((len(b), 1))], axis=1)
    return preds


def test_perfect_predictions_full_val(val_gt: WiderGroundTruth, special: list[int]) -> None:
    """Predicting every box (kept or not) gives AP 1 where no kept face is a duplicate or degenerate;
    faces outside a setting count neither way."""
    aps = evaluate(_as_predictions(val_gt, 0, drop_unmatchable=True), val_gt)
    for s, setting in enumerate(SETTINGS):
        trouble = False
        for i in special:
            b, kept = val_gt.boxes[i], val_gt.keep[i][:, s]
            unmatchable = (b[:, 2] + 1 <= 0) | (b[:, 3] + 1 <= 0)
            duplicated = len({tuple(r) for r in b[kept].tolist()}) != kept.sum()
            trouble |= bool((kept & unmatchable).any() or duplicated)
        if trouble:
            assert aps[setting] < 1.0
        else:
            assert aps[setting] == 1.0, setting
    assert aps["easy"] == aps["medium"] == 1.0  # the real val file has no such face in easy / medium


def test_perfect_predictions_clean_images(val_gt: WiderGroundTruth, special: list[int]) -> None:
    sub = val_gt.subset(sorted(set(range(0, len(val_gt), 7)) - set(special)))
    assert evaluate(_as_predictions(sub, 1, drop_unmatchable=False), sub) == {s: 1.0 for s in SETTINGS}


def test_hand_built_curve() -> None:
    """Kept A, C and non-kept B; ranking: on B (neither way), FP, on A (recall), duplicate on A, FP.
    Curve (proposals, recalled): (1, 0), (2, 1), (3, 1), (4, 1) with 2 kept faces -> AP 0.5 * 0.5."""
    keep_all = [True, True, True]
    gt = _tiny_gt(
        [[[0, 0, 19, 19], [100, 100, 19, 19], [200, 0, 19, 19]]],
        [[keep_all, [False, False, False], keep_all]],
    )
    pred = np.array(
        [
            [100, 100, 19, 19, 1.0],  # B, not kept: neither way
            [400, 400, 30, 30, 0.75],  # false positive
            [1, 0, 19, 19, 0.5],  # A
            [0, 1, 19, 19, 0.25],  # A again: a proposal that recalls nothing new
            [500, 500, 9, 9, 0.0],  # false positive
        ]
    )
    key = gt.keys()[0]
    assert evaluate({key: pred}, gt) == {s: 0.25 for s in SETTINGS}
    assert reference_wider_ap({key: pred}, gt) == {s: 0.25 for s in SETTINGS}


def test_plus_one_pixel_convention() -> None:
    gt = np.array([[10.0, 10.0, 19.0, 19.0]])  # x, y, x + w, y + h of a 10 x 10 pixel face
    half = np.array([[10.0, 10.0, 19.0, 14.0]])  # 10 x 5 pixels
    assert official_iou(half, gt)[0, 0] == 0.5  # 50 / 100 (without +1: 36 / 81 < 0.5)
    tiny = _tiny_gt([[[10, 10, 9, 9]]], [[[True, True, True]]])
    pred = {tiny.keys()[0]: np.array([[10.0, 10.0, 9.0, 4.0, 1.0], [300.0, 300.0, 9.0, 9.0, 0.0]])}
    assert evaluate(pred, tiny) == {s: 1.0 for s in SETTINGS}
    assert official_iou(np.array([[5.0, 5.0, 3.0, 30.0]]), np.array([[5.0, 5.0, 3.0, 30.0]]))[0, 0] == 0.0


def test_skipped_images_still_count_their_faces() -> None:
    gt = _tiny_gt([[[0, 0, 9, 9]], [[0, 0, 9, 9]], []], [[[True] * 3], [[True] * 3], []])
    k0, _, k2 = gt.keys()
    found = np.array([[0.0, 0.0, 9.0, 9.0, 1.0], [50.0, 50.0, 9.0, 9.0, 0.0]])
    assert evaluate({k0: found}, gt) == {s: 0.5 for s in SETTINGS}  # image 1 has no predictions
    # false positives on an image without faces are skipped, as officially
    fps = np.array([[20.0, 20.0, 9.0, 9.0, 0.9], [40.0, 40.0, 9.0, 9.0, 0.8]])
    assert evaluate({k0: found, k2: fps}, gt) == {s: 0.5 for s in SETTINGS}


def test_single_score_gives_zero_as_the_port() -> None:
    gt = _tiny_gt([[[0, 0, 9, 9]]], [[[True] * 3]])
    pred = {gt.keys()[0]: np.array([[0.0, 0.0, 9.0, 9.0, 0.7]])}
    assert evaluate(pred, gt) == {s: 0.0 for s in SETTINGS}  # range [0.7, 0.7]: 0 / 0 in the port
    assert reference_wider_ap(pred, gt) == {s: 0.0 for s in SETTINGS}


def test_setting_without_faces_is_nan() -> None:
    gt = _tiny_gt([[[0, 0, 9, 9]]], [[[False, False, True]]])
    pred = {gt.keys()[0]: np.array([[0.0, 0.0, 9.0, 9.0, 1.0], [40.0, 0.0, 9.0, 9.0, 0.0]])}
    aps = evaluate(pred, gt)
    assert math.isnan(aps["easy"]) and math.isnan(aps["medium"]) and aps["hard"] == 1.0


def test_score_range_and_voc_ap() -> None:
    assert official_score_range(np.array([0.2, 0.6])) == (0.2, 0.6)
    assert official_score_range(np.array([3.0, 5.0])) == (1.0, 5.0)
    assert official_score_range(np.array([-2.0, -1.0])) == (-2.0, 0.0)
    rec, prec = np.array([0.0, 0.5, 0.5, 1.0]), np.array([np.nan, 1.0, 0.5, 0.6])
    assert voc_ap(rec, prec) == _reference_voc_ap(list(rec), list(prec)) == 0.5 * 1.0 + 0.5 * 0.6


# ----------------------------------------------------------------------------------------------
# Files and the command
# ----------------------------------------------------------------------------------------------


def test_write_read_roundtrip(tmp_path: Path) -> None:
    rows = np.array([[1.5, 2.25, 10.0, 12.0, 0.3], [4.0, 5.0, 6.0, 7.0, 0.9], [0.1, 0.2, 0.3, 0.4, 1 / 3]])
    path = write_predictions(tmp_path, "0--Parade", "0_Parade_x_1.jpg", rows)
    lines = path.read_text().splitlines()
    assert path == tmp_path / "0--Parade" / "0_Parade_x_1.txt"
    assert lines[:2] == ["0_Parade_x_1", "3"]
    write_predictions(tmp_path, "0--Parade", "empty", np.zeros((0, 5)))
    got = read_predictions(tmp_path)
    np.testing.assert_array_equal(got[("0--Parade", "0_Parade_x_1")], rows[np.argsort(-rows[:, 4])])
    assert got[("0--Parade", "empty")].shape == (0, 5)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("img\n2\n1 2 3 4 0.5\n1 2 3 x 0.4\n", r"line 4: not a number: 'x'"),
        ("img\n2\n1 2 3 4 0.5\n1 2 3 4\n", r"line 4: expected 5 values"),
        ("img\n3\n1 2 3 4 0.5\n", r"announces 3 boxes, the file has 1"),
        ("img\nmany\n", r"line 2: box count is not an integer: 'many'"),
        ("img\n1\n1 2 3 nan 0.5\n", r"line 3: non-finite value 'nan'"),
    ],
)
def test_malformed_prediction_files(tmp_path: Path, body: str, match: str) -> None:
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "0--Parade" / "img.txt").write_text(body)
    with pytest.raises(ValueError, match=match) as err:
        read_predictions(tmp_path)
    assert "img.txt" in str(err.value)


def test_duplicate_image_files(tmp_path: Path) -> None:
    write_predictions(tmp_path, "0--Parade", "a", np.ones((1, 5)))
    (tmp_path / "0--Parade" / "b.txt").write_text("a\n0\n")
    with pytest.raises(ValueError, match="already read"):
        read_predictions(tmp_path)


def test_module_split_keeps_public_names() -> None:
    """WiderFaceAP is a plain class of its own module; the façade re-exports every public name."""
    import facelit.metrics.wider_ap as wider_ap
    import facelit.metrics.wider_eval as wider_eval
    import facelit.metrics.widerface as widerface

    assert WiderFaceAP is wider_ap.WiderFaceAP and WiderFaceAP.__module__ == "facelit.metrics.wider_ap"
    assert not hasattr(widerface, "__getattr__") and widerface.main is wider_eval.main
    assert all(hasattr(widerface, name) for name in widerface.__all__)
    code = "import sys, facelit.metrics.wider_eval, facelit.metrics.wider_files; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "False"  # the command starts without torch


def test_command_line(val_gt: WiderGroundTruth, tmp_path: Path) -> None:
    """End to end: files written from the real val gt for some images, the full gt read by the command."""
    chosen = val_gt.subset(range(0, len(val_gt), 40))
    preds = jittered_predictions(chosen, 5, false_positives=(3, 20))
    for (event, name), rows in preds.items():
        write_predictions(tmp_path, event, name, rows)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "facelit.metrics.wider_eval",
            "--pred-dir",
            str(tmp_path),
            "--gt-dir",
            str(WIDER),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=120,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = evaluate(preds, val_gt)  # the other images count as images without predictions
    assert set(got) == set(SETTINGS)
    for s in SETTINGS:
        assert got[s] == pytest.approx(expected[s], abs=1e-12)
        assert 0.0 < got[s] < 0.2  # only ~2.5 % of the images have detections


# ----------------------------------------------------------------------------------------------
# torchmetrics
# ----------------------------------------------------------------------------------------------


def _metric_inputs(gt: WiderGroundTruth, preds: dict) -> tuple[list[torch.Tensor], list[dict]]:
    def xyxy(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64).copy()
        a[:, 2:4] += a[:, 0:2]
        return a

    p = [torch.from_numpy(xyxy(preds.get(k, np.zeros((0, 5))))).float() for k in gt.keys()]
    t = [
        {"boxes": torch.from_numpy(xyxy(b)).float(), "difficulty": torch.from_numpy(k)}
        for b, k in zip(gt.boxes, gt.keep, strict=True)
    ]
    return p, t


def _float32_roundtrip(preds: dict) -> dict:
    """Predictions as a float32 xyxy tensor holds them, seen as a written file (xywh)."""
    out = {}
    for key, v in preds.items():
        xyxy = v.copy()
        xyxy[:, 2:4] += xyxy[:, 0:2]
        xyxy = xyxy.astype(np.float32).astype(np.float64)
        xyxy[:, 2:4] -= xyxy[:, 0:2]
        out[key] = xyxy
    return out


def test_metric_equals_evaluate(val_subset: WiderGroundTruth) -> None:
    preds = jittered_predictions(val_subset, 7, false_positives=(5, 30))
    p, t = _metric_inputs(val_subset, preds)
    metric = WiderFaceAP()
    metric.update(p[:10], t[:10])
    metric.update(p[10:], t[10:])
    got = metric.compute()
    expected = evaluate(_float32_roundtrip(preds), val_subset)
    assert set(got) == {"ap_easy", "ap_medium", "ap_hard"}
    for s in SETTINGS:
        assert got[f"ap_{s}"].item() == pytest.approx(expected[s], abs=1e-6)


def test_metric_distributed_gather_keeps_images(val_subset: WiderGroundTruth) -> None:
    """A fake two-process gather (both ranks hold the same images): per-image boundaries survive
    the 'cat' reduction and the result equals evaluating the images twice."""
    preds = jittered_predictions(val_subset, 8, false_positives=(5, 30))
    p, t = _metric_inputs(val_subset, preds)
    metric = WiderFaceAP(
        dist_sync_fn=lambda x, group=None: [x, x.clone()], distributed_available_fn=lambda: True
    )
    metric.update(p, t)
    got = metric.compute()  # syncs through the fake gather, computes, unsyncs
    assert len(metric.pred_boxes) == len(p)  # local per-image states are back
    twice = WiderGroundTruth(
        val_subset.events * 2,
        tuple(f"{n}#{r}" for r in range(2) for n in val_subset.names),
        val_subset.boxes * 2,
        val_subset.keep * 2,
    )
    roundtrip = _float32_roundtrip(preds)
    doubled = {
        (e, f"{n}#{r}"): roundtrip[(e, n)]
        for r in range(2)
        for (e, n) in val_subset.keys()
        if (e, n) in roundtrip
    }
    expected = evaluate(doubled, twice)
    for s in SETTINGS:
        assert got[f"ap_{s}"].item() == pytest.approx(expected[s], abs=1e-6)


def _ddp_worker(rank: int, world: int, init_file: str, parts: list, result_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metric = WiderFaceAP()
        preds, targets = parts[rank]
        metric.update(preds, targets)
        result = {k: v.item() for k, v in metric.compute().items()}
        if rank == 0:
            Path(result_file).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.slow
def test_metric_real_ddp_gather(val_subset: WiderGroundTruth, tmp_path: Path) -> None:
    """Two gloo processes holding unequal shares of the images agree with one evaluation of all."""
    preds = jittered_predictions(val_subset, 9, false_positives=(5, 30))
    p, t = _metric_inputs(val_subset, preds)
    cut = len(p) // 3
    parts = [(p[:cut], t[:cut]), (p[cut:], t[cut:])]
    result_file = tmp_path / "result.json"
    # spawn, not fork: forking a process whose OpenMP/gloo threads are already running (as in the
    # full suite) deadlocks the children.
    torch.multiprocessing.start_processes(
        _ddp_worker,
        args=(2, str(tmp_path / "init"), parts, str(result_file)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    got = json.loads(result_file.read_text())
    expected = evaluate(_float32_roundtrip(preds), val_subset)
    for s in SETTINGS:
        assert got[f"ap_{s}"] == pytest.approx(expected[s], abs=1e-6)


def test_metric_bad_input() -> None:
    metric = WiderFaceAP()
    with pytest.raises(ValueError, match="expected \\(P, 5\\)"):
        metric.update(
            [torch.zeros(3, 4)],
            [{"boxes": torch.zeros(0, 4), "difficulty": torch.zeros(0, 3, dtype=torch.bool)}],
        )
    with pytest.raises(ValueError, match="difficulty"):
        metric.update([torch.zeros(0, 5)], [{"boxes": torch.zeros(2, 4), "difficulty": torch.zeros(2, 3)}])
    with pytest.raises(ValueError, match="1 prediction tensors for 2 targets"):
        metric.update([torch.zeros(0, 5)], [{}, {}])
