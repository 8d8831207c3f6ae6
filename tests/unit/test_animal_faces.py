"""Animal-face reader on a tiny tree in the official layout, bad input, match flipping, and the
synthetic datamodule's batches (matched human keypoints mirrored with the animal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.animal_faces import AnimalFaceDataModule
from facelit.batch import collate_crops
from facelit.datasets.animal_faces import KeypointListDataset, flip_matches, read_keypoint_label
from facelit.geometry.schemes import ANIMAL5

LABEL = np.array([[10, 20, 1], [30, 20, 1], [20, 30, 1], [12, 40, 0], [28, 40, -1]], dtype=np.float64)


def write_tree(root, n: int = 3) -> None:
    (root / "images").mkdir()
    lines = []
    for i in range(n):
        Image.fromarray(np.full((50, 40, 3), (40 * i) % 256, np.uint8)).save(root / "images" / f"h{i}.png")
        np.save(root / "images" / f"h{i}.npy", LABEL)
        lines.append(f"images/h{i}.png images/h{i}.npy")
    (root / "train_horse.txt").write_text("\n".join(lines) + "\n")
    (root / "test_horse.txt").write_text(lines[0] + "\n")
    (root / "humans.txt").write_text("\n".join(lines * 2) + "\n")


def test_reader_converts_frame_and_resizes(tmp_path):
    write_tree(tmp_path)
    ds = KeypointListDataset(tmp_path / "train_horse.txt", image_size=20)
    sample = ds[1]
    assert sample["image"].shape == (3, 20, 20)
    # 0-based pixel centres -> area frame (+0.5), then x * 20/40, y * 20/50
    assert torch.allclose(sample["landmarks"][0], torch.tensor([(10.5) * 0.5, (20.5) * 0.4]))
    assert sample["landmarks_visible"].tolist() == [True, True, True, False, False]
    points, visible = ds.keypoints()
    assert torch.allclose(points[1], sample["landmarks"]) and torch.equal(
        visible[1], sample["landmarks_visible"]
    )


def test_reader_bad_input(tmp_path):
    write_tree(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("images/h0.png images/h0.npy\nimages/h1.png\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        KeypointListDataset(bad)
    np.save(tmp_path / "shape.npy", LABEL[:4])
    with pytest.raises(ValueError, match=r"shape.npy.*\(5, 3\)"):
        read_keypoint_label(tmp_path / "shape.npy")
    flags = LABEL.copy()
    flags[0, 2] = 2
    np.save(tmp_path / "flags.npy", flags)
    with pytest.raises(ValueError, match="visibility"):
        read_keypoint_label(tmp_path / "flags.npy")
    (tmp_path / "missing.txt").write_text("images/none.png images/h0.npy\n")
    with pytest.raises(FileNotFoundError, match="none.png"):
        KeypointListDataset(tmp_path / "missing.txt")[0]


def test_real_datamodule_splits(tmp_path):
    write_tree(tmp_path, n=10)
    dm = AnimalFaceDataModule(
        data_dir=str(tmp_path),
        human_list="humans.txt",
        image_size=16,
        batch_size=2,
        num_workers=0,
        num_matches=2,
        val_fraction=0.2,
    )
    dm.setup("fit")
    assert len(dm.train_set) == 8 and len(dm.val_set) == 2 and len(dm.test_set) == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["match_points"].shape == (2, 2, 5, 2) and batch["human_image"].shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="human_list"):
        AnimalFaceDataModule(data_dir=str(tmp_path)).setup("fit")


def test_flip_matches():
    points = torch.tensor([[[-0.5, 0.1], [0.5, 0.2], [0.0, 0.3], [-0.3, 0.6], [0.4, 0.7]]])[
        None
    ]  # (1, 1, 5, 2)
    visible = torch.tensor([[[True, False, True, True, True]]])
    flipped, vis = flip_matches(points, visible, torch.tensor([True]), ANIMAL5.flip_tensor())
    assert flipped[0, 0, 0].tolist() == pytest.approx([-0.5, 0.2]) and flipped[
        0, 0, 3
    ].tolist() == pytest.approx([-0.4, 0.7])
    assert vis[0, 0].tolist() == [False, True, True, True, True]
    same, _ = flip_matches(points, visible, torch.tensor([False]), ANIMAL5.flip_tensor())
    assert torch.equal(same, points)


def test_synthetic_batches_mirror_matches_with_the_animal():
    kwargs = dict(
        synth_train_size=6,
        synth_val_size=2,
        synth_human_size=4,
        num_matches=2,
        image_size=32,
        batch_size=6,
        num_workers=0,
        rotation=0.0,
    )
    plain = AnimalFaceDataModule(flip_p=0.0, **kwargs)
    plain.setup("fit")
    flipped = AnimalFaceDataModule(flip_p=1.0, **kwargs)
    flipped.setup("fit")
    a = collate_crops([plain.train_set[i] for i in range(6)])
    b = collate_crops([flipped.train_set[i] for i in range(6)])
    assert a["match_points"].shape == (6, 2, 5, 2) and a["match_valid"].dtype == torch.bool
    perm = ANIMAL5.flip_tensor()
    assert torch.allclose(
        b["landmarks"], (torch.tensor([32.0, 0.0]) - a["landmarks"][:, perm]).abs(), atol=1e-3
    )
    mirrored = a["match_points"][:, :, perm] * torch.tensor([-1.0, 1.0])
    assert torch.allclose(b["match_points"], mirrored, atol=1e-6)


def test_batched_augment_mirrors_matches_and_augments_humans():
    dm = AnimalFaceDataModule(
        synth_train_size=4,
        synth_val_size=2,
        synth_human_size=4,
        num_matches=2,
        image_size=32,
        batch_size=4,
        num_workers=0,
        augment="gpu",
        flip_p=1.0,
        rotation=0.0,
    )
    dm.setup("fit")
    batch = collate_crops([dm.train_set[i] for i in range(4)])
    out = dm.batched_augment(batch)
    perm = ANIMAL5.flip_tensor()
    assert torch.allclose(out["match_points"], batch["match_points"][:, :, perm] * torch.tensor([-1.0, 1.0]))
    assert torch.allclose(out["landmarks"][..., 0], 32.0 - batch["landmarks"][:, perm, 0], atol=1e-3)
    assert torch.allclose(out["human_image"], batch["human_image"].flip(-1), atol=1e-5)
    assert "flipped" not in out and "affine" not in out
