"""CUDA paths: bf16 autocast and channels_last training steps, GPU batched augmentation.
Skipped cleanly without a CUDA device (CI has none); run on a GPU machine with `pytest -m gpu`."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _detection_batch(device: torch.device, size: int = 128, batch: int = 4) -> dict:
    from facelit.batch import collate_detections
    from facelit.synth import render_scene

    samples = [render_scene(0, i, size, size, max_faces=6) for i in range(batch)]
    for s in samples:
        s.pop("mesh")
        s.pop("mesh_valid")
    out = collate_detections(samples)
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in out.items()}


@pytest.mark.parametrize("channels_last", [False, True])
def test_retinaface_bf16_step_on_gpu(channels_last: bool):
    from lightning_modules.retinaface import RetinaFaceModule

    device = torch.device("cuda")
    module = RetinaFaceModule(channels_last=channels_last).to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    batch = _detection_batch(device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = module.model_step(batch, "train")
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    module.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        module.model_step(batch, "val")
    values = module.val_ap.compute()
    assert set(values) == {"ap_easy", "ap_medium", "ap_hard"}


def test_landmarks_bf16_channels_last_step_on_gpu():
    from facelit.batch import collate_crops
    from facelit.synth import render_crop
    from lightning_modules.landmarks import LandmarkModule

    device = torch.device("cuda")
    module = LandmarkModule(backbone="resnet18", image_size=64, channels_last=True).to(device)
    module.to(memory_format=torch.channels_last)
    batch = collate_crops([render_crop(0, i, 64) for i in range(8)])
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = module.model_step(batch, "val")
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and module.val_metrics.compute()["nme"] > 0


def test_batched_detection_augment_on_gpu_keeps_points_consistent():
    from facelit.augment.detection import BatchedDetectionAugment

    device = torch.device("cuda")
    batch = _detection_batch(device, size=160)
    aug = BatchedDetectionAugment(output_size=128).to(device)
    out = aug(batch, generator=torch.Generator(device=device).manual_seed(0))
    assert out["image"].shape == (4, 3, 128, 128) and out["image"].device.type == "cuda"
    boxes, valid = out["boxes"][out["valid"]], out["landmarks_valid"][out["valid"]]
    pts = out["landmarks"][out["valid"]][valid]
    inside = (pts >= boxes[valid][:, None, :2] - 1) & (pts <= boxes[valid][:, None, 2:] + 1)
    assert inside.float().mean() > 0.95
