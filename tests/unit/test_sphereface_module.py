"""SphereFace LightningModule: lambda is training state (checkpointed, resumed), predict gives features."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules.face_recognition import FaceRecognitionDataModule
from lightning_modules.sphereface import SphereFaceModule

SIZE = (32, 32)


def _data() -> FaceRecognitionDataModule:
    return FaceRecognitionDataModule(
        image_size=SIZE,
        num_identities=6,
        batch_size=4,
        num_workers=0,
        synth_train_size=8,
        synth_eval_identities=30,
        synth_eval_size=150,
        synth_pairs_per_fold=2,
        synth_cache=True,
    )


def _module() -> SphereFaceModule:
    return SphereFaceModule(
        backbone="sphere4",
        image_size=SIZE,
        num_identities=6,
        embedding_dim=8,
        width=0.125,
        optimizer="sgd",
        lr=0.01,
        scheduler="none",
    )


def _trainer(root: Path, steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True)],
    )


def test_lambda_advances_per_step_and_resumes(tmp_path: Path) -> None:
    data, module = _data(), _module()
    _trainer(tmp_path, 3).fit(module, data)
    assert int(module.criterion.iteration) == 3
    assert module.criterion.lambda_value == 1000.0 / (1 + 0.12 * 3)
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert int(ckpt["state_dict"]["criterion.iteration"]) == 3
    resumed = _module()
    _trainer(tmp_path, 5).fit(resumed, data, ckpt_path=str(tmp_path / "last.ckpt"))
    assert int(resumed.criterion.iteration) == 5


def test_validation_scores_pairs_and_predict_gives_flip_features(tmp_path: Path) -> None:
    data, module = _data(), _module()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    metrics = trainer.validate(module, data)[0]
    assert 0.0 <= metrics["val/accuracy"] <= 1.0 and "val/tar@far=1e-3" in metrics
    out = trainer.predict(module, data)
    features = torch.cat([o["features"] for o in out])
    assert features.shape == (150, 16)  # (f(img), f(flip(img))) of every test-set image
    assert torch.cat([o["index"] for o in out]).tolist() == list(range(150))


@pytest.mark.ddp
@pytest.mark.slow
def test_sharded_classifier_under_ddp_saves_the_full_classifier(tmp_path: Path) -> None:
    data, module = (
        _data(),
        SphereFaceModule(
            backbone="sphere4",
            image_size=SIZE,
            num_identities=6,
            embedding_dim=8,
            width=0.125,
            optimizer="sgd",
            lr=0.5,
            scheduler="none",
            shard_classifier=True,
        ),
    )
    before = module.criterion.weight.detach().clone()
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)],
    )
    trainer.fit(module, data)
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    weight = state["criterion.weight"]
    assert weight.shape == before.shape  # both shards gathered
    changed = (weight - before).abs().sum(dim=1) > 0
    assert changed[:3].any() and changed[3:].any()  # rank 0 holds classes 0-2, rank 1 classes 3-5
    assert int(state["criterion.iteration"]) == 2
