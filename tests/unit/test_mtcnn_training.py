"""MTCNN training blocks: window labels, sample mining and its targets, OHEM, the loss, crop flips,
cached resumable mining, the CelebA reader, fine-tuning start and the pretrained predict CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.mtcnn import CropSamples, MTCNNDataModule
from facelit.datasets.celeba import CelebALandmarks
from facelit.datasets.mtcnn_samples import (
    LANDMARK,
    NEGATIVE,
    PART,
    POSITIVE,
    MiningConfig,
    label_windows,
    mine_image,
)
from facelit.losses.mtcnn import MTCNNLoss, ohem_cross_entropy
from facelit.nets.mtcnn import PACKAGE_WEIGHTS_DIR

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO.parent / "shared" / "data" / "images" / "astronaut.png"


def test_window_labels_follow_the_paper_thresholds():
    face = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    windows = torch.tensor(
        [
            [10.0, 10.0, 30.0, 30.0],  # IoU 1 -> positive
            [10.0, 10.0, 30.0, 20.0],  # IoU 0.5 -> part
            [100.0, 100.0, 120.0, 120.0],  # IoU 0 -> negative
            [10.0, 10.0, 30.0, 17.0],  # IoU 0.35 -> not used
        ]
    )
    kind, index = label_windows(windows, face, MiningConfig())
    assert kind.tolist() == [POSITIVE, PART, NEGATIVE, -1] and index.tolist() == [0, 0, 0, 0]
    kind, _ = label_windows(windows, torch.zeros(0, 4), MiningConfig())
    assert kind.tolist() == [NEGATIVE] * 4


def _scene():
    image = torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(0))
    faces = torch.tensor([[20.0, 30.0, 60.0, 70.0], [100.0, 20.0, 130.0, 52.0]])
    landmarks = faces[:, None, :2] + torch.tensor(
        [[0.3, 0.3], [0.7, 0.3], [0.5, 0.5], [0.35, 0.75], [0.65, 0.75]]
    ) * (faces[:, None, 2:] - faces[:, None, :2])
    return image, faces, landmarks, torch.tensor([True, False])


def test_mined_samples_respect_quotas_and_map_back_to_the_faces():
    image, faces, landmarks, lm_valid = _scene()
    cfg = MiningConfig(size=24, samples_per_image=35)  # 3:1:1:2 -> 15, 5, 5, 10
    s = mine_image(image, faces, cfg, torch.Generator().manual_seed(1), landmarks, lm_valid)
    counts = torch.bincount(s["kind"], minlength=4).tolist()
    assert (
        counts[NEGATIVE] == 15
        and 0 < counts[POSITIVE] <= 5
        and 0 < counts[PART] <= 5
        and 0 < counts[LANDMARK] <= 10
    )
    assert s["image"].dtype == torch.uint8 and s["image"].shape[1:] == (3, 24, 24)
    assert torch.equal(s["landmarks_valid"], s["kind"] == LANDMARK)
    # A positive's box target is its face in crop pixels: IoU with the full crop > 0.65.
    pos = s["boxes"][s["kind"] == POSITIVE]
    inter = (pos[:, 2:].clamp(max=24) - pos[:, :2].clamp(min=0)).clamp(min=0).prod(1)
    union = (pos[:, 2:] - pos[:, :2]).prod(1) + 24 * 24 - inter
    assert (inter / union > 0.65).all()
    # Landmark faces come only from the face with landmarks; their points keep the face's layout.
    pts = s["landmarks"][s["kind"] == LANDMARK]
    assert (pts[:, 0, 0] < pts[:, 1, 0]).all() and (pts[:, 0, 1] < pts[:, 3, 1]).all()
    assert (s["landmarks"][s["kind"] != LANDMARK] == 0).all() and (
        s["boxes"][s["kind"] == NEGATIVE] == 0
    ).all()


def test_proposals_are_used_before_random_windows():
    image, faces, landmarks, lm_valid = _scene()
    cfg = MiningConfig(size=12, samples_per_image=7, ratio=(0, 1, 0, 0))
    s = mine_image(image, faces, cfg, torch.Generator().manual_seed(0), proposals=faces[:1].clone())
    # the one proposal (square of face 0, exact) is a positive with an offset-free box target
    assert s["kind"].tolist().count(POSITIVE) == 7
    assert torch.allclose(s["boxes"][0], torch.tensor([0.0, 0.0, 12.0, 12.0]))


def test_ohem_keeps_the_hardest_fraction():
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [0.0, 0.0], [-3.0, 3.0]], requires_grad=True)
    labels = torch.tensor([1, 1, 0, 0])
    per = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.isclose(ohem_cross_entropy(logits, labels, 0.5), per.topk(2).values.mean())
    assert torch.isclose(ohem_cross_entropy(logits, labels, 1.0), per.mean())
    ohem_cross_entropy(logits, labels, 0.5).backward()
    easy = per.argsort()[:2]
    assert (logits.grad[easy] == 0).all() and (logits.grad[per.argsort()[2:]] != 0).all()
    with pytest.raises(ValueError, match="keep_ratio"):
        ohem_cross_entropy(logits, labels, 0.0)


def test_loss_uses_each_kind_for_its_task_only():
    size = 12
    batch = {
        "image": torch.zeros(4, 3, size, size),
        "kind": torch.tensor([NEGATIVE, POSITIVE, PART, LANDMARK]),
        "boxes": torch.tensor([[0.0, 0, 0, 0], [0, 0, 12, 12], [3, 0, 15, 12], [0, 0, 12, 12]]),
        "landmarks": torch.zeros(4, 5, 2),
        "landmarks_valid": torch.tensor([False, False, False, True]),
    }
    batch["landmarks"][3] = torch.full((5, 2), 6.0)
    outputs = {"logits": torch.zeros(4, 2), "boxes": torch.zeros(4, 4), "landmarks": torch.zeros(4, 10)}
    parts = MTCNNLoss((1.0, 0.5, 1.0), keep_ratio=1.0)(outputs, batch)
    assert torch.isclose(parts["det"], torch.log(torch.tensor(2.0)))  # pos + neg at p = 0.5
    assert torch.isclose(parts["box"], torch.tensor((0.25**2 * 2) / 2))  # part: offsets 0.25 at x1, x2
    assert torch.isclose(parts["landmark"], torch.tensor(10 * 0.25))  # ten fractions of 0.5
    assert torch.isclose(parts["total"], parts["det"] + 0.5 * parts["box"] + parts["landmark"])


def test_crop_flip_mirrors_boxes_and_swaps_landmarks():
    samples = {
        "image": torch.arange(3 * 12 * 12, dtype=torch.uint8).view(1, 3, 12, 12) % 255,
        "kind": torch.tensor([LANDMARK]),
        "boxes": torch.tensor([[1.0, 2.0, 9.0, 11.0]]),
        "landmarks": torch.tensor([[[3.0, 4.0], [8.0, 4.0], [6.0, 6.0], [4.0, 9.0], [7.5, 9.0]]]),
        "landmarks_valid": torch.tensor([True]),
    }
    torch.manual_seed(0)
    items = [CropSamples(samples, flip=True)[0] for _ in range(8)]
    flipped = [it for it in items if not torch.equal(it["boxes"], samples["boxes"][0])]
    assert flipped, "no flip drawn in 8 tries"
    it = flipped[0]
    assert it["boxes"].tolist() == [3.0, 2.0, 11.0, 11.0]
    assert it["landmarks"].tolist() == [[4.0, 4.0], [9.0, 4.0], [6.0, 6.0], [4.5, 9.0], [8.0, 9.0]]
    assert torch.equal(it["image"], samples["image"][0].flip(-1).float() / 255)


def test_mining_is_cached_in_shards_and_resumes(tmp_path, monkeypatch):
    def module():
        return MTCNNDataModule(
            stage="pnet",
            samples_per_image=8,
            image_size=64,
            synth_render_size=64,
            synth_train_size=5,
            synth_val_size=2,
            synth_max_faces=3,
            cache_dir=str(tmp_path),
            shard_images=2,
            num_workers=0,
        )

    first = module()
    first.setup("fit")
    folder = next(p for p in tmp_path.iterdir() if p.name.startswith("pnet_train"))
    shards = sorted(folder.glob("shard_*.pt"))
    assert len(shards) == 3
    shards[1].unlink()  # as if the run had been killed there
    calls = []
    original = MTCNNDataModule._mine_one
    monkeypatch.setattr(MTCNNDataModule, "_mine_one", lambda self, *a: calls.append(1) or original(self, *a))
    second = module()
    second.setup("fit")
    assert len(calls) == 2  # only the missing shard's two images (val was cached too)
    for key, value in first.train_set.samples.items():
        assert torch.equal(value, second.train_set.samples[key]), key


def test_detector_ckpt_must_list_the_earlier_stages():
    with pytest.raises(ValueError, match=r"must list 2 net\(s\) \['pnet', 'rnet'\]"):
        MTCNNDataModule(stage="onet", detector_ckpt="pretrained")


def _celeba(root: Path, bad_line: str | None = None) -> Path:
    (root / "Anno").mkdir(parents=True)
    (root / "Eval").mkdir()
    (root / "Img" / "img_celeba").mkdir(parents=True)
    for name in ("000001.jpg", "000002.jpg"):
        Image.fromarray(np.zeros((40, 30, 3), dtype=np.uint8)).save(root / "Img" / "img_celeba" / name)
    (root / "Anno" / "list_bbox_celeba.txt").write_text(
        "2\nimage_id x_1 y_1 width height\n000001.jpg 2 3 20 30\n"
        + (bad_line or "000002.jpg 1 1 10 10")
        + "\n"
    )
    (root / "Anno" / "list_landmarks_celeba.txt").write_text(
        "2\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
        "leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
        "000001.jpg 8 10 16 10 12 15 9 22 15 22\n000002.jpg 1 2 3 4 5 6 7 8 9 10\n"
    )
    (root / "Eval" / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    return root


def test_celeba_reader(tmp_path):
    data = CelebALandmarks(_celeba(tmp_path), split="train")
    assert len(data) == 1
    item = data[0]
    assert item["boxes"].tolist() == [[2.0, 3.0, 22.0, 33.0]]
    assert item["landmarks"][0, 0].tolist() == [8.5, 10.5] and item["image"].shape == (3, 40, 30)


def test_celeba_bad_line_names_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"list_bbox_celeba.txt:4: .*'000002.jpg 1 1 x 10'"):
        CelebALandmarks(_celeba(tmp_path, bad_line="000002.jpg 1 1 x 10"))


def test_pretrained_module_starts_from_the_released_weights():
    from lightning_modules.mtcnn import MTCNNModule

    module = MTCNNModule(stage="rnet", pretrained=True)
    released = torch.load(PACKAGE_WEIGHTS_DIR / "rnet.pt", weights_only=True)
    assert all(torch.equal(module.net.state_dict()[k], v) for k, v in released.items())
    assert module.criterion.weights == (1.0, 0.5, 0.5) and MTCNNModule(stage="onet").criterion.weights == (
        1.0,
        0.5,
        1.0,
    )


@pytest.mark.slow
def test_pretrained_cascade_predicts_through_the_cli(tmp_path):
    if not ASTRONAUT.is_file():
        pytest.skip("astronaut.png not present")
    from cli import main

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(ASTRONAUT, images / "astronaut.png")
    Image.open(ASTRONAUT).convert("LA").save(images / "grey_alpha.png")  # grey + alpha: converted to RGB
    Image.fromarray(np.zeros((8, 9, 3), dtype=np.uint8)).save(images / "tiny.png")  # < 12 px: no face
    out = tmp_path / "pred"
    main(
        [
            "predict",
            "--config",
            str(REPO / "configs" / "mtcnn_pretrained.yaml"),
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",  # the saved config.yaml lands here, not in the repo
            f"--data.init_args.predict_images={images}",
            "--data.init_args.num_workers=0",
            f"--model.init_args.predict_dir={out}",
        ]
    )
    lines = [json.loads(line) for line in (out / "predictions.rank0.jsonl").read_text().splitlines()]
    by_file = {r["file"]: r for r in lines}
    assert set(by_file) == {"astronaut", "grey_alpha", "tiny"} and by_file["tiny"]["boxes"] == []
    for name in ("astronaut", "grey_alpha"):
        ((x1, y1, x2, y2),) = by_file[name]["boxes"]
        assert 170 < x1 < 195 and 50 < y1 < 75 and 255 < x2 < 280 and 160 < y2 < 185, by_file[name]["boxes"]
        eyes = np.asarray(by_file[name]["landmarks"][0][:2])
        assert (abs(eyes[:, 1] - 103) < 8).all() and abs(eyes[0, 0] - 205) < 8 and abs(eyes[1, 0] - 247) < 8
    assert (out / "astronaut.txt").is_file() or any(out.glob("*/astronaut.txt"))
