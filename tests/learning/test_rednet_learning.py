"""RED-Net learns from the images on synthetic video, measured against the mean-shape predictor.

Setting (a shortened demo recipe, configs/demo/rednet.yaml): 64x64 crops of 150 cached synthetic
clips of the ``video`` domain (yaw up to +-75 degrees, occluder passages), 4-frame clips, batches of
2 clips, 7 points, the narrow SegNet with three spatial steps, temporal recurrence and identity
head, AdamW at lr 1e-2 (the best of 2e-3 / 5e-3 / 1e-2 in a recipe search), STEPS steps, seed 0;
16 validation clips.

Baseline: the mean-shape predictor (the mean training shape on every frame, the strongest
image-blind predictor), inter-ocular NME on the same validation frames.

What is asserted, and what is not: the regression sub-network's output must fall below MARGIN x the
mean shape's NME (mean shape 0.403; regression 0.353 with 1 thread, 0.344 with 2 threads: 0.88x /
0.85x; 123 s / 92 s on the 2 cores; the margin is thin and the figure moves with the thread
count, so it is a floor, not a target). The MERGED output (detected point
where its confidence >= 0.5, else the regressed one) does NOT beat the mean shape at this budget
(0.390 / 0.395, 0.97-0.98x): the detection branch learns a confident position prior first, and the merge keeps
it. That, and the paper's temporal and spatial-step claims, are reported in the README, not asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from rednet_claims import mean_shape_nme  # noqa: E402

from cli import main  # noqa: E402
from tests.support import budget_args  # noqa: E402

DEMO = REPO / "configs" / "demo" / "rednet.yaml"
STEPS = 600
MARGIN = 0.9


@pytest.mark.slow
def test_rednet_regression_beats_the_mean_shape(tmp_path: Path):
    args = [
        "--config", str(DEMO), "--seed_everything=0", *budget_args(STEPS, tmp_path),
        "--model.init_args.lr=0.01", "--model.init_args.warmup_steps=15",
        "--data.init_args.num_workers=0", "--data.init_args.synth_cache=true",
        "--data.init_args.batch_size=2", "--data.init_args.clip_length=4",
        "--data.init_args.num_train_clips=150", "--data.init_args.num_val_clips=16",
    ]  # fmt: skip
    cli = main(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    result = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    baseline = mean_shape_nme(cli.datamodule)
    print(f"\nrednet: mean shape {baseline:.4f}, regression {result['val/nme_regression']:.4f}, "
          f"detection {result['val/nme_detection']:.4f}, merged {result['val/nme']:.4f}")  # fmt: skip
    assert result["val/nme_regression"] < MARGIN * baseline, (baseline, result)
