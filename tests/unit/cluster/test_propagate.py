"""Propagation on hand-built graphs: components, singletons, re-split with a rising threshold,
the max_iter stop, and agreement with a plain breadth-first reference on random graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelit.cluster.io import load_labels
from facelit.cluster.propagate import main, propagate, propagate_detailed


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels[labels >= 0])}


def test_components_and_singletons():
    pairs = np.array([[0, 1], [1, 2], [3, 4], [2, 3]])
    scores = np.array([0.9, 0.9, 0.8, 0.4])  # (2, 3) below the threshold
    np.testing.assert_array_equal(propagate(pairs, scores, 6, 0.5, progress=False), [0, 0, 0, 1, 1, -1])
    np.testing.assert_array_equal(propagate(pairs, scores, 6, 0.5, singletons="keep", progress=False),
                                  [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(propagate(pairs, scores, 6, 0.95, progress=False), [-1] * 6)


def test_resplit_rising_threshold():
    # chain 0-1-2 ~ 3-4-5 with a weak bridge (0.65); (6, 7) at 0.55 sets the start th0 = 0.55.
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [6, 7]])
    scores = np.array([0.9, 0.9, 0.65, 0.95, 0.95, 0.55])
    res = propagate_detailed(pairs, scores, 8, threshold=0.5, max_size=3, step=0.05, progress=False)
    # th_n = 1 - 0.45 * 0.95^n passes 0.65 first at n = 5 (0.6518), not at n = 4 (0.6335)
    assert res.iterations == 5 and not res.forced_stop
    assert res.final_threshold == pytest.approx(1 - 0.45 * 0.95 ** 5)
    np.testing.assert_array_equal(res.labels, [0, 0, 0, 1, 1, 1, 2, 2])
    # a node whose edges all fall below th becomes its own cluster (official behaviour), not -1
    star = propagate_detailed(np.array([[0, 1], [0, 2], [0, 3], [0, 4]]), np.array([0.9, 0.9, 0.9, 0.6]), 5,
                              threshold=0.5, max_size=4, progress=False)
    assert star.iterations == 1
    np.testing.assert_array_equal(star.labels, [0, 0, 0, 0, 1])


def test_max_iter_stop_keeps_components_apart():
    clique = lambda a: [[a, a + 1], [a, a + 2], [a, a + 3], [a + 1, a + 2], [a + 1, a + 3], [a + 2, a + 3]]  # noqa: E731
    pairs = np.array(clique(0) + clique(4) + [[8, 9]])
    scores = np.array([0.9] * 12 + [0.51])  # th0 = 0.51: 31 rounds needed to pass 0.9
    res = propagate_detailed(pairs, scores, 10, threshold=0.5, max_size=2, max_iter=3, progress=False)
    assert res.forced_stop and res.iterations == 3
    np.testing.assert_array_equal(res.labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    free = propagate_detailed(pairs, scores, 10, threshold=0.5, max_size=2, max_iter=100, progress=False)
    assert not free.forced_stop and free.iterations == 31  # 1 - 0.49 * 0.95^n passes 0.9 at n = 31
    np.testing.assert_array_equal(free.labels, [0, 1, 2, 3, 4, 5, 6, 7, 8, 8])


def _reference(pairs, scores, n, threshold, max_size, step, max_iter):
    """Breadth-first components over Python sets, the official algorithm written plainly."""
    keep = scores > threshold
    edges = [(int(a), int(b), float(s)) for (a, b), s in zip(pairs[keep], scores[keep], strict=True)]
    remain = {v for a, b, _ in edges for v in (a, b)}
    th, first, rounds, clusters = (min(s for *_, s in edges) if edges else threshold), True, 0, []
    while remain:
        adj = {v: set() for v in remain}
        for a, b, s in edges:
            if a in remain and b in remain and (first or s >= th):
                adj[a].add(b)
                adj[b].add(a)
        seen, big = set(), set()
        for v in sorted(remain):
            if v in seen:
                continue
            comp, queue = {v}, [v]
            while queue:
                for w in adj[queue.pop()] - comp:
                    comp.add(w)
                    queue.append(w)
            seen |= comp
            if len(comp) <= max_size or rounds >= max_iter:
                clusters.append(frozenset(comp))
            else:
                big |= comp
        if big:
            rounds += 1
            th += (1 - th) * step
        remain, first = big, False
    return set(clusters)


@pytest.mark.parametrize("seed", range(4))
def test_matches_breadth_first_reference(seed):
    rng = np.random.default_rng(seed)
    n = 300
    pairs = np.unique(np.sort(rng.integers(0, n, (900, 2)), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    scores = rng.uniform(0.3, 1.0, len(pairs))
    labels = propagate(pairs, scores, n, threshold=0.5, max_size=20, step=0.05, max_iter=8, progress=False)
    assert _partition(labels) == _reference(pairs, scores, n, 0.5, 20, 0.05, 8)
    first_members = [np.flatnonzero(labels == c)[0] for c in range(labels.max() + 1)]
    assert first_members == sorted(first_members)  # clusters numbered by smallest member


def test_bad_arguments():
    with pytest.raises(ValueError, match="singletons must be one of"):
        propagate(np.array([[0, 1]]), np.array([0.9]), 2, singletons="drop", progress=False)
    with pytest.raises(ValueError, match="1 scores for 2 pairs"):
        propagate(np.array([[0, 1], [1, 2]]), np.array([0.9]), 3, progress=False)
    with pytest.raises(ValueError, match=r"row 0 = \[0, 3\] has a node outside \[0, 3\)"):
        propagate(np.array([[0, 3]]), np.array([0.9]), 3, progress=False)


def test_command_line(tmp_path, capsys):
    np.save(tmp_path / "pairs.npy", np.array([[0, 1], [2, 3]]))
    np.save(tmp_path / "scores.npy", np.array([0.9, 0.2], dtype=np.float32))
    main(["--pairs", str(tmp_path / "pairs.npy"), "--scores", str(tmp_path / "scores.npy"),
          "--num-nodes", "5", "--threshold", "0.5", "--out", str(tmp_path / "pred.txt")])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_clusters"] == 1 and summary["num_labelled"] == 2 and summary["kept_pairs"] == 1
    pred = load_labels(tmp_path / "pred.txt", 5, allow_unlabelled=True)
    np.testing.assert_array_equal(pred, [0, 0, -1, -1, -1])
