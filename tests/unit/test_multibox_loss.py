"""MultiBoxLoss and mesh losses: zero at perfect predictions, OHEM ratio, landmark masks, cascade,
gradient flow into every head (mesh head included)."""

from __future__ import annotations

import pytest
import torch

from facelit.geometry.anchors import ANCHOR_PRESETS, generate_anchors
from facelit.geometry.coding import encode_boxes, encode_landmarks, encode_mesh
from facelit.geometry.matching import match_anchors
from facelit.losses import MultiBoxLoss, mesh_edge_loss, mesh_edges, mesh_vertex_loss, select_hard_negatives
from facelit.losses.multibox import stage_thresholds
from facelit.nets import RetinaFace

SIZE = (96, 96)


def _batch(num_vertices: int = 0) -> dict:
    """Two images: three faces (one without landmarks, one partly occluded) and one face + padding."""
    boxes = torch.tensor(
        [
            [[8.0, 10.0, 40.0, 44.0], [50.0, 40.0, 90.0, 88.0], [20.0, 60.0, 36.0, 78.0]],
            [[30.0, 20.0, 70.0, 66.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    g = torch.Generator().manual_seed(0)
    lo, span = boxes[..., None, :2], boxes[..., None, 2:] - boxes[..., None, :2]
    batch = {
        "image": torch.rand(2, 3, *SIZE, generator=g),
        "boxes": boxes,
        "valid": torch.tensor([[True, True, True], [True, False, False]]),
        "ignore": torch.zeros(2, 3, dtype=torch.bool),
        "landmarks": lo + torch.rand(2, 3, 5, 2, generator=g) * span,
        "landmarks_valid": torch.tensor([[True, False, True], [True, False, False]]),
        "landmarks_visible": torch.ones(2, 3, 5, dtype=torch.bool),
    }
    batch["landmarks_visible"][0, 2, 3:] = False
    if num_vertices:
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        xy = centre[..., None, :] + torch.randn(2, 3, num_vertices, 2, generator=g) * 5
        batch["mesh"] = torch.cat((xy, torch.randn(2, 3, num_vertices, 1, generator=g) * 3), dim=-1)
        batch["mesh_valid"] = torch.tensor([[True, True, False], [True, False, False]])
    return batch


def _anchors():
    cfg = ANCHOR_PRESETS["mnet"]
    return generate_anchors(SIZE, cfg.strides, cfg.sizes)


def _perfect(batch: dict, anchors, noise: float = 0.0) -> dict:
    """Outputs equal to the encoded targets at every positive anchor (random elsewhere)."""
    g = torch.Generator().manual_seed(1)
    a = anchors.boxes.shape[0]
    out = {
        "cls": torch.randn(2, a, 2, generator=g),
        "box": torch.randn(2, a, 4, generator=g),
        "landmarks": torch.randn(2, a, 10, generator=g),
    }
    b, ai, f = match_anchors(
        anchors.boxes, batch["boxes"], batch["valid"], batch["ignore"]
    ).positive_indices()
    out["box"][b, ai] = encode_boxes(batch["boxes"][b, f], anchors.boxes[ai]) + noise
    out["landmarks"][b, ai] = encode_landmarks(batch["landmarks"][b, f], anchors.boxes[ai]).flatten(1) + noise
    return out


def test_zero_regression_loss_at_perfect_predictions() -> None:
    batch, anchors = _batch(), _anchors()
    parts = MultiBoxLoss()(_perfect(batch, anchors), batch, anchors)
    assert parts["box"] < 1e-6 and parts["landmarks"] < 1e-6
    assert parts["cls"] > 0 and parts["num_positives"] > 3
    noisy = MultiBoxLoss()(_perfect(batch, anchors, noise=0.5), batch, anchors)
    assert noisy["box"] > 0.1 and noisy["landmarks"] > 0.1
    expected = parts["cls"] + 0.25 * parts["box"] + 0.1 * parts["landmarks"] + 0.01 * parts["mesh"]
    torch.testing.assert_close(parts["total"], expected)


def test_landmark_loss_ignores_faces_without_landmarks_and_hidden_points() -> None:
    batch, anchors = _batch(), _anchors()
    loss = MultiBoxLoss(use_visibility=True)
    outputs = _perfect(batch, anchors)
    ref = loss(outputs, batch, anchors)["landmarks"]
    garbage = {k: v.clone() for k, v in batch.items()}
    garbage["landmarks"][0, 1] = 1e4  # face 1 has no landmarks: its values must not matter
    garbage["landmarks"][0, 2, 3:] = -1e4  # hidden points of face 2
    torch.testing.assert_close(loss(outputs, garbage, anchors)["landmarks"], ref)
    garbage["landmarks_visible"][0, 2, 3:] = True
    assert loss(outputs, garbage, anchors)["landmarks"] > 100
    without_key = {k: v for k, v in batch.items() if k != "landmarks"}
    assert loss(outputs, without_key, anchors)["landmarks"] == 0


def test_occluded_but_annotated_landmarks_train_by_default() -> None:
    """Both public releases train on WIDER's flag-1 (occluded, annotated) points: so does the default."""
    batch, anchors = _batch(), _anchors()
    outputs = _perfect(batch, anchors)
    moved = {k: v.clone() for k, v in batch.items()}
    moved["landmarks"][0, 2, 3:] += 5.0  # annotated but not visible (landmarks_visible False)
    assert not MultiBoxLoss().use_visibility
    assert MultiBoxLoss()(outputs, moved, anchors)["landmarks"] > 0
    assert MultiBoxLoss(use_visibility=True)(outputs, moved, anchors)["landmarks"] == 0


def test_stage_thresholds_follow_the_paper() -> None:
    assert stage_thresholds(False) == ((0.5, 0.3), (0.5, 0.4))
    assert stage_thresholds(True) == ((0.7, 0.3), (0.5, 0.4))
    assert MultiBoxLoss(cascade=True).thresholds == ((0.7, 0.3), (0.5, 0.4))
    assert MultiBoxLoss(
        cascade=True, match_thresholds=(0.6, 0.2), cascade_thresholds=(0.55, 0.45)
    ).thresholds == ((0.6, 0.2), (0.55, 0.45))
    with pytest.raises(ValueError, match="match_thresholds"):
        MultiBoxLoss(match_thresholds=(0.3, 0.5))
    batch, anchors = _batch(), _anchors()
    with pytest.raises(ValueError, match="cascade=True"):
        MultiBoxLoss(cascade=True)(_perfect(batch, anchors), batch, anchors)


def test_ohem_ratio_and_min_negatives() -> None:
    g = torch.Generator().manual_seed(0)
    neg_loss = torch.rand(3, 200, generator=g)
    negative = torch.rand(3, 200, generator=g) > 0.3
    num_keep = torch.tensor([0, 12, 1000])
    hard = select_hard_negatives(neg_loss, negative, num_keep)
    assert hard.sum(1).tolist() == [0, 12, int(negative[2].sum())]
    assert not (hard & ~negative).any()
    chosen = neg_loss[1][hard[1]]
    assert chosen.min() >= neg_loss[1][negative[1] & ~hard[1]].max()  # the hardest ones

    batch, anchors = _batch(), _anchors()
    outputs = _perfect(batch, anchors)
    match = match_anchors(anchors.boxes, batch["boxes"], batch["valid"])
    logp = outputs["cls"].log_softmax(-1)
    for ratio in (3.0, 7.0):
        # reference: per image, CE of positives + the ratio * P largest background CEs (topk)
        total = 0.0
        for i in range(2):
            pos = match.positive[i]
            bg = -logp[i, :, 0][match.negative[i]]
            total += -logp[i, pos, 1].sum() + bg.topk(int(pos.sum() * ratio)).values.sum()
        expected = total / match.positive.sum()
        got = MultiBoxLoss(neg_pos_ratio=ratio, min_negatives=0)(outputs, batch, anchors)["cls"]
        torch.testing.assert_close(got, expected)
    # an image without faces still trains the background with min_negatives
    empty = {**batch, "valid": torch.zeros(2, 3, dtype=torch.bool)}
    parts = MultiBoxLoss(min_negatives=16)(_perfect(batch, anchors), empty, anchors)
    assert parts["cls"] > 0 and parts["num_positives"] == 0 and parts["box"] == 0
    assert MultiBoxLoss(min_negatives=0)(_perfect(batch, anchors), empty, anchors)["cls"] == 0


def test_mesh_losses() -> None:
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    assert mesh_edges(faces).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [2, 3]]
    target = torch.randn(4, 4, 3)
    assert mesh_edge_loss(target, target, faces) == 0 and mesh_vertex_loss(target, target) == 0
    shifted = target + torch.tensor([1.0, -2.0, 0.5])  # rigid translation: edges unchanged
    assert mesh_edge_loss(shifted, target, faces) < 1e-5
    assert mesh_vertex_loss(shifted, target) == pytest.approx(3.5)
    assert mesh_edge_loss(target * 2, target, faces) > 0.1
    assert mesh_edge_loss(target, target, faces, reduction="none").shape == (4,)
    with pytest.raises(ValueError, match="lie in"):
        mesh_edges(torch.tensor([[0, 1, 9]]), num_vertices=4)


def test_gradients_flow_into_every_head_with_mesh_and_cascade() -> None:
    torch.manual_seed(0)
    v = 12
    faces = torch.tensor([[i, i + 1, i + 2] for i in range(v - 2)])
    model = RetinaFace(fpn_channels=16, num_mesh_vertices=v, cascade=True)
    batch, anchors = _batch(v), model.anchors_for(SIZE)
    loss = MultiBoxLoss(mesh_faces=faces, cascade=True)
    outputs = model(batch["image"])
    parts = loss(outputs, batch, anchors, mesh_fn=model.mesh_at)
    assert {"cls", "box", "landmarks", "mesh", "cls_2", "box_2", "landmarks_2", "total"} <= set(parts)
    assert all(torch.isfinite(t) for t in parts.values())
    assert parts["mesh"] > 0
    parts["total"].backward()
    for name in ("cls_head", "box_head", "landmark_head", "cls_head_2", "box_head_2", "landmark_head_2"):
        grad = getattr(model, name).convs[0].weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.mesh_head.weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_mesh_term_is_zero_at_perfect_mesh_and_skips_faces_without_mesh() -> None:
    v = 5
    batch, anchors = _batch(v), _anchors()
    b, ai, f = match_anchors(anchors.boxes, batch["boxes"], batch["valid"]).positive_indices()
    target = encode_mesh(batch["mesh"][b, f], anchors.boxes[ai], anchors.scales[ai])
    lookup = {(int(i), int(j)): t for i, j, t in zip(b, ai, target, strict=True)}
    calls = []

    def mesh_fn(features, batch_idx, anchor_idx):
        calls.append(len(batch_idx))
        return torch.stack([lookup[(int(i), int(j))] for i, j in zip(batch_idx, anchor_idx, strict=True)])

    outputs = {**_perfect(batch, anchors), "features": []}
    parts = MultiBoxLoss(mesh_faces=torch.tensor([[0, 1, 2], [2, 3, 4]]))(outputs, batch, anchors, mesh_fn)
    assert parts["mesh"] < 1e-5
    keep = batch["mesh_valid"][b, f]
    assert calls == [int(keep.sum())] and not keep.all()  # face 2 has no mesh: its anchors skipped


def test_bad_input() -> None:
    batch, anchors = _batch(), _anchors()
    with pytest.raises(KeyError, match="valid"):
        MultiBoxLoss()(_perfect(batch, anchors), {"boxes": batch["boxes"]}, anchors)
    small = generate_anchors((64, 64), (8,), ((16.0,),))
    with pytest.raises(ValueError, match="anchors"):
        MultiBoxLoss()(_perfect(batch, anchors), batch, small)
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        MultiBoxLoss(neg_pos_ratio=-1)


def test_bf16_autocast_and_channels_last() -> None:
    """Mixed precision and channels_last (checked with CPU autocast here; CUDA uses the same paths)."""
    torch.manual_seed(0)
    v = 6
    model = RetinaFace(fpn_channels=16, num_mesh_vertices=v).to(memory_format=torch.channels_last)
    batch = _batch(v)
    anchors = model.anchors_for(SIZE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(batch["image"].to(memory_format=torch.channels_last))
        parts = MultiBoxLoss(mesh_faces=torch.tensor([[0, 1, 2], [3, 4, 5]]))(
            outputs, batch, anchors, model.mesh_at
        )
    assert outputs["cls"].dtype == torch.bfloat16
    assert parts["total"].dtype == torch.float32 and torch.isfinite(parts["total"])
    parts["total"].backward()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        (res, _) = model.predict(batch["image"])
    assert res["boxes"].dtype == torch.float32
