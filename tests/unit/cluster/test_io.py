"""Bad-input errors of the CDP file readers name the file and the row or line."""

from __future__ import annotations

import numpy as np
import pytest

from facelit.cluster.io import (
    check_pairs,
    check_same_length,
    load_features,
    load_labels,
    load_pairs,
    load_scores,
    save_features,
    save_labels,
)


def test_features_round_trip_normalised(tmp_path):
    x = np.array([[3.0, 4.0], [0.0, 2.0]])
    save_features(tmp_path / "f.npy", x)
    y = load_features(tmp_path / "f.npy")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)


def test_features_nan_row_named(tmp_path):
    x = np.ones((5, 3), dtype=np.float32)
    x[3, 1] = np.nan
    x[4, 0] = np.inf
    np.save(tmp_path / "base.npy", x)
    with pytest.raises(ValueError, match=r"base\.npy: row 3 has a non-finite value \(2 bad rows"):
        load_features(tmp_path / "base.npy")


def test_features_zero_row_and_ndim(tmp_path):
    x = np.ones((3, 2), dtype=np.float32)
    x[2] = 0
    np.save(tmp_path / "z.npy", x)
    with pytest.raises(ValueError, match=r"z\.npy: row 2 is all zeros"):
        load_features(tmp_path / "z.npy")
    np.save(tmp_path / "v.npy", np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"v\.npy: features must be a 2-D array"):
        load_features(tmp_path / "v.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_features(tmp_path / "missing.npy")


def test_labels_round_trip_and_unlabelled(tmp_path):
    save_labels(tmp_path / "pred.txt", np.array([2, -1, 0]))
    assert (tmp_path / "pred.txt").read_text() == "2\n-1\n0\n"
    np.testing.assert_array_equal(load_labels(tmp_path / "pred.txt", 3, allow_unlabelled=True), [2, -1, 0])
    with pytest.raises(ValueError, match=r"pred\.txt:2: label -1 out of range \(expected a label >= 0\)"):
        load_labels(tmp_path / "pred.txt")


@pytest.mark.parametrize(("text", "message"), [
    ("0\nx\n", r"gt\.txt:2: expected one integer label, got 'x'"),
    ("0\n\n1\n", r"gt\.txt:2: expected one integer label, got ''"),
    ("0\n1.5\n", r"gt\.txt:2: expected one integer label"),
    ("0\n-2\n", r"gt\.txt:2: label -2 out of range"),
])
def test_labels_bad_line_named(tmp_path, text, message):
    (tmp_path / "gt.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_labels(tmp_path / "gt.txt", allow_unlabelled=True)


def test_labels_count_mismatch(tmp_path):
    (tmp_path / "gt.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"gt\.txt: 2 labels for 3 nodes"):
        load_labels(tmp_path / "gt.txt", num_nodes=3)


def test_same_length_names_files():
    check_same_length({"a.npy": np.zeros(3), "b.npy": np.zeros(3)})
    with pytest.raises(ValueError, match=r"a\.npy: 3, b\.npy: 4"):
        check_same_length({"a.npy": np.zeros(3), "b.npy": np.zeros(4)})


def test_pairs_and_scores_checked(tmp_path):
    np.save(tmp_path / "p.npy", np.array([[0, 1], [1, 5]]))
    with pytest.raises(ValueError, match=r"p\.npy: row 1 = \[1, 5\] has a node outside \[0, 5\)"):
        load_pairs(tmp_path / "p.npy", 5)
    with pytest.raises(ValueError, match=r"row 0 = \[-1, 2\]"):
        check_pairs(np.array([[-1, 2]]), 3)
    np.save(tmp_path / "s.npy", np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match=r"s\.npy: row 1 is not finite"):
        load_scores(tmp_path / "s.npy", 2)
    with pytest.raises(ValueError, match=r"s\.npy: 2 scores for 3 pairs"):
        load_scores(tmp_path / "s.npy", 3)
