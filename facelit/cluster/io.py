"""Feature and label files of the clustering pipeline (CDP), with errors that name file and row.

Formats:

- features: ``.npy`` array (N, D) of finite floats, one row per node; returned as float32 with
  unit L2 norm (cosine similarity = inner product);
- labels: text, one integer per line, line i (1-based: i + 1) = node i; ``-1`` marks a node left
  unlabelled and is accepted only where the caller allows it (predictions, not ground truth);
- pairs: ``.npy`` array (P, 2) of node indices; scores: ``.npy`` array (P,).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "UNLABELLED",
    "check_pairs",
    "check_same_length",
    "load_features",
    "load_labels",
    "load_pairs",
    "load_scores",
    "save_features",
    "save_labels",
]

UNLABELLED = -1
"""Label of a node that no cluster claims (prediction files only)."""


def load_features(path: str | Path, normalize: bool = True) -> np.ndarray:
    """Read a (N, D) ``.npy`` feature matrix as float32, L2-normalised per row when ``normalize``.

    Raises ``ValueError`` naming the file for a wrong ndim or dtype, and the first bad row for a
    non-finite value or (when normalising) a zero row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    x = np.load(path, allow_pickle=False)
    if x.ndim != 2:
        raise ValueError(f"{path}: features must be a 2-D array (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: features must be floating point, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: row {row} has a non-finite value ({int(bad.sum())} bad rows in all)")
    if normalize:
        norms = np.linalg.norm(x, axis=1)
        zero = norms == 0
        if zero.any():
            raise ValueError(f"{path}: row {int(np.flatnonzero(zero)[0])} is all zeros (cannot L2-normalise)")
        x /= norms[:, None]
    return x


def save_features(path: str | Path, x: np.ndarray) -> None:
    """Write a (N, D) feature matrix as float32 ``.npy`` (parent folders are created)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{path}: features must be (N, D), got shape {x.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, x.astype(np.float32, copy=False))


def load_labels(path: str | Path, num_nodes: int | None = None, allow_unlabelled: bool = False) -> np.ndarray:
    """Read one integer label per line -> (N,) int64.

    Errors name the file and the 1-based line: a token that is not an integer, an empty line, a
    label below ``-1``, ``-1`` where ``allow_unlabelled`` is False, and a line count other than
    ``num_nodes`` when given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    lines = path.read_text().splitlines()
    labels = np.empty(len(lines), dtype=np.int64)
    lowest = UNLABELLED if allow_unlabelled else 0
    for i, line in enumerate(lines):
        tok = line.strip()
        try:
            value = int(tok)
        except ValueError:
            raise ValueError(f"{path}:{i + 1}: expected one integer label, got {line!r}") from None
        if value < lowest:
            allowed = "-1 (unlabelled) or a label >= 0" if allow_unlabelled else "a label >= 0"
            raise ValueError(f"{path}:{i + 1}: label {value} out of range (expected {allowed})")
        labels[i] = value
    if num_nodes is not None and len(labels) != num_nodes:
        raise ValueError(f"{path}: {len(labels)} labels for {num_nodes} nodes")
    return labels


def save_labels(path: str | Path, labels: np.ndarray) -> None:
    """Write (N,) integer labels, one per line (parent folders are created)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{int(v)}\n" for v in labels))


def check_same_length(named: Mapping[str, np.ndarray]) -> int:
    """Return the common length of the arrays; ``ValueError`` naming every file and its length when
    they disagree (keys are the file names or roles shown in the message)."""
    lengths = {name: len(a) for name, a in named.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ValueError(f"files disagree in their number of nodes ({listing})")
    return next(iter(lengths.values()), 0)


def check_pairs(pairs: np.ndarray, num_nodes: int, where: str = "pairs") -> np.ndarray:
    """Validate (P, 2) integer node pairs against ``num_nodes`` and return them as int64.

    The error names ``where`` and the first row whose index lies outside ``[0, num_nodes)``.
    """
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"{where}: pairs must be (P, 2), got shape {pairs.shape}")
    if not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(f"{where}: pairs must be integers, got dtype {pairs.dtype}")
    bad = ((pairs < 0) | (pairs >= num_nodes)).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: row {row} = {pairs[row].tolist()} has a node outside [0, {num_nodes})")
    return pairs.astype(np.int64, copy=False)


def load_pairs(path: str | Path, num_nodes: int) -> np.ndarray:
    """Read and validate a (P, 2) ``.npy`` pair file (see ``check_pairs``)."""
    return check_pairs(np.load(Path(path), allow_pickle=False), num_nodes, where=str(path))


def load_scores(path: str | Path, num_pairs: int) -> np.ndarray:
    """Read a (P,) ``.npy`` score file as float32; errors name the file and the first non-finite row."""
    scores = np.load(Path(path), allow_pickle=False)
    scores = scores.reshape(-1) if scores.ndim == 2 and scores.shape[1] == 1 else scores
    if scores.ndim != 1:
        raise ValueError(f"{path}: scores must be (P,), got shape {scores.shape}")
    if len(scores) != num_pairs:
        raise ValueError(f"{path}: {len(scores)} scores for {num_pairs} pairs")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"{path}: row {int(np.flatnonzero(bad)[0])} is not finite")
    return scores.astype(np.float32, copy=False)
