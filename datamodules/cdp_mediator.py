"""The CDP mediator's data: pair inputs (``facelit.cluster.mediator_input``) of the candidate pairs
of the labelled nodes, with targets (1 = same identity; ``val_fraction`` of the labelled identities
held out for validation), and of the unlabelled nodes for ``predict``.

Batches: ``inputs`` (B, F) float32, ``target`` (B,) float32 (NaN where unknown), ``index`` (B,)
pair number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from datamodules.base import FaceDataModule

__all__ = ["MediatorDataModule", "PairInputDataset", "PairSet", "load_or_build_graph"]


class PairInputDataset(Dataset):
    """Rows of a (P, F) mediator input matrix with their (P,) targets (``NaN`` where unknown)."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray | None = None) -> None:
        self.inputs = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        t = np.full(len(inputs), np.nan, np.float32) if targets is None else np.asarray(targets, np.float32)
        self.targets = torch.from_numpy(t)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.inputs[index], "target": self.targets[index], "index": torch.tensor(index)}


def load_or_build_graph(features: np.ndarray, path: Path | None, k: int, method: str):
    """The kNN graph of ``features``, read from ``path`` when a graph of the same size and k is
    there, else built (and written to ``path`` when given)."""
    from facelit.cluster.knn import KNNGraph, knn_graph

    if path is not None and path.is_file():
        graph = KNNGraph.load(path)
        if graph.num_nodes == len(features) and graph.k == k:
            return graph
    graph = knn_graph(features, k=k, method=method)
    if path is not None:
        graph.save(path)
    return graph


class PairSet:
    """Candidate pairs of one part and everything the mediator and the baselines read from them.

    Attributes:
        features: per model (N, D_m) L2-normalised features (base first); graphs: their kNN graphs;
        pairs: (P, 2) candidate pairs of the base graph; inputs: (P, F) mediator inputs.
    """

    def __init__(
        self,
        features: list[np.ndarray],
        k: int,
        structure: str,
        method: str = "auto",
        graph_paths: list[Path] | None = None,
    ) -> None:
        from facelit.cluster.io import check_same_length
        from facelit.cluster.mediator_input import mediator_inputs
        from facelit.cluster.pairs import candidate_pairs

        self.features = features
        paths = graph_paths or [None] * len(features)
        self.graphs = [load_or_build_graph(f, p, k, method) for f, p in zip(features, paths, strict=True)]
        self.pairs = candidate_pairs(self.graphs[0])
        self.inputs = mediator_inputs(self.pairs, self.graphs, features, structure)
        self.num_nodes = check_same_length({f"model {m}": f for m, f in enumerate(features)})


class MediatorDataModule(FaceDataModule):
    """Mediator pairs: inputs of the labelled part's candidate pairs with same-identity targets
    (train, and validation on held-out identities), inputs of the unlabelled part's (predict).

    Files (``data_dir``, what ``scripts/cdp_pipeline.py`` writes): ``<model>_labelled.npy`` and
    ``<model>_unlabelled.npy`` (N, D) features for ``base`` and every ``committee`` name, and
    ``labelled_labels.txt`` (one identity per labelled node). The kNN graphs are kept in
    ``data_dir/graphs/``. Without ``data_dir``: :func:`facelit.synth.embeddings.committee_embeddings`
    (labelled from ``seed``, unlabelled from other identities, ``seed + 1``).

    Args:
        base: name of the base model; committee: names of the committee models (N >= 1).
        k: neighbours per node (15, the official configs); structure: ``mean_var`` | ``common_neighbours``.
        knn_method: ``facelit.cluster.knn`` method.
        val_fraction: share of the labelled identities whose pairs validate the mediator.
        synth_labelled_nodes, synth_unlabelled_nodes, synth_identities, synth_dim,
        synth_model_noise (one per model, base first): the synthetic embedding world.
        **kwargs: FaceDataModule arguments (batch_size, num_workers, seed, ...).
    """

    def __init__(
        self,
        base: str = "base",
        committee: list[str] | None = None,
        k: int = 15,
        structure: str = "mean_var",
        knn_method: str = "auto",
        val_fraction: float = 0.1,
        synth_labelled_nodes: int = 3000,
        synth_unlabelled_nodes: int = 3000,
        synth_identities: int = 60,
        synth_dim: int = 32,
        synth_model_noise: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.base, self.committee = base, list(committee or ["committee1", "committee2"])
        if not self.committee:
            raise ValueError("the mediator needs at least one committee model")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.k, self.structure, self.knn_method, self.val_fraction = (
            int(k),
            structure,
            knn_method,
            val_fraction,
        )
        self.synth_sizes = (int(synth_labelled_nodes), int(synth_unlabelled_nodes), int(synth_identities))
        self.synth_dim = int(synth_dim)
        noise = synth_model_noise or [0.8] * (1 + len(self.committee))
        if len(noise) != 1 + len(self.committee):
            raise ValueError(
                f"synth_model_noise needs {1 + len(self.committee)} values (base + committee), got {noise}"
            )
        self.synth_model_noise = list(noise)
        self.collate_fn = default_collate
        self.sets: dict[str, PairSet] = {}
        self.labelled_labels: np.ndarray | None = None

    @property
    def models(self) -> list[str]:
        return [self.base, *self.committee]

    def _features(self, part: str) -> tuple[list[np.ndarray], np.ndarray | None]:
        if self.synthetic:
            from facelit.synth.embeddings import committee_embeddings

            labelled, unlabelled, identities = self.synth_sizes
            seed = self.seed if part == "labelled" else self.seed + 1
            nodes = labelled if part == "labelled" else unlabelled
            return committee_embeddings(seed, nodes, identities, self.synth_model_noise, self.synth_dim)
        from facelit.cluster.io import load_features, load_labels

        root = Path(self.data_dir)  # type: ignore[arg-type]
        features = [load_features(root / f"{m}_{part}.npy") for m in self.models]
        labels = load_labels(root / "labelled_labels.txt", len(features[0])) if part == "labelled" else None
        return features, labels

    def pair_set(self, part: str) -> PairSet:
        """The :class:`PairSet` of ``labelled`` or ``unlabelled`` (built once)."""
        if part not in self.sets:
            features, labels = self._features(part)
            if part == "labelled":
                self.labelled_labels = labels
            paths = None
            if not self.synthetic:
                folder = Path(self.data_dir) / "graphs"  # type: ignore[arg-type]
                paths = [folder / f"{m}_{part}_k{self.k}.npz" for m in self.models]
            self.sets[part] = PairSet(features, self.k, self.structure, self.knn_method, paths)
        return self.sets[part]

    def build_datasets(self, stage: str) -> None:
        from facelit.cluster.pairs import pair_targets

        self.note_synthetic("committee embeddings of synthetic identities")
        if stage in ("fit", "validate"):
            labelled = self.pair_set("labelled")
            labels = self.labelled_labels
            targets = pair_targets(labelled.pairs, labels)  # type: ignore[arg-type]
            ids = np.unique(labels)  # type: ignore[arg-type]
            held = np.random.default_rng(self.seed).permutation(ids)[
                : int(round(self.val_fraction * len(ids)))
            ]
            val = np.isin(labels[labelled.pairs[:, 0]], held)  # type: ignore[index]
            self.train_set = PairInputDataset(labelled.inputs[~val], targets[~val])
            self.val_set = PairInputDataset(labelled.inputs[val], targets[val]) if val.any() else None
        if stage == "predict":
            self.predict_set = PairInputDataset(self.pair_set("unlabelled").inputs)

    def val_dataloader(self):
        return [] if self.val_set is None else super().val_dataloader()
