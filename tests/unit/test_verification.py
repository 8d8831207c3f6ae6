"""LFW verification protocol: hand-computed cases, a literal port of the official loop, the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facelit.datasets.recognition import read_pairs
from facelit.metrics.verification import (
    IncompletePairsError,
    VerificationMetric,
    best_threshold,
    evaluate_pairs,
    fold_scores,
    main,
    pair_accuracy,
    roc_curve,
    tar_at_far,
)


def test_accuracy_is_strict_on_both_sides() -> None:
    scores, same = torch.tensor([0.5, 0.2, 0.5], dtype=torch.float64), torch.tensor([True, False, False])
    # pos 0.5 > 0.5 fails, neg 0.2 < 0.5 holds, neg 0.5 < 0.5 fails
    assert pair_accuracy(scores, same, torch.tensor([0.5])).tolist() == pytest.approx([1 / 3])
    assert pair_accuracy(scores, same, torch.tensor([0.1, 0.3, 0.6])).tolist() == pytest.approx(
        [1 / 3, 2 / 3, 2 / 3]
    )


def test_best_threshold_is_the_mean_of_the_best_grid_points() -> None:
    scores, same = (
        torch.tensor([0.3, 0.5, 0.1, 0.2], dtype=torch.float64),
        torch.tensor([True, True, False, False]),
    )
    # accuracy 1 exactly for 0.2 < t < 0.3: grid points 0.2001 ... 0.2999, mean 0.25
    assert best_threshold(scores, same) == pytest.approx(0.25, abs=1e-9)


def test_fold_scores_centre_on_the_training_folds() -> None:
    left = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    right = torch.tensor([[0.0, 1.0], [1.0, 2.0]])
    folds = torch.tensor([1, 2])
    # test fold 1: mean of fold 2's both sides = (2, 1); (-1, -1) . (-2, 0) / (sqrt 2 * 2)
    assert fold_scores(left, right, folds, 1)[0].item() == pytest.approx(1 / math.sqrt(2))


def test_tar_at_far_hand_case() -> None:
    neg = torch.tensor([0.9, 0.5, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6])
    pos = torch.tensor([0.95, 0.6, 0.5, 0.4])
    scores, same = torch.cat([pos, neg]), torch.cat([torch.ones(4), torch.zeros(10)]).bool()
    assert tar_at_far(scores, same, 0.1) == pytest.approx(0.5)  # 1 false accept allowed: t = 0.5
    assert tar_at_far(scores, same, 0.01) == pytest.approx(0.25)  # none allowed: t = 0.9
    fpr, tpr, _ = roc_curve(scores, same)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1


def _official(left: np.ndarray, right: np.ndarray, same: np.ndarray, fold: np.ndarray) -> list[float]:
    """A literal port of the official evaluation.m loop (features reloaded every fold)."""
    accs = []
    for i in range(1, 11):
        val, test = fold != i, fold == i
        mu = np.concatenate([left[val], right[val]]).mean(0)
        fl, fr = left - mu, right - mu
        fl /= np.sqrt((fl**2).sum(1, keepdims=True))
        fr /= np.sqrt((fr**2).sum(1, keepdims=True))
        scores = (fl * fr).sum(1)

        def accuracy(s: np.ndarray, f: np.ndarray, t: np.ndarray) -> np.ndarray:
            """getAccuracy for every threshold of t (T,), broadcast over the pairs."""
            return ((s[f][None] > t[:, None]).sum(1) + (s[~f][None] < t[:, None]).sum(1)) / len(s)

        thresholds = np.arange(-10000, 10001) / 10000
        grid = accuracy(scores[val], same[val], thresholds)
        t = thresholds[grid == grid.max()].mean()
        accs.append(float(accuracy(scores[test], same[test], np.array([t]))[0]))
    return accs


def _random_pairs(seed: int = 0, per_fold: int = 12) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    n = 20 * per_fold
    same = torch.tensor(([True] * per_fold + [False] * per_fold) * 10)
    left = torch.randn(n, 6, generator=g) + 1.0
    right = torch.where(
        same[:, None], left + 0.9 * torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g) + 1.0
    )
    fold = torch.arange(10).repeat_interleave(2 * per_fold) + 1
    return left, right, same, fold


def test_matches_a_literal_port_of_the_official_script() -> None:
    left, right, same, fold = _random_pairs()
    expected = _official(left.double().numpy(), right.double().numpy(), same.numpy(), fold.numpy())
    got = evaluate_pairs(left, right, same, fold)
    assert got["fold_accuracy"].tolist() == pytest.approx(expected, abs=1e-12)
    assert got["accuracy"] == pytest.approx(np.mean(expected))
    assert got["std"] == pytest.approx(np.std(expected, ddof=1))  # MATLAB std
    assert 0.5 < got["accuracy"] < 1.0


def test_metric_deduplicates_padded_pairs() -> None:
    left, right, same, fold = _random_pairs(1)
    metric = VerificationMetric()
    index = torch.arange(left.shape[0])
    metric.update(left[:150], right[:150], same[:150], fold[:150], index[:150])
    metric.update(left[140:], right[140:], same[140:], fold[140:], index[140:])  # 10 repeated pairs
    got = metric.compute()
    assert got["accuracy"].item() == pytest.approx(
        evaluate_pairs(left, right, same, fold)["accuracy"], abs=1e-6
    )
    assert set(got) >= {"accuracy", "std", "threshold", "tar@far=1e-3", "tar@far=1e-4"}


def _write_pairs(path: Path) -> None:
    path.write_text("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t2\tD\t3\n")


def test_read_pairs_folds_and_paths(tmp_path: Path) -> None:
    _write_pairs(tmp_path / "pairs.txt")
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert [p.fold for p in pairs] == [1, 1, 2, 2]
    assert [p.same for p in pairs] == [True, False, True, False]
    assert pairs[3].paths() == ("C/C_0002.jpg", "D/D_0003.jpg")


def test_read_pairs_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("2\t1\nA\t1\t2\nA\t1\tB\nC\t1\t2\nC\t2\tD\t3\n")
    with pytest.raises(ValueError, match=r"bad.txt:3: not an integer: 'B'"):
        read_pairs(bad)
    bad.write_text("1\t1\nA\t1\tB\t1\nA\t1\t2\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected a matched pair"):
        read_pairs(bad)
    bad.write_text("10\t300\nA\t1\t2\n")
    with pytest.raises(ValueError, match="found 1 lines"):
        read_pairs(bad)


def test_command_prints_one_json_line(tmp_path: Path, capsys) -> None:
    left, right, same, fold = _random_pairs(2, per_fold=3)
    lines, names, feats = ["10\t3"], [], []
    for k in range(left.shape[0]):
        a, b = (f"id{k}", f"id{k}") if same[k] else (f"id{k}", f"other{k}")
        lines.append(f"{a}\t1\t2" if same[k] else f"{a}\t1\t{b}\t1")
        names += [f"{a}/{a}_0001.jpg", f"{b}/{b}_{2 if same[k] else 1:04d}.jpg"]
        feats += [left[k].numpy(), right[k].numpy()]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    np.savez(tmp_path / "f.npz", names=np.array(names), features=np.stack(feats))
    assert main(["--pairs", str(tmp_path / "pairs.txt"), "--features", str(tmp_path / "f.npz")]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["accuracy"] == pytest.approx(evaluate_pairs(left, right, same, fold)["accuracy"])
    assert out["pairs"] == 60 and {"std", "tar@far=1e-3", "tar@far=1e-4"} <= set(out)
    np.savez(tmp_path / "g.npz", names=np.array(names[:-1]), features=np.stack(feats[:-1]))
    with pytest.raises(ValueError, match="g.npz: 1 pair images have no feature"):
        main(["--pairs", str(tmp_path / "pairs.txt"), "--features", str(tmp_path / "g.npz")])


def test_metric_refuses_a_partial_pass() -> None:
    left, right, same, fold = _random_pairs(3)
    metric = VerificationMetric()
    metric.update(left[:4], right[:4], same[:4], fold[:4], torch.arange(4))  # fold 1, matched only
    with pytest.raises(IncompletePairsError, match="1 fold"):
        metric.compute()
