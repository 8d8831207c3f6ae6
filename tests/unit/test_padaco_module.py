"""PADACO datamodule and LightningModule on tiny synthetic sets: loaders, stage 2, the four methods."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from callbacks.headpose import HeadPosePlots
from datamodules.padaco import PadacoDataModule, PoseFlip
from lightning_modules.padaco import METHODS, PadacoModule

TINY = dict(
    image_size=32,
    batch_size=2,
    target_batch_size=2,
    val_batch_size=4,
    num_workers=0,
    synth_source_size=8,
    synth_target_size=4,
    synth_val_size=2,
    synth_test_size=2,
    synth_cache=True,
)
BACKBONE = "mobilenetv3_small_050"


@pytest.fixture(scope="module")
def datamodule() -> PadacoDataModule:
    dm = PadacoDataModule(**TINY)
    dm.setup("fit")
    return dm


def test_flip_negates_yaw_and_roll_and_mirrors_boxes():
    sample = {
        "image": torch.arange(12.0).view(1, 3, 4).expand(3, 3, 4),
        "pose": torch.tensor([30.0, 10, 5]),
        "boxes": torch.tensor([0.0, 1, 1, 3]),
    }
    out = PoseFlip(1.0)(sample)
    torch.testing.assert_close(out["pose"], torch.tensor([-30.0, 10, -5]))
    torch.testing.assert_close(out["boxes"], torch.tensor([3.0, 1, 4, 3]))
    assert torch.equal(out["image"], sample["image"].flip(-1))
    assert PoseFlip(0.0)(sample) is sample


def test_train_loader_serves_indexed_source_and_target(datamodule):
    datamodule.trainer = None
    loader = datamodule.train_dataloader()
    batch, *_ = next(iter(loader))
    assert set(batch) == {"source", "target"}
    assert batch["source"]["image"].shape == (2, 3, 32, 32) and batch["target"]["image"].shape == (
        2,
        3,
        32,
        32,
    )
    assert batch["source"]["index"].dtype == torch.int64
    assert datamodule.source_poses().shape == (8, 3)
    weights = torch.zeros(8)
    weights[3] = 1.0
    datamodule.set_source_weights(weights)
    indices = [int(i) for b, *_ in loader for i in b["source"]["index"]]
    assert set(indices) == {3}
    datamodule.set_source_weights(None)
    with pytest.raises(ValueError, match="expected 8 source weights"):
        datamodule.set_source_weights(torch.ones(3))


def test_synthetic_label_spaces_are_a_partial_shift(datamodule):
    source_yaw = datamodule.source_poses()[:, 0].abs()
    from datamodules.padaco import dataset_poses

    target_yaw = dataset_poses(datamodule.target_train)[:, 0].abs()
    assert target_yaw.max() <= 60.0 and source_yaw.max() <= 90.0


def test_source_only_never_touches_the_target(datamodule):
    module = PadacoModule(method="source_only", backbone=BACKBONE)
    module.net.set_label_stats(datamodule.source_poses())
    batch = next(iter(datamodule.train_dataloader()))[0]
    batch["target"]["image"] = torch.full_like(batch["target"]["image"], float("nan"))
    module.trainer = None
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_fits_two_stages(method, tmp_path):
    pl.seed_everything(0)
    dm = PadacoDataModule(**TINY)
    module = PadacoModule(method=method, backbone=BACKBONE, adapt_epoch=1, num_neighbours=2)
    callbacks = [HeadPosePlots()] if method == "padaco" else []
    trainer = pl.Trainer(
        max_steps=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 8  # two epochs of 4 steps: stage 1, then stage 2
    metrics = trainer.callback_metrics
    assert {"val/source/mae", "val/target/mae", "val/target/mae_pyr"} <= set(metrics)
    if method in ("pada", "padaco"):
        w = module.source_weights
        assert w is not None and w.shape == (8,) and w.mean().item() == pytest.approx(1.0)
        assert (w > 0).sum() <= 4 * 2  # 4 target predictions x 2 neighbours
    else:
        assert module.source_weights is None
    if method == "padaco":
        assert dm.source_sampler.weights is not None
        drawn = {p.parent.name for p in tmp_path.rglob("*.png")}
        assert {"val_error_by_yaw", "adapt_source_weights"} <= drawn, drawn
    if method != "source_only":
        assert "train/lambda" in metrics and 0 < float(metrics["train/lambda"]) < 1
    trainer.test(module, datamodule=dm)
    assert "test/target/mae" in trainer.callback_metrics


def test_weights_survive_a_checkpoint(tmp_path):
    module = PadacoModule(method="padaco", backbone=BACKBONE)
    module.source_weights = torch.tensor([0.5, 1.5])
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    fresh = PadacoModule(method="padaco", backbone=BACKBONE)
    fresh.on_load_checkpoint(ckpt)
    torch.testing.assert_close(fresh.source_weights, torch.tensor([0.5, 1.5]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown method"):
        PadacoModule(method="coral", backbone=BACKBONE)
    with pytest.raises(ValueError, match="cannot build timm backbone"):
        PadacoModule(backbone="no_such_net")
