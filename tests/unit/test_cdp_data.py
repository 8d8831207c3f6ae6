"""CDP data: the identity split, the labelled/all/pseudo parts, equal-share pseudo batches, the stored
synthetic world and the mediator's pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.cdp import (
    CDPDataModule,
    JointDataset,
    StoredDataset,
    collate_joint,
    part_num_identities,
    split_identities,
)
from datamodules.cdp_mediator import MediatorDataModule
from facelit.cluster.io import save_labels
from facelit.cluster.mediator_input import mediator_input_size

TINY = dict(
    image_size=(32, 32),
    template="112x112",
    synth_identities=20,
    synth_world_size=80,
    synth_render_size=32,
    synth_eval_size=150,
    synth_eval_identities=30,
    synth_pairs_per_fold=1,
    batch_size=4,
    num_workers=0,
)


def test_split_is_disjoint_complete_deterministic():
    split = split_identities(200, 0.1, seed=3, held_out_fraction=0.25)
    lab, held, unl = split.labelled, split.held_out, split.unlabelled
    assert (len(lab), len(held), len(unl)) == (15, 5, 180)
    assert not (set(lab) & set(unl) or set(lab) & set(held) or set(held) & set(unl))
    assert set(lab) | set(held) | set(unl) == set(range(200))
    again = split_identities(200, 0.1, seed=3, held_out_fraction=0.25)
    other = split_identities(200, 0.1, seed=4, held_out_fraction=0.25)
    assert np.array_equal(lab, again.labelled) and not np.array_equal(lab, other.labelled)
    plain = split_identities(200, 0.1, seed=3)  # no held-out part: the same 20 labelled identities
    assert len(plain.held_out) == 0 and set(plain.labelled) == set(lab) | set(held)


def test_split_keeps_every_part_and_rejects_bad_fractions():
    assert len(split_identities(3, 0.01).labelled) == 1 and len(split_identities(3, 0.99).unlabelled) == 1
    assert len(split_identities(20, 0.1, held_out_fraction=0.9).labelled) == 1
    assert part_num_identities(200, 0.1, "all") == 200 and part_num_identities(200, 0.1, "pseudo") == 20
    assert part_num_identities(200, 0.1, "labelled", held_out_fraction=0.25) == 15
    with pytest.raises(ValueError, match="labelled_fraction"):
        split_identities(10, 1.0)
    with pytest.raises(ValueError, match="none to hold out"):
        split_identities(10, 0.1, held_out_fraction=0.5)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cdp_world")


def test_labelled_part_and_unlabelled_predict(world_dir: Path):
    dm = CDPDataModule(part="labelled", num_identities=2, cache_dir=str(world_dir), **TINY)
    dm.setup("fit")
    labelled = set(dm.split.labelled.tolist())
    train = [dm.train_set[i] for i in range(len(dm.train_set))]
    assert {int(s["identity"]) for s in train} <= {0, 1}
    assert len(train) == int(np.isin(dm.world_identity, dm.split.labelled).sum())
    dm.predict_part = "unlabelled"
    dm.setup("predict")
    ids = {int(dm.predict_set[i]["identity"]) for i in range(len(dm.predict_set))}
    assert ids and not ids & labelled
    assert [int(dm.predict_set[i]["index"]) for i in range(3)] == [0, 1, 2]  # node ids of the part
    assert list(world_dir.glob("synthetic_CDP_world*.pt")), "the rendered world is stored"


def test_stored_world_is_reloaded_identically(world_dir: Path):
    first = CDPDataModule(part="all", num_identities=20, cache_dir=str(world_dir), **TINY)
    first.setup("fit")
    second = CDPDataModule(part="all", num_identities=20, cache_dir=str(world_dir), **TINY)
    second.setup("fit")
    a, b = first._caches["synthetic CDP world"], second._caches["synthetic CDP world"]
    assert torch.equal(a[5]["image"], b[5]["image"]) and int(a[5]["identity"]) == int(b[5]["identity"])


def test_held_out_identities_are_not_trained_on(world_dir: Path):
    tiny = dict(TINY, synth_identities=40)  # 4 labelled identities: 2 trained, 2 held out
    dm = CDPDataModule(
        part="labelled", num_identities=2, held_out_fraction=0.5, cache_dir=str(world_dir), **tiny
    )
    dm.predict_part = "held_out"
    dm.setup("fit")
    held = set(dm.split.held_out.tolist())
    trained = {int(dm.world_identity[p]) for p in dm.train_set.dataset.positions}  # under the flip transform
    served = {int(dm.predict_set[i]["identity"]) for i in range(len(dm.predict_set))}
    assert len(held) == 2 and not trained & held and served == held


def test_num_identities_must_match_the_part(world_dir: Path):
    dm = CDPDataModule(part="all", num_identities=2, cache_dir=str(world_dir), **TINY)
    with pytest.raises(ValueError, match="num_identities=20"):
        dm.setup("fit")


def _pseudo_data(
    world_dir: Path, tmp_path: Path, declared: int, written: int = 3
) -> tuple[CDPDataModule, Path]:
    """A part=pseudo datamodule over a label file with ``written`` classes (every 5th node discarded)
    that declares ``declared`` pseudo classes."""
    probe = CDPDataModule(part="labelled", num_identities=2, cache_dir=str(world_dir), **TINY)
    probe.setup("predict")
    labels = np.arange(len(probe.part_positions("unlabelled"))) % written
    labels[::5] = -1
    path = tmp_path / "pseudo.txt"
    save_labels(path, labels)
    data = CDPDataModule(
        part="pseudo",
        num_identities=2,
        pseudo_labels=str(path),
        num_pseudo_identities=declared,
        cache_dir=str(world_dir),
        **TINY,
    )
    return data, path


def test_pseudo_batches_hold_equal_shares(world_dir: Path, tmp_path: Path):
    dm, labels = _pseudo_data(world_dir, tmp_path, 3)
    dm.setup("fit")
    assert isinstance(dm.train_set, JointDataset)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[0] == 4 and batch["pseudo"].tolist() == [False, False, True, True]
    assert int(batch["identity"][batch["pseudo"]].max()) < 3
    kept = (np.loadtxt(labels) >= 0).sum()
    assert dm.train_set.sizes[1] == kept  # discarded nodes are not trained on


def test_pseudo_class_count_is_checked(world_dir: Path, tmp_path: Path):
    dm, _ = _pseudo_data(world_dir, tmp_path, 5)
    with pytest.raises(ValueError, match="3 pseudo classes"):
        dm.setup("fit")


def test_collate_joint_orders_halves():
    item = {
        "image": torch.zeros(3, 4, 4),
        "identity": torch.tensor(1),
        "landmarks": torch.zeros(5, 2),
        "index": torch.tensor(0),
    }
    joint = JointDataset([item] * 2, [dict(item, identity=torch.tensor(7))] * 5)
    assert len(joint) == 5
    batch = collate_joint([joint[i] for i in range(3)])
    assert batch["identity"].tolist() == [1, 1, 1, 7, 7, 7]


def test_stored_dataset_without_file_is_in_memory(tmp_path: Path):
    data = [{"image": torch.full((3, 2, 2), 0.5), "identity": torch.tensor(i)} for i in range(3)]
    stored = StoredDataset(data, "x", tmp_path / "s.pt")
    again = StoredDataset([], "x", tmp_path / "s.pt")  # loaded: the dataset is not read again
    assert (
        len(again) == 3
        and int(again[2]["identity"]) == 2
        and torch.allclose(again[0]["image"], stored[0]["image"])
    )


def test_mediator_data_synthetic_pairs():
    dm = MediatorDataModule(
        committee=["a", "b"],
        synth_labelled_nodes=200,
        synth_unlabelled_nodes=150,
        synth_identities=10,
        k=5,
        batch_size=16,
        num_workers=0,
        val_fraction=0.2,
    )
    dm.setup("fit")
    width = mediator_input_size(2, "mean_var")
    assert width == 6 * 2 + 5
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (16, width) and set(batch["target"].tolist()) <= {0.0, 1.0}
    assert len(dm.val_set) > 0 and len(dm.train_set) + len(dm.val_set) == len(dm.pair_set("labelled").pairs)
    dm.setup("predict")
    assert len(dm.predict_set) == len(dm.pair_set("unlabelled").pairs)
    assert torch.isnan(dm.predict_set[0]["target"])  # unlabelled pairs carry no target


def test_mediator_data_reads_files_and_names_missing_ones(tmp_path: Path):
    from facelit.synth.embeddings import committee_embeddings

    for part, seed in (("labelled", 0), ("unlabelled", 1)):
        features, labels = committee_embeddings(seed, 60, 6, (0.5, 0.5))
        for name, f in zip(("base", "c1"), features, strict=True):
            np.save(tmp_path / f"{name}_{part}.npy", f)
        if part == "labelled":
            save_labels(tmp_path / "labelled_labels.txt", labels)
    dm = MediatorDataModule(
        data_dir=str(tmp_path),
        committee=["c1"],
        k=4,
        structure="common_neighbours",
        batch_size=8,
        num_workers=0,
    )
    dm.setup("fit")
    assert dm.train_set.inputs.shape[1] == mediator_input_size(1, "common_neighbours")
    assert (tmp_path / "graphs" / "base_labelled_k4.npz").is_file()
    missing = MediatorDataModule(data_dir=str(tmp_path), committee=["c2"], k=4, batch_size=8, num_workers=0)
    with pytest.raises(FileNotFoundError, match="c2_labelled.npy"):
        missing.setup("fit")
