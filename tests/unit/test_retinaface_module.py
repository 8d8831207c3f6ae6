"""RetinaFaceModule: the recipe's thresholds as module arguments, letterboxed AP named for what it
is, the releases' landmark default, and the warning for a random backbone on real data."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl

from datamodules.wider_face import WiderFaceDataModule
from lightning_modules.retinaface import RetinaFaceModule


def test_thresholds_and_landmark_defaults_are_the_papers() -> None:
    plain = RetinaFaceModule(fpn_channels=8)
    assert plain.criterion.thresholds[0] == (0.5, 0.3)
    assert plain.criterion.low_quality_min_iou == 0.2 and not plain.criterion.use_visibility
    cascade = RetinaFaceModule(fpn_channels=8, cascade=True)
    assert cascade.criterion.thresholds == ((0.7, 0.3), (0.5, 0.4))
    custom = RetinaFaceModule(
        fpn_channels=8, cascade=True, match_thresholds=(0.6, 0.35), cascade_thresholds=(0.55, 0.45),
        low_quality_min_iou=0.0, use_visibility=True,
    )
    assert custom.criterion.thresholds == ((0.6, 0.35), (0.55, 0.45))
    assert custom.criterion.low_quality_min_iou == 0.0 and custom.criterion.use_visibility


def test_random_backbone_on_real_data_warns() -> None:
    model = RetinaFaceModule(fpn_channels=8)
    model._trainer = SimpleNamespace(datamodule=SimpleNamespace(synthetic=False))
    with pytest.warns(UserWarning, match="randomly initialised 'mnet0.25'"):
        model.setup("fit")
    model._trainer = SimpleNamespace(datamodule=SimpleNamespace(synthetic=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.setup("fit")  # the synthetic world: no warning


def test_validation_ap_is_named_by_its_letterbox_size(tmp_path: Path) -> None:
    model = RetinaFaceModule(fpn_channels=8, image_size=64)
    data = WiderFaceDataModule(image_size=64, synth_val_size=2, synth_max_faces=2, num_workers=0, val_batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    assert {"val/ap_easy@64", "val/ap_medium@64", "val/ap_hard@64"} <= set(metrics)
    assert not any(k in metrics for k in ("val/ap_easy", "val/ap_hard"))
