"""PADACO on the synthetic partial shift, in miniature: it learns, and the method-vs-baseline claim.

Setting: the demo recipe (configs/demo/padaco.yaml: 64x64 crops, MobileNetV3-small-0.5, AdamW,
cosine): source = the world's 'source' domain (yaw +-90, labelled), target = its 'target' domain
(another style, yaw +-60, unlabelled). One cached set (SOURCE_SIZE source, TARGET_SIZE target,
VAL_SIZE source-val and TEST_SIZE target-test crops) serves every run; each run trains STEPS steps
of BATCH source + BATCH target crops; stage 1 (source only) is the first epoch; the final model is
scored on the target test crops (never used for selection). The seed sets the initialisation and
the flip stream.

Baseline: the best constant predictor of the target test labels (their per-angle median, an
oracle no image-blind model can beat: 17.56 degrees here). PADACO must reach MARGIN times its MAE.

The claim (PADACO's target MAE below source-only's) did NOT hold at this budget when this test was
written (target MAE, seed 0: source-only 12.19, PADACO 12.74; full table over seeds and all four
methods in the README, section "Head pose"), so CLAIM_HOLDS is False and the test asserts only
that PADACO learns; with CLAIM_HOLDS it also trains source-only and asserts the direction.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from datamodules.padaco import PadacoDataModule, dataset_poses
from facelit.metrics.headpose import pose_mae
from lightning_modules.padaco import PadacoModule

SOURCE_SIZE = 3200
TARGET_SIZE = 1600
VAL_SIZE = 300
TEST_SIZE = 600
BATCH = 32
IMAGE_SIZE = 64
STEPS = 500
SEEDS = (0,)
BACKBONE = "mobilenetv3_small_050"
MARGIN = 0.8
CLAIM_HOLDS = False


def make_datamodule() -> PadacoDataModule:
    dm = PadacoDataModule(
        image_size=IMAGE_SIZE,
        batch_size=BATCH,
        target_batch_size=BATCH,
        val_batch_size=100,
        num_workers=0,
        synth_source_size=SOURCE_SIZE,
        synth_target_size=TARGET_SIZE,
        synth_val_size=VAL_SIZE,
        synth_test_size=TEST_SIZE,
        synth_cache=True,
        seed=0,
    )
    dm.setup("fit")
    dm.setup("test")
    return dm


def constant_baseline(dm: PadacoDataModule) -> float:
    """Target test MAE (ypr, mean of angles) of the per-angle median of the target test labels."""
    labels = dataset_poses(dm.test_set)
    return pose_mae(labels.median(0).values.expand_as(labels).clone(), labels)["mean"]


def train_and_score(
    dm: PadacoDataModule, method: str, seed: int, steps: int = STEPS, root: str | None = None
) -> dict:
    """Train ``method`` ``steps`` steps from ``seed``; target test and source val MAE of the final model."""
    pl.seed_everything(seed, workers=True)
    module = PadacoModule(
        method=method,
        backbone=BACKBONE,
        adapt_epoch=1,
        num_neighbours=10,
        lr=0.002,
        weight_decay=1e-4,
        scheduler="cosine",
        warmup_steps=30,
    )
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1000,
        max_epochs=1000,
        default_root_dir=root,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    trainer.validate(module, datamodule=dm, verbose=False)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {
        "method": method,
        "seed": seed,
        "steps": steps,
        "target_test_mae": test["test/target/mae"],
        "target_test_mae_pyr": test["test/target/mae_pyr"],
        "source_val_mae": val["val/source/mae"],
        "weights_nonzero": None
        if module.source_weights is None
        else float((module.source_weights > 0).float().mean()),
    }


@pytest.fixture(scope="module")
def datamodule() -> PadacoDataModule:
    torch.set_num_threads(1)
    return make_datamodule()


@pytest.mark.slow
def test_padaco_learns_and_claim_where_it_holds(datamodule, tmp_path):
    baseline = constant_baseline(datamodule)
    methods = ("padaco", "source_only") if CLAIM_HOLDS else ("padaco",)
    results = {m: [train_and_score(datamodule, m, s, root=str(tmp_path)) for s in SEEDS] for m in methods}
    for method, runs in results.items():
        for r in runs:
            print(
                f"{method} seed {r['seed']}: target MAE {r['target_test_mae']:.2f} "
                f"(pyr {r['target_test_mae_pyr']:.2f}), "
                f"source val {r['source_val_mae']:.2f}; constant oracle {baseline:.2f}"
            )
            assert r["target_test_mae"] < MARGIN * baseline, (method, r, baseline)
    if CLAIM_HOLDS:
        mean = {m: sum(r["target_test_mae"] for r in runs) / len(runs) for m, runs in results.items()}
        assert mean["padaco"] < mean["source_only"], mean
