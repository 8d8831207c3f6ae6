"""Validation hold-outs of the landmark training sets and the split wiring of their datamodules:
checkpoints are chosen on a split of the training data, the benchmark's test split is `test` only."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml

from datamodules.aflw import AFLWDataModule
from datamodules.w300lp import W300LPDataModule
from facelit.datasets.aflw import AFLW19Dataset
from facelit.datasets.holdout import holdout_split, in_holdout
from facelit.datasets.w300lp import AFLW2000Dataset, W300LPDataset, source_face

REPO = Path(__file__).resolve().parents[2]
NUM_FACES = 40
VIEWS = 3


def test_holdout_split_is_by_group_stable_and_checked():
    groups = [f"face{i // 3}" for i in range(300)]
    train, val = holdout_split(groups, 0.2)
    assert sorted(train + val) == list(range(300))
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert 0.1 < len(val) / 300 < 0.3
    # order- and context-free: a group's side depends on its name only
    assert holdout_split(groups[::-1], 0.2)[1] == [299 - i for i in reversed(val)]
    assert all(in_holdout(groups[i], 0.2) for i in val)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction must lie in"):
            holdout_split(groups, bad)
    with pytest.raises(ValueError, match="side empty"):
        holdout_split(["only"], 0.5)


def test_source_face_of_300wlp_names():
    assert source_face("AFW_134212_1_7") == "AFW_134212_1"
    assert source_face("HELEN_100032540_1_3") == "HELEN_100032540_1"
    assert source_face("LFPW_image_test_0001_0") == "LFPW_image_test_0001"
    assert source_face("IBUG_image_003_1_12") == "IBUG_image_003_1"
    with pytest.raises(ValueError, match="does not end with _<view index>"):
        source_face("AFW_134212_a")


def _touch_300wlp(root: Path, subsets: tuple[str, ...] = ("AFW", "HELEN")) -> None:
    """A 300W-LP listing: NUM_FACES source faces x VIEWS views per subset, with _Flip copies (the
    readers list files at construction; images are read only by __getitem__)."""
    for subset in subsets:
        for folder in (subset, subset + "_Flip"):
            (root / folder).mkdir(parents=True)
            for face in range(NUM_FACES):
                for view in range(VIEWS):
                    for ext in ("jpg", "mat"):
                        (root / folder / f"{subset}_{1000 + face}_1_{view}.{ext}").touch()


def test_300wlp_holds_out_whole_source_faces(tmp_path: Path):
    _touch_300wlp(tmp_path)
    train = W300LPDataset(tmp_path, ("AFW", "HELEN"), split="train", val_fraction=0.2)
    val = W300LPDataset(tmp_path, ("AFW", "HELEN"), split="val", val_fraction=0.2)
    faces_train = {source_face(stem) for _, stem, _ in train.items}
    faces_val = {source_face(stem) for _, stem, _ in val.items}
    assert faces_train and faces_val and not faces_train & faces_val
    assert len(faces_train | faces_val) == 2 * NUM_FACES
    assert not any(flipped for _, _, flipped in val.items)  # no mirrored duplicates in validation
    assert len(val) == VIEWS * len(faces_val)
    assert len(train) == 2 * VIEWS * len(faces_train)  # every view, plain and flipped
    # the same faces are held out whichever subsets are loaded
    afw_val = W300LPDataset(tmp_path, ("AFW",), split="val", val_fraction=0.2)
    assert [it for it in val.items if it[0] == "AFW"] == afw_val.items
    # no hold-out: the whole release trains; 'val' without a fraction is refused
    assert len(W300LPDataset(tmp_path, ("AFW",))) == 2 * NUM_FACES * VIEWS
    with pytest.raises(ValueError, match="needs val_fraction > 0"):
        W300LPDataset(tmp_path, ("AFW",), split="val")
    with pytest.raises(ValueError, match="unknown 300W-LP split"):
        W300LPDataset(tmp_path, ("AFW",), split="test")


def _write_aflw2000(root: Path, pitches_deg: list[float]) -> None:
    root.mkdir(parents=True)
    for i, pitch in enumerate(pitches_deg):
        (root / f"image{i:05d}.jpg").touch()
        pose = np.array([[np.radians(pitch), 0.1, 0.0, 0.0, 0.0, 0.0, 1.0]])
        scipy.io.savemat(root / f"image{i:05d}.mat", dict(Pose_Para=pose, pt3d_68=np.zeros((3, 68))))


def test_w300lp_datamodule_validates_on_300wlp_and_tests_on_all_of_aflw2000(tmp_path: Path):
    _touch_300wlp(tmp_path / "300W_LP", ("AFW", "HELEN", "IBUG", "LFPW"))
    _write_aflw2000(tmp_path / "AFLW2000", [10.0, 120.0, -5.0])
    dm = W300LPDataModule(data_dir=str(tmp_path), image_size=32, augment="none", val_fraction=0.2)
    dm.setup("fit")
    assert isinstance(dm.val_set, W300LPDataset) and dm.val_set.split == "val"
    assert isinstance(dm.train_set, W300LPDataset) and dm.train_set.split == "train"
    assert isinstance(dm.test_set, AFLW2000Dataset) and len(dm.test_set) == 3  # |pitch| 120 kept
    filtered = W300LPDataModule(data_dir=str(tmp_path), image_size=32, augment="none", test_max_abs_angle=99.0)
    filtered.setup("test")
    assert len(filtered.test_set) == 2 and filtered.test_set.num_filtered == 1


def _write_aflw19_listing(root: Path, num_photos: int = 30, faces_per_photo: int = 2, num_test: int = 10) -> None:
    """AFLWinfo_release.mat with several faces per photo (images are read only by __getitem__)."""
    n = num_photos * faces_per_photo + num_test
    names = np.empty((n, 1), dtype=object)
    for i in range(n):
        names[i, 0] = f"0/image{i // faces_per_photo:05d}.jpg" if i < n - num_test else f"2/test{i:05d}.jpg"
    data = np.tile(np.concatenate([np.linspace(10, 50, 19), np.linspace(20, 60, 19)]), (n, 1))
    bbox = np.tile([5.0, 55.0, 15.0, 65.0], (n, 1))
    ra = np.arange(1, n + 1, dtype=np.float64)[None]
    scipy.io.savemat(root / "AFLWinfo_release.mat",
                     dict(bbox=bbox, data=data, mask_new=np.ones((n, 19)), nameList=names, ra=ra))


def test_aflw19_validates_on_held_out_training_photos(tmp_path: Path):
    _write_aflw19_listing(tmp_path)
    kw = dict(num_train=60, val_fraction=0.2)
    train, val = AFLW19Dataset(tmp_path, "train", **kw), AFLW19Dataset(tmp_path, "val", **kw)
    test = AFLW19Dataset(tmp_path, "test", **kw)
    assert sorted(train.indices.tolist() + val.indices.tolist()) == list(range(60))
    assert val.names and not set(train.names) & set(val.names)  # a photo's faces stay together
    assert test.indices.tolist() == list(range(60, 70))
    assert len(AFLW19Dataset(tmp_path, "train", num_train=60)) == 60  # no hold-out: the benchmark's train
    with pytest.raises(ValueError, match="needs val_fraction > 0"):
        AFLW19Dataset(tmp_path, "val", num_train=60)


def test_aflw_datamodule_wires_val_and_test_splits(tmp_path: Path, monkeypatch):
    _write_aflw19_listing(tmp_path)
    # the listing has 60 training faces instead of the release's 20,000
    monkeypatch.setattr("facelit.datasets.aflw.AFLW19Dataset", functools.partial(AFLW19Dataset, num_train=60))
    dm = AFLWDataModule(data_dir=str(tmp_path), image_size=32, augment="none", val_fraction=0.2)
    dm.setup("fit")
    assert (dm.train_set.split, dm.val_set.split, dm.test_set.split) == ("train", "val", "test")
    assert dm.test_set is not dm.val_set
    assert not set(dm.train_set.names) & set(dm.val_set.names)


@pytest.mark.parametrize("name", ["landmarks_300wlp", "landmarks_aflw", "demo/landmarks_300wlp", "demo/landmarks_aflw"])
def test_landmark_configs_select_checkpoints_on_validation(name: str):
    config = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    monitors = [c["init_args"]["monitor"] for c in config["trainer"]["callbacks"]
                if c["class_path"].endswith("ModelCheckpoint")]
    assert monitors and all(m.startswith("val/") for m in monitors)


@pytest.mark.parametrize("name", ["demo/landmarks_300wlp", "demo/landmarks_aflw"])
def test_landmark_demos_are_budgeted_in_steps_not_time(name: str):
    trainer = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())["trainer"]
    assert trainer.get("max_steps", -1) > 0 and trainer.get("max_time") is None
