"""Tiny-face GAN LightningModule: manual optimisation (warm-up, both players), exact resume,
re-scoring predict writing an official submission, and the LR | bicubic | G1 | G2 | HR grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch

from callbacks.tinyface import COLUMNS, SuperResolutionGrid, sr_grid
from datamodules.tinyface import TinyFaceDataModule
from facelit.datasets.proposal_crops import read_proposals
from facelit.metrics.widerface import read_predictions, write_detection_results
from lightning_modules.tinyface_gan import TinyFaceGANModule

HR = 32
SCENE = 64


def _module(**overrides) -> TinyFaceGANModule:
    kwargs = dict(
        g_channels=8,
        g_upsample_blocks=1,
        g_refine_blocks=1,
        g_deconv_channels=8,
        g_residual=True,
        d_widths=(4, 8, 8, 8, 8),
        d_convs_per_stage=(1, 1, 1, 1, 1),
        lr=1e-3,
        d_lr=1e-3,
        scheduler="cosine",
        pixel_warmup_steps=1,
        grad_clip=1.0,
        alpha=0.01,
        beta=0.01,
    )
    kwargs.update(overrides)
    return TinyFaceGANModule(**kwargs)


def _data(**overrides) -> TinyFaceDataModule:
    kwargs = dict(
        hr_size=HR,
        synth_scene_size=SCENE,
        synth_max_faces=3,
        synth_train_size=4,
        synth_val_size=2,
        crops_per_image=4,
        min_crop_size=6,
        batch_size=2,
        num_workers=0,
        synth_cache=True,
        seed=0,
    )
    kwargs.update(overrides)
    return TinyFaceDataModule(**kwargs)


class _Record(pl.Callback):
    """Losses of every training batch: (global step before it, G total, D total or None)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float | None]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        m = trainer.callback_metrics
        d = m.get("train/d_total")
        self.rows.append(
            (
                int(pl_module.batches_seen),
                float(m["train/loss"]),
                None if d is None or int(pl_module.batches_seen) <= 1 else float(d),
            )
        )


def _trainer(root: Path, epochs: int, callbacks: list) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
        callbacks=callbacks,
        deterministic=True,
    )


def test_warmup_then_both_players_and_exact_resume(tmp_path: Path):
    pl.seed_everything(0)
    record = _Record()
    ckpt = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1, filename="{epoch}"
    )
    module = _module()
    d_before = [p.detach().clone() for p in module.discriminator.parameters()]
    trainer = _trainer(tmp_path, 3, [record, ckpt])
    trainer.fit(module, datamodule=_data())
    # 3 epochs x 2 batches; the first batch is the pixel-only warm-up (G only), the others step both
    assert int(module.batches_seen) == 6 and trainer.global_step == 1 + 2 * 5
    assert any(
        not torch.equal(a, b) for a, b in zip(d_before, module.discriminator.parameters(), strict=True)
    )

    pl.seed_everything(123)  # a different global RNG state: the resumed run must not depend on it
    resumed_record = _Record()
    resumed = _module()
    trainer2 = _trainer(tmp_path / "resumed", 3, [resumed_record])
    trainer2.fit(resumed, datamodule=_data(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    assert [r[0] for r in resumed_record.rows] == [3, 4, 5, 6]
    assert resumed_record.rows == record.rows[2:]  # the same losses, bit for bit
    for a, b in zip(module.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    for s1, s2 in zip(trainer.lr_scheduler_configs, trainer2.lr_scheduler_configs, strict=True):
        assert s1.scheduler.state_dict() == s2.scheduler.state_dict()


def test_pixel_warmup_leaves_discriminator_untouched(tmp_path: Path):
    pl.seed_everything(0)
    module = _module(pixel_warmup_steps=100)
    d_before = [p.detach().clone() for p in module.discriminator.parameters()]
    g_before = [p.detach().clone() for p in module.generator.parameters()]
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=_data())
    assert trainer.global_step == 2 and int(module.batches_seen) == 2  # G steps only
    assert all(torch.equal(a, b) for a, b in zip(d_before, module.discriminator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, module.generator.parameters(), strict=True))


def test_validation_logs_sr_and_discriminator_metrics_and_grid(tmp_path: Path):
    pl.seed_everything(0)
    module = _module()
    logger = pl.loggers.CSVLogger(tmp_path)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[SuperResolutionGrid(num_crops=3)],
    )
    trainer.validate(module, datamodule=_data())
    metrics = trainer.callback_metrics
    for key in ("psnr_bicubic", "psnr_g1", "psnr_g2", "ssim_g2", "d_face_acc", "d_face_ap", "d_real_acc"):
        assert torch.isfinite(metrics[f"val/{key}"]), key
    grids = list(Path(logger.log_dir).glob("images/val_sr_grid/*.png"))
    assert len(grids) == 1
    lr, hr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)
    image = sr_grid(lr, {"bicubic": hr, "g1": hr, "g2": hr}, hr)
    assert image.shape[1] == len(COLUMNS) * (16 + 2) + 2 and image.shape[0] == 2 * (16 + 2) + 2


def test_predict_rescores_small_proposals_and_writes_a_submission(tmp_path: Path):
    """Detector proposals on the synthetic val scenes (file-name order = scene order) in, a new
    submission with only the small proposals' scores changed out, AP before/after reported."""
    data = _data(synth_val_size=3, rescore_below=20)
    data.setup("validate")
    scenes = data._images("val")
    det_dir, out_dir = tmp_path / "det", tmp_path / "out"
    results = []
    for i in range(len(scenes)):
        faces = scenes[i]["boxes"]
        boxes = torch.cat([faces, torch.tensor([[1.0, 1.0, 11.0, 11.0], [2.0, 30.0, 40.0, 62.0]])])
        results.append(
            {
                "event": "images",
                "file": f"{i:06d}_000",
                "boxes": boxes,
                "scores": torch.linspace(0.9, 0.1, boxes.shape[0]),
            }
        )
    write_detection_results(det_dir, results)
    data.predict_proposals_dir = str(det_dir)
    pl.seed_everything(0)
    module = _module(predict_dir=str(out_dir), fusion="replace")
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    outputs = trainer.predict(module, datamodule=data)
    assert len(outputs) == 3
    before, after = read_proposals(det_dir), read_proposals(out_dir)
    assert len(read_predictions(out_dir)) == 3
    for key, old in before.items():
        new = after[key]
        small = (old.boxes[:, 2:] - old.boxes[:, :2]).max(1).values < 20
        assert torch.equal(new.boxes, old.boxes)
        assert torch.equal(new.scores[~small], old.scores[~small])
        assert not torch.equal(new.scores[small], old.scores[small])
    report = json.loads((out_dir / "rescore_ap.json").read_text())
    assert set(report) >= {"before_ap_hard", "after_ap_hard", "before_ap_easy"}
    assert json.dumps(report) == json.dumps(module.rescore_report)  # NaN where a setting keeps no face


def test_bf16_autocast_trains_both_players(tmp_path: Path):
    pl.seed_everything(0)
    module = _module(pixel_warmup_steps=1)
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        precision="bf16-mixed",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=_data())
    assert trainer.global_step == 3 and int(module.batches_seen) == 2  # warm-up G, then G + D
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in module.parameters())
