import torch

from facelit.batch import collate_crops, collate_detections, pad_stack


def _det_sample(n: int) -> dict:
    return {
        "image": torch.rand(3, 8, 8),
        "boxes": torch.rand(n, 4),
        "landmarks": torch.rand(n, 5, 2),
        "landmarks_valid": torch.ones(n, dtype=torch.bool),
        "ignore": torch.zeros(n, dtype=torch.bool),
        "meta": {"file": f"img{n}"},
    }


def test_collate_detections_pads_with_valid_mask_and_zero_face_images():
    batch = collate_detections([_det_sample(3), _det_sample(0), _det_sample(1)])
    assert batch["image"].shape == (3, 3, 8, 8)
    assert batch["boxes"].shape == (3, 3, 4)
    assert batch["landmarks"].shape == (3, 3, 5, 2)
    assert batch["valid"].tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    assert batch["landmarks_valid"].dtype == torch.bool and not batch["landmarks_valid"][1].any()
    assert "mesh" not in batch and batch["meta"][1] == {"file": "img0"}


def test_collate_all_zero_face_batch_keeps_one_padded_slot():
    batch = collate_detections([_det_sample(0), _det_sample(0)])
    assert batch["boxes"].shape == (2, 1, 4) and not batch["valid"].any()


def test_pad_stack_and_collate_crops():
    out = pad_stack([torch.ones(2, 3), torch.ones(1, 3)])
    assert out.shape == (2, 2, 3) and out[1, 1].sum() == 0
    crops = collate_crops([{"image": torch.rand(3, 4, 4), "landmarks": torch.rand(68, 2), "meta": {"a": 1}}] * 2)
    assert crops["image"].shape == (2, 3, 4, 4) and crops["meta"] == [{"a": 1}, {"a": 1}]
