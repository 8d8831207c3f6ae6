"""Tiny-face GAN building blocks: nets, losses (four-way targets), proposal crops, score fusion."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from facelit.datasets.proposal_crops import (
    ProposalCropDataset,
    Proposals,
    RescoreDataset,
    collate_proposal_crops,
    hr_lr_pair,
    label_proposals,
    lr_crops,
    read_proposals,
    synthetic_proposals,
)
from facelit.losses.tinyface_gan import discriminator_loss, discriminator_targets, generator_loss
from facelit.nets.tinyface_gan import TinyFaceDiscriminator, TinyFaceGenerator, bicubic_upsample
from lightning_modules.tinyface_gan import fuse_scores

SMALL_D = {"widths": (4, 8, 8, 8, 8), "convs_per_stage": (1, 1, 1, 1, 1)}


# ---- nets ------------------------------------------------------------------------------------------
def test_generator_returns_g1_and_g2_at_4x():
    g = TinyFaceGenerator(channels=8, upsample_blocks=1, refine_blocks=1, deconv_channels=8)
    g1, g2 = g(torch.rand(2, 3, 8, 8))
    assert g1.shape == g2.shape == (2, 3, 32, 32)
    assert g2.min() >= 0 and g2.max() <= 1  # tanh output mapped to [0, 1]


def test_paper_generator_layout():
    g = TinyFaceGenerator()  # 64 channels, 8 + 8 residual blocks, two 256-channel deconvolutions
    deconvs = [m for m in g.upsample if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(d.out_channels, d.stride) for d in deconvs] == [(256, (2, 2)), (256, (2, 2))]
    assert sum(type(m).__name__ == "ResidualBlock" for m in g.modules()) == 16


def test_residual_generator_starts_at_bicubic():
    torch.manual_seed(0)
    g = TinyFaceGenerator(channels=8, upsample_blocks=1, refine_blocks=1, deconv_channels=8, residual=True)
    lr = torch.rand(1, 3, 8, 8)
    g1, g2 = g(lr)
    assert torch.allclose(g1, bicubic_upsample(lr, 4)) and torch.allclose(g2, g1)


def test_generator_rejects_bad_scale_and_input():
    with pytest.raises(ValueError, match="power of two"):
        TinyFaceGenerator(scale=3)
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        TinyFaceGenerator(channels=4, upsample_blocks=0, refine_blocks=0, deconv_channels=4)(
            torch.rand(3, 8, 8)
        )


def test_discriminator_is_vgg19_without_last_pool_and_has_two_heads():
    d = TinyFaceDiscriminator()
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in d.features if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == 16 and len(pools) == 4 and d.stride == 16
    small = TinyFaceDiscriminator(**SMALL_D)
    real, face = small(torch.rand(3, 3, 32, 32))
    assert real.shape == face.shape == (3,)
    with pytest.raises(ValueError, match="equally long"):
        TinyFaceDiscriminator(widths=(4, 8), convs_per_stage=(1,))


# ---- losses ----------------------------------------------------------------------------------------
def test_discriminator_four_way_targets():
    real, face = discriminator_targets(torch.tensor([True, False]))
    # rows: HR face, HR non-face, SR face, SR non-face
    assert real.tolist() == [1, 1, 0, 0] and face.tolist() == [1, 0, 1, 0]


def test_discriminator_loss_is_bce_on_the_four_kinds():
    real_logits = torch.tensor([2.0, 1.0, -1.0, 0.5])
    face_logits = torch.tensor([3.0, -2.0, 0.0, 1.0])
    out = discriminator_loss(real_logits, face_logits, torch.tensor([True, False]))
    sig = torch.sigmoid
    adv = (
        -(
            torch.log(sig(torch.tensor(2.0)))
            + torch.log(sig(torch.tensor(1.0)))
            + torch.log(1 - sig(torch.tensor(-1.0)))
            + torch.log(1 - sig(torch.tensor(0.5)))
        )
        / 4
    )
    cls = (
        -(
            torch.log(sig(torch.tensor(3.0)))
            + torch.log(1 - sig(torch.tensor(-2.0)))
            + torch.log(sig(torch.tensor(0.0)))
            + torch.log(1 - sig(torch.tensor(1.0)))
        )
        / 4
    )
    assert torch.allclose(out["adversarial"], adv) and torch.allclose(out["classification"], cls)
    assert torch.allclose(out["total"], adv + cls)
    with pytest.raises(ValueError, match="is_face"):
        discriminator_loss(real_logits, face_logits, torch.tensor([True]))


def test_generator_loss_terms_and_weights():
    hr = torch.zeros(2, 3, 4, 4)
    g1, g2 = torch.full_like(hr, 0.5), torch.full_like(hr, 0.25)
    pixel_only = generator_loss(g1, g2, hr)
    assert torch.isclose(pixel_only["total"], torch.tensor(0.25 + 0.0625))
    real, face = torch.zeros(2), torch.zeros(2)  # p = 0.5: BCE = log 2 whatever the target
    full = generator_loss(g1, g2, hr, real, face, torch.tensor([True, False]), alpha=0.1, beta=0.01)
    log2 = torch.log(torch.tensor(2.0))
    assert torch.isclose(full["total"], torch.tensor(0.3125) + 0.1 * log2 + 0.01 * log2)
    # the adversarial target is "real" whatever the label; the classification target is the label
    conf = generator_loss(
        g1,
        g2,
        hr,
        torch.full((2,), 20.0),
        torch.tensor([20.0, -20.0]),
        torch.tensor([True, False]),
        alpha=1,
        beta=1,
    )
    assert conf["adversarial"] < 1e-6 and conf["classification"] < 1e-6
    with pytest.raises(ValueError, match="must match"):
        generator_loss(g1, g2[:, :, :2], hr)


# ---- proposals and crops -----------------------------------------------------------------------------
def test_label_proposals_uses_iou_half():
    faces = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    props = torch.tensor(
        [
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 -> face
            [0.0, 0.0, 10.0, 4.9],  # IoU 0.49 -> non-face
            [20.0, 20.0, 30.0, 30.0],
        ]
    )
    assert label_proposals(props, faces).tolist() == [True, False, False]
    assert label_proposals(props, torch.zeros(0, 4)).tolist() == [False, False, False]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_read_proposals_merges_ranks_and_names_bad_lines(tmp_path):
    _write_jsonl(
        tmp_path / "predictions.rank0.jsonl",
        [{"event": "0--Parade", "file": "a", "boxes": [[1, 2, 3, 4]], "scores": [0.9]}],
    )
    _write_jsonl(
        tmp_path / "predictions.rank1.jsonl",
        [{"event": "0--Parade", "file": "b", "boxes": [], "scores": [], "landmarks": []}],
    )
    props = read_proposals(tmp_path)
    assert props[("0--Parade", "a")].boxes.tolist() == [[1, 2, 3, 4]]
    assert props[("0--Parade", "b")].boxes.shape == (0, 4)
    (tmp_path / "predictions.rank1.jsonl").write_text(
        '{"event": "e", "file": "c", "boxes": [[1, 2, 3, 4]]}\n'
    )
    with pytest.raises(ValueError, match=r"rank1.jsonl, line 1: missing keys \['scores'\]"):
        read_proposals(tmp_path)
    (tmp_path / "predictions.rank1.jsonl").write_text(
        '{"event": "0--Parade", "file": "a", "boxes": [[1, 2, 3, 4]], "scores": [1]}\n'
    )
    with pytest.raises(ValueError, match="already listed"):
        read_proposals(tmp_path)
    with pytest.raises(FileNotFoundError, match="predictions.rank"):
        read_proposals(tmp_path / "predictions.rank0.jsonl")  # a file, not a folder
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no predictions"):
        read_proposals(empty)


def test_synthetic_proposals_are_deterministic_and_mixed():
    faces = torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 50.0, 70.0, 72.0]])
    a = synthetic_proposals(
        faces, (100, 120), torch.Generator().manual_seed(3), per_face=4, false_positives=5
    )
    b = synthetic_proposals(
        faces, (100, 120), torch.Generator().manual_seed(3), per_face=4, false_positives=5
    )
    assert torch.equal(a.boxes, b.boxes) and a.boxes.shape == (13, 4)
    labels = label_proposals(a.boxes, faces)
    assert labels[:8].float().mean() >= 0.5 and not labels[8:].all()
    assert (a.boxes[8:, 2] <= 120).all() and (a.boxes[8:, 3] <= 100).all()


def test_hr_lr_pair_is_crop_then_bicubic_down():
    image = torch.rand(3, 40, 50)
    box = torch.tensor([10.0, 5.0, 26.0, 21.0])  # 16 px square, margin 0: a 1:1 crop at hr_size 16
    hr, lr = hr_lr_pair(image, box, hr_size=16, scale=4, margin=0.0)
    assert torch.allclose(hr, image[:, 5:21, 10:26], atol=1e-6)
    expected = F.interpolate(hr[None], size=4, mode="bicubic", align_corners=False, antialias=True)[0]
    assert lr.shape == (3, 4, 4) and torch.allclose(lr, expected.clamp(0, 1))
    with pytest.raises(ValueError, match="multiple of scale"):
        hr_lr_pair(image, box, hr_size=18, scale=4, margin=0.0)
    assert lr_crops(image, torch.zeros(0, 4), 8, 0.1).shape == (0, 3, 8, 8)


class _Scenes(torch.utils.data.Dataset):
    """Two 64x64 images with one 32-px face each (the second face marked ignore)."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return {
            "image": torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)),
            "boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]),
            "ignore": torch.tensor([i == 1]),
            "difficulty": torch.tensor([[True, True, True]]),
            "meta": {"event": "e", "file": f"im{i}"},
        }


def _props(index, sample):
    return Proposals(
        torch.tensor([[9.0, 9.0, 41.0, 41.0], [40.0, 40.0, 60.0, 60.0], [0.0, 0.0, 4.0, 4.0]]),
        torch.tensor([0.9, 0.3, 0.1]),
    )


def test_proposal_crop_dataset_balances_and_filters():
    ds = ProposalCropDataset(
        _Scenes(), _props, hr_size=16, scale=4, crops_per_image=4, face_fraction=0.5, min_size=8, seed=0
    )
    item = ds[0]
    # candidates: the face, proposal 0 (IoU > 0.5: face), proposal 1 (non-face); proposal 2 too small
    assert item["hr"].shape == (3, 3, 16, 16) and item["lr"].shape == (3, 3, 4, 4)
    assert item["is_face"].tolist() == [True, True, False]
    assert torch.equal(ds[0]["hr"], item["hr"])  # deterministic in (seed, index)
    ignored = ds[1]  # the ignored face is no face candidate, but the proposal on it is still a face
    assert ignored["is_face"].tolist() == [True, False]
    batch = collate_proposal_crops([item, ignored])
    assert batch["hr"].shape[0] == 5 and batch["image_index"].tolist() == [0, 0, 0, 1, 1]


def test_rescore_dataset_crops_only_small_proposals():
    ds = RescoreDataset(_Scenes(), _props, lr_size=8, margin=0.1, rescore_below=25)
    item = ds[0]
    assert item["rescore"].tolist() == [False, True, True]
    assert item["lr"].shape == (2, 3, 8, 8) and item["gt_boxes"].shape == (1, 4)
    assert RescoreDataset(_Scenes(), _props, rescore_below=None)[0]["rescore"].all()
    confident = RescoreDataset(_Scenes(), _props, lr_size=8, rescore_below=25, rescore_min_score=0.2)[0]
    assert confident["rescore"].tolist() == [False, True, False] and confident["lr"].shape[0] == 1


def test_fuse_scores():
    det, prob = torch.tensor([0.2, 0.8]), torch.tensor([0.8, 0.2])
    assert torch.allclose(fuse_scores(det, prob, "replace", 0.5), prob)
    assert torch.allclose(fuse_scores(det, prob, "mean", 0.25), torch.tensor([0.35, 0.65]))
    assert torch.allclose(fuse_scores(det, prob, "geometric", 0.5), torch.tensor([0.4, 0.4]))
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse_scores(det, prob, "max", 0.5)  # type: ignore[arg-type]
