"""Offline 300-VW evaluation (facelit.metrics.video_eval) on a tiny annotation tree written here:
per-category NME / AUC / FR over frames, jitter, bad prediction files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from facelit.datasets.w300vw import W300VW_CATEGORIES
from facelit.metrics.video_eval import evaluate_300vw, main

IOD = 20.0
FRAMES = 3


def face68() -> np.ndarray:
    """68 points (1-based values) with the outer eye corners 36 and 45 IOD apart."""
    pts = np.stack([np.arange(68.0) * 0.5 + 30, np.full(68, 40.0)], 1)
    pts[36], pts[45] = (30.0, 30.0), (30.0 + IOD, 30.0)
    return pts


def write_pts(path, pts) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"{x:.4f} {y:.4f}" for x, y in pts)
    path.write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{rows}\n}}\n")


@pytest.fixture()
def trees(tmp_path):
    """Ground truth for categories 2 and 3 (annotations only); predictions exact except video 410
    (every point 1 px low in all frames) and 203 (frame 2 only, 2 px to the right)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for clip in W300VW_CATEGORIES[2] + W300VW_CATEGORIES[3]:
        for f in range(FRAMES):
            name = f"{f + 1:06d}.pts"
            write_pts(gt / clip / "annot" / name, face68())
            offset = {"410": (0.0, 1.0), "203": (2.0, 0.0) if f == 1 else (0.0, 0.0)}.get(clip, (0.0, 0.0))
            write_pts(pred / clip / name, face68() + np.array(offset))
    return pred, gt


def test_per_category_over_frames(trees):
    pred, gt = trees
    rows = {r["category"]: r for r in evaluate_300vw(pred, gt, categories=(2, 3))}
    n2, n3 = len(W300VW_CATEGORIES[2]) * FRAMES, len(W300VW_CATEGORIES[3]) * FRAMES
    assert rows[3]["frames"] == n3 and rows[3]["videos"] == 14
    assert math.isclose(rows[3]["nme"], FRAMES * (1 / IOD) / n3, rel_tol=1e-5)  # 410's frames: 1 px / IOD
    assert math.isclose(rows[2]["nme"], (2 / IOD) / n2, rel_tol=1e-5)
    assert rows[3]["fr@0.08"] == 0.0
    assert math.isclose(rows[3]["auc@0.08"], 1 - FRAMES * (1 / IOD / 0.08) / n3, abs_tol=2e-3)
    # jitter: 203's error moves 0 -> 2 -> 0 px: acceleration 4 px at frame 2, one video of 19
    assert math.isclose(rows[2]["jitter"], (4 / IOD) / len(W300VW_CATEGORIES[2]), rel_tol=1e-5)
    assert rows[3]["jitter"] == pytest.approx(0.0, abs=1e-7)  # a constant offset does not jitter
    assert rows["all"]["frames"] == n2 + n3
    assert math.isclose(rows["all"]["nme"], (FRAMES / IOD + 2 / IOD) / (n2 + n3), rel_tol=1e-5)


def test_cli_prints_json_and_names_bad_files(trees, capsys):
    pred, gt = trees
    main(["--pred", str(pred), "--gt", str(gt), "--categories", "3"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert row["category"] == 3 and row["frames"] == 14 * FRAMES
    (pred / "530" / "000002.pts").unlink()
    with pytest.raises(FileNotFoundError, match=r"530/annot/000002\.pts"):
        evaluate_300vw(pred, gt, categories=(3,))
    write_pts(pred / "530" / "000002.pts", face68()[:60])
    with pytest.raises(ValueError, match=r"530/000002\.pts: 60 points, expected 68"):
        evaluate_300vw(pred, gt, categories=(3,))
    with pytest.raises(ValueError, match="unknown 300-VW category 5"):
        evaluate_300vw(pred, gt, categories=(5,))


def test_rednet7_predictions(trees, tmp_path):
    pred, gt = trees
    seven = tmp_path / "pred7"
    for clip in W300VW_CATEGORIES[3]:
        for f in range(FRAMES):
            name = f"{f + 1:06d}.pts"
            points = np.loadtxt(pred / clip / name, skiprows=3, max_rows=68)
            write_pts(seven / clip / name, points[[36, 39, 42, 45, 30, 48, 54]])
    (row,) = evaluate_300vw(seven, gt, categories=(3,), scheme="rednet7")
    n3 = len(W300VW_CATEGORIES[3]) * FRAMES
    assert math.isclose(row["nme"], FRAMES * (1 / IOD) / n3, rel_tol=1e-5)  # outer corners are points 0 and 3
