"""Recognition data: landmark files, identity folders, aligned crops, synthetic identities and pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.face_recognition import RandomFlip
from facelit.datasets.recognition import (
    AlignedFaceDataset,
    PairDataset,
    read_landmark_file,
    read_pairs,
    scan_identity_folders,
)
from facelit.geometry.align import alignment_template
from facelit.synth.recognition import RecognitionCropDataset, unseen_seed, verification_pairs

TEMPLATE_MATLAB = "30.2946 51.6963 65.5318 51.5014 48.0252 71.7366 33.5493 92.3655 62.7299 92.2041"


def test_landmark_file_frames_and_labels(tmp_path: Path) -> None:
    f = tmp_path / "lm.txt"
    f.write_text(f"a/001.jpg 3 {TEMPLATE_MATLAB}\nb/002.jpg {TEMPLATE_MATLAB}\n")
    got = read_landmark_file(f, "matlab")
    assert got["a/001.jpg"][0] == 3 and got["b/002.jpg"][0] is None
    assert torch.allclose(got["a/001.jpg"][1], alignment_template(), atol=1e-4)
    assert torch.allclose(
        read_landmark_file(f, "zero_based")["a/001.jpg"][1], alignment_template() + 1, atol=1e-4
    )


def test_landmark_file_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "lm.txt"
    f.write_text(f"a/001.jpg 3 {TEMPLATE_MATLAB}\na/002.jpg 1 2 3\n")
    with pytest.raises(ValueError, match=r"lm.txt:2: expected '<path> \[label\] x1 y1"):
        read_landmark_file(f)
    f.write_text(f"a/001.jpg 3 {TEMPLATE_MATLAB.replace('48.0252', 'nan')}\n")
    with pytest.raises(ValueError, match=r"lm.txt:1: non-finite value 'nan'"):
        read_landmark_file(f)
    f.write_text(f"a/001.jpg {TEMPLATE_MATLAB}\na/001.jpg {TEMPLATE_MATLAB}\n")
    with pytest.raises(ValueError, match="lm.txt:2: duplicate entry"):
        read_landmark_file(f)


def _tree(root: Path) -> None:
    """Two identities in the CASIA-WebFace layout; images are the template itself, drawn in 112x96."""
    rng = np.random.default_rng(0)
    for ident, count in (("0000045", 2), ("0000099", 1)):
        (root / ident).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng.integers(0, 255, (112, 96, 3), dtype=np.uint8)).save(
                root / ident / f"{k + 1:03d}.jpg"
            )


def test_identity_folders_and_aligned_crops(tmp_path: Path, caplog) -> None:
    _tree(tmp_path / "casia")
    items, names = scan_identity_folders(tmp_path / "casia")
    assert names == ["0000045", "0000099"]
    assert items == [("0000045/001.jpg", 0), ("0000045/002.jpg", 0), ("0000099/001.jpg", 1)]
    lm = tmp_path / "lm.txt"
    lm.write_text("".join(f"{p} {y} {TEMPLATE_MATLAB}\n" for p, y in items[:2]))
    ds = AlignedFaceDataset(tmp_path / "casia", items, read_landmark_file(lm), (112, 96))
    assert len(ds) == 2 and ds.missing == ["0000099/001.jpg"]
    assert "1 of 3 images" in caplog.text
    sample = ds[1]
    original = (
        torch.from_numpy(np.asarray(Image.open(tmp_path / "casia/0000045/002.jpg"))).permute(2, 0, 1) / 255
    )
    assert torch.allclose(sample["image"], original, atol=1e-4)  # template landmarks: identity warp
    assert sample["identity"].item() == 0


def test_pair_dataset_from_lfw_pairs(tmp_path: Path) -> None:
    root = tmp_path / "lfw"
    for name, n in (("A", 2), ("B", 1)):
        (root / name).mkdir(parents=True)
        for k in range(n):
            Image.new("RGB", (96, 112), (40 * k, 0, 0)).save(root / name / f"{name}_{k + 1:04d}.jpg")
    (tmp_path / "pairs.txt").write_text("1\t1\nA\t1\t2\nA\t2\tB\t1\n")
    pairs = read_pairs(tmp_path / "pairs.txt")
    lm = tmp_path / "lm.txt"
    lm.write_text(f"A/A_0001.jpg {TEMPLATE_MATLAB}\nA/A_0002.jpg {TEMPLATE_MATLAB}\n")
    with pytest.raises(ValueError, match="1 of 3 pair images have no landmarks, e.g. 'B/B_0001.jpg'"):
        PairDataset.from_pairs(root, pairs, read_landmark_file(lm))
    lm.write_text(lm.read_text() + f"B/B_0001.jpg {TEMPLATE_MATLAB}\n")
    ds = PairDataset.from_pairs(root, pairs, read_landmark_file(lm))
    item = ds[1]
    assert (
        not item["same"]
        and item["fold"] == 1
        and item["image"][0].mean() == pytest.approx(40 / 255, abs=0.01)
    )


def test_synthetic_crops_are_aligned_and_deterministic() -> None:
    ds = RecognitionCropDataset(seed=3, length=6, num_identities=4, size=(56, 48), render_size=64)
    items = ds.__getitems__(range(6))
    assert items[0]["image"].shape == (3, 56, 48)
    points = torch.stack([s["landmarks"] for s in items])
    # rendered with roll in [-25, 25] degrees: alignment levels the eyes
    eye = points[:, 1] - points[:, 0]
    assert torch.rad2deg(torch.atan2(eye[:, 1], eye[:, 0])).abs().mean() < 6.0  # 12.5 unaligned
    # the synthetic head's 5-point proportions differ from the human template (mouth wider and
    # closer to the eyes), so points sit a few pixels off the template, consistently
    assert (points.mean(0) - alignment_template(56, 48)).norm(dim=-1).max() < 6.0
    again = ds[4]
    assert (
        torch.allclose(again["image"], items[4]["image"], atol=1e-4)
        and again["identity"] == items[4]["identity"]
    )
    other = RecognitionCropDataset(
        seed=unseen_seed(3), length=6, num_identities=4, size=(56, 48), render_size=64
    )
    assert not torch.allclose(other[4]["image"], items[4]["image"], atol=0.05)


def test_verification_pairs_follow_lfw_view2() -> None:
    identities = torch.arange(40).repeat_interleave(3)[
        torch.randperm(120, generator=torch.Generator().manual_seed(0))
    ]
    left, right, same, fold = verification_pairs(identities, pairs_per_fold=5, num_folds=10, seed=0)
    assert left.shape == (100,) and int(same.sum()) == 50
    assert torch.equal(same[:10], torch.tensor([True] * 5 + [False] * 5))  # per fold: matched first
    assert torch.equal(identities[left] == identities[right], same) and bool((left != right).all())
    fold_of: dict[int, int] = {}
    for a, b, f in zip(left.tolist(), right.tolist(), fold.tolist(), strict=True):
        for ident in (int(identities[a]), int(identities[b])):
            assert fold_of.setdefault(ident, f) == f  # identity-disjoint folds


def test_random_flip_mirrors_landmarks() -> None:
    image = torch.zeros(3, 8, 6)
    image[:, 2, 1] = 1
    points = torch.tensor([[1.5, 2.5], [4.0, 2.0], [3.0, 4.0], [2.0, 6.0], [4.0, 6.0]])
    out = RandomFlip(p=1.0)({"image": image, "landmarks": points})
    assert out["image"][0, 2, 4] == 1  # pixel 1 -> 6 - 1 - 1
    assert torch.allclose(out["landmarks"][0], torch.tensor([2.0, 2.0]))  # right eye becomes left: 6 - 4
    assert torch.allclose(out["landmarks"][1], torch.tensor([4.5, 2.5]))
