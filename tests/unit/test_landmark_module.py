"""LandmarkModule: the mean-shape start of a fresh regression head, kept weights when fine-tuning,
and the renamed NME normalisers."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules.w300lp import W300LPDataModule
from facelit.nets.landmark_net import mean_shape
from lightning_modules.landmarks import LandmarkModule

SIZE = 32
MEAN_SHAPE_SAMPLES = 8


class BiasAtTrainStart(pl.Callback):
    """Records the regression bias when training starts (after ``setup``, before the first step)."""

    def __init__(self) -> None:
        self.bias: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bias = pl_module.net.fc.bias.detach().clone()


def _module() -> LandmarkModule:
    return LandmarkModule(backbone="resnet18", image_size=SIZE, mean_shape_samples=MEAN_SHAPE_SAMPLES, lr=1e-4)


def _fit(model: LandmarkModule, tmp_path: Path) -> torch.Tensor:
    data = W300LPDataModule(image_size=SIZE, batch_size=4, num_workers=0, synth_train_size=MEAN_SHAPE_SAMPLES,
                            synth_val_size=4, augment="none")
    probe = BiasAtTrainStart()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[probe], default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert probe.bias is not None
    return probe.bias


def _synthetic_mean_shape() -> torch.Tensor:
    data = W300LPDataModule(image_size=SIZE, synth_train_size=MEAN_SHAPE_SAMPLES, synth_val_size=4, augment="none")
    data.setup("fit")
    samples = [data.train_set[i] for i in range(MEAN_SHAPE_SAMPLES)]
    points = torch.stack([s["landmarks"] for s in samples])
    visible = torch.stack([s["landmarks_visible"] for s in samples])
    return (mean_shape(points, visible) / SIZE).reshape(-1)


def test_fresh_head_starts_at_mean_shape_and_loaded_head_keeps_its_bias(tmp_path: Path):
    fresh = _module()
    assert not bool(fresh.head_initialised)
    start = _fit(fresh, tmp_path)
    assert torch.allclose(start, _synthetic_mean_shape(), atol=1e-6)
    assert bool(fresh.head_initialised)

    with torch.no_grad():
        fresh.net.fc.bias.fill_(0.3)  # a "trained" bias, far from the mean shape
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.strategy.connect(fresh)
    ckpt = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(ckpt)

    loaded = LandmarkModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert torch.equal(_fit(loaded, tmp_path / "finetune"), torch.full_like(start, 0.3))

    # a checkpoint written before the flag existed also holds a trained head
    old = torch.load(ckpt, weights_only=False)
    del old["state_dict"]["head_initialised"]
    torch.save(old, tmp_path / "old.ckpt")
    loaded_old = LandmarkModule.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
    assert torch.equal(_fit(loaded_old, tmp_path / "finetune_old"), torch.full_like(start, 0.3))


@pytest.mark.parametrize(("old", "new"), [("bbox", "landmark_box"), ("box", "face_box")])
def test_old_normaliser_names_are_refused(old: str, new: str):
    with pytest.raises(ValueError, match=f"'{old}' was renamed '{new}'"):
        LandmarkModule(backbone="resnet18", normaliser=old)


def test_mean_shape_averages_visible_points_only():
    points = torch.tensor([[[0.0, 0.0], [10.0, 10.0]], [[2.0, 4.0], [100.0, 100.0]]])
    visible = torch.tensor([[True, True], [True, False]])
    assert torch.equal(mean_shape(points, visible), torch.tensor([[1.0, 2.0], [10.0, 10.0]]))
    with pytest.raises(ValueError, match=r"points \[1\] are visible in none"):
        mean_shape(points, torch.tensor([[True, False], [True, False]]))
