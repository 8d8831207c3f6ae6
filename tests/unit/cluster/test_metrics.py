"""Clustering metrics on hand-computed cases, against scikit-learn, and the evaluate command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score, pair_confusion_matrix

from facelit.cluster.evaluate import main
from facelit.cluster.metrics import (
    METRIC_KEYS,
    bcubed,
    cluster_metrics,
    pairwise_fscore,
    singletons_kept,
    threshold_sweep,
)

PRED = np.array([0, 0, 1, 1, -1, 2])
GT = np.array([0, 0, 0, 1, 1, 2])


def test_hand_case():
    m = cluster_metrics(PRED, GT)
    assert tuple(m) == METRIC_KEYS
    # labelled nodes 0,1,2,3,5: predicted pairs {0,1} {2,3}; true pairs {0,1} {0,2} {1,2}; shared {0,1}
    assert m["pairwise_precision"] == pytest.approx(1 / 2)
    assert m["pairwise_recall"] == pytest.approx(1 / 3)
    assert m["pairwise_fscore"] == pytest.approx(0.4)
    # node 4 a singleton: true pairs gain {3,4} -> 4; predicted pairs unchanged
    assert m["pairwise_precision_all"] == pytest.approx(1 / 2)
    assert m["pairwise_recall_all"] == pytest.approx(1 / 4)
    assert m["pairwise_fscore_all"] == pytest.approx(1 / 3)
    # B-cubed per labelled node (precision, recall): 0 (1, 2/3) 1 (1, 2/3) 2 (1/2, 1/3) 3 (1/2, 1) 5 (1, 1)
    assert m["bcubed_precision"] == pytest.approx(4 / 5)
    assert m["bcubed_recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    p, r = 4 / 5, 11 / 15
    assert m["bcubed_fscore"] == pytest.approx(2 * p * r / (p + r))
    lab = PRED >= 0
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(GT[lab], PRED[lab]))
    assert m["labelled_fraction"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("seed", range(3))
def test_pairwise_equals_sklearn_pair_confusion(seed):
    rng = np.random.default_rng(seed)
    gt, pred = rng.integers(0, 30, 500), rng.integers(0, 40, 500)
    c = pair_confusion_matrix(gt, pred)  # [[TN, FP], [FN, TP]] over ordered pairs
    p, r, f = pairwise_fscore(pred, gt)
    assert p == pytest.approx(c[1, 1] / (c[1, 1] + c[0, 1]))
    assert r == pytest.approx(c[1, 1] / (c[1, 1] + c[1, 0]))
    assert f == pytest.approx(2 * p * r / (p + r))


def test_perfect_and_degenerate():
    gt = np.array([3, 3, 7, 7, 7])
    assert cluster_metrics(np.array([1, 1, 0, 0, 0]), gt)["pairwise_fscore"] == pytest.approx(1.0)
    assert bcubed(np.array([1, 1, 0, 0, 0]), gt) == pytest.approx((1.0, 1.0, 1.0))
    nothing = cluster_metrics(np.full(5, -1), gt)
    assert nothing["labelled_fraction"] == 0 and nothing["pairwise_fscore"] == 0 and nothing["nmi"] == 0
    assert nothing["pairwise_recall_all"] == 0  # all singletons: no predicted pair
    np.testing.assert_array_equal(singletons_kept(np.array([-1, 0, -1, 1])), [2, 0, 3, 1])


def test_bad_labels():
    with pytest.raises(ValueError, match="one label per node"):
        cluster_metrics(np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="gt row 1: label -1 below 0"):
        cluster_metrics(np.array([0, 1]), np.array([0, -1]))
    with pytest.raises(ValueError, match="pred row 0: label -3 below -1"):
        cluster_metrics(np.array([-3, 1]), np.array([0, 1]))


def test_threshold_sweep():
    pairs = np.array([[0, 1], [1, 2], [2, 3]])
    scores = np.array([0.9, 0.7, 0.4])
    gt = np.array([0, 0, 0, 1])
    rows = threshold_sweep(pairs, scores, gt, [0.3, 0.5, 0.8], progress=False)
    assert [r["threshold"] for r in rows] == [0.3, 0.5, 0.8]
    assert rows[0]["pairwise_precision"] == pytest.approx(3 / 6) and rows[0]["pairwise_recall"] == 1
    assert rows[1]["pairwise_precision"] == 1 and rows[1]["labelled_fraction"] == 0.75
    # at 0.8 only {0, 1} is kept: perfect over the labelled nodes, 1 of 3 true pairs over all
    assert rows[2]["pairwise_recall"] == 1 and rows[2]["pairwise_recall_all"] == pytest.approx(1 / 3)
    assert rows[2]["labelled_fraction"] == 0.5


def test_evaluate_command(tmp_path, capsys):
    (tmp_path / "pred.txt").write_text("".join(f"{v}\n" for v in PRED))
    (tmp_path / "gt.txt").write_text("".join(f"{v}\n" for v in GT))
    main(["--pred", str(tmp_path / "pred.txt"), "--gt", str(tmp_path / "gt.txt")])
    out = json.loads(capsys.readouterr().out.strip())
    assert out == pytest.approx(cluster_metrics(PRED, GT))
    (tmp_path / "short.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"pred\.txt: 6, .*short\.txt: 2"):
        main(["--pred", str(tmp_path / "pred.txt"), "--gt", str(tmp_path / "short.txt")])
    with pytest.raises(ValueError, match=r"pred\.txt:5: label -1 out of range"):
        main(["--pred", str(tmp_path / "gt.txt"), "--gt", str(tmp_path / "pred.txt")])
