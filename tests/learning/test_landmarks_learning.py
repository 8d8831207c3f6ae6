"""Landmark regression learns on the synthetic world, and the heatmap-vs-regression ablation in
miniature.

Setting: the demo recipe (configs/demo/landmarks_300wlp.yaml: 64x64 crops of the moderate-pose
'target' domain, ResNet-18, Wing loss, AdamW, cosine) at a fixed budget of STEPS steps of BATCH
crops, on one cached set of TRAIN_SIZE training and VAL_SIZE validation crops, for each head and
each seed of SEEDS (the seed sets the initialisation and the augmentation stream). The heatmap head
uses HEATMAP_CHANNELS deconvolution channels, so that both heads cost about the same per step.

Baseline: the mean-shape predictor (the mean training shape for every image: the strongest
image-blind predictor), scored with the same inter-ocular NME on the same validation crops.
The regression head (the recipe) must reach NME below MARGIN times the mean shape's for every seed:
a predictor that ignores the image cannot get there. The heatmap head must beat the mean shape.
Measured: mean shape 0.3346; regression 0.2299 / 0.2324 (seeds 0 / 1), about 0.70x; heatmap 0.2912
(seed 0, about 0.87x). The ablation's direction (regression ahead at this budget) is asserted on
seed 0: it held on every seed of ``benchmarks/landmark_head_ablation.py`` (seeds 0, 1, 2:
regression 0.2299 / 0.2324 / 0.2385, heatmap 0.2912 / 0.3061 / 0.2803, same data and budget). The
heatmap head runs for one seed only here, to keep the test near its time budget (the three runs
took 248 s on the otherwise idle 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cli import main
from facelit.metrics.landmarks import LandmarkMetrics
from facelit.nets.landmark_net import mean_shape
from tests.support import budget_args

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo" / "landmarks_300wlp.yaml"
STEPS = 200
BATCH = 32
WARMUP = 20
TRAIN_SIZE = 1000
VAL_SIZE = 128
SEEDS = {"regression": (0, 1), "heatmap": (0,)}  # the recipe's head over two seeds; the heatmap head once
HEADS = tuple(SEEDS)
HEATMAP_CHANNELS = 64
MARGIN = 0.75


def demo_cli(tmp_path: Path, head: str, seed: int, steps: int = STEPS):
    """The demo recipe for ``head`` from ``seed``, budgeted to ``steps`` steps of BATCH crops (not run)."""
    args = [
        "--config", str(DEMO), f"--seed_everything={seed}", *budget_args(steps, tmp_path),
        f"--model.init_args.head={head}", f"--model.init_args.head_channels={HEATMAP_CHANNELS}",
        f"--model.init_args.warmup_steps={WARMUP}",
        "--data.init_args.num_workers=0", f"--data.init_args.batch_size={BATCH}",
        f"--data.init_args.synth_train_size={TRAIN_SIZE}", f"--data.init_args.synth_val_size={VAL_SIZE}",
    ]
    return main(args, run=False)


def mean_shape_nme(datamodule) -> float:
    """Inter-ocular NME on the validation crops of predicting the mean training shape everywhere."""
    train = datamodule.train_set.dataset  # the cached crops under the augmentation wrapper
    points = torch.stack([train[i]["landmarks"] for i in range(len(train))])
    visible = torch.stack([train[i]["landmarks_visible"] for i in range(len(train))])
    shape = mean_shape(points, visible)
    val = [datamodule.val_set[i] for i in range(len(datamodule.val_set))]
    target = torch.stack([s["landmarks"] for s in val])
    metric = LandmarkMetrics("inter_ocular", "ibug68")
    metric.update(shape.expand_as(target), target, torch.stack([s["landmarks_visible"] for s in val]))
    return float(metric.compute()["nme"])


def shared_data(tmp: Path):
    """One cached crop set, set up for fitting, that every run trains and validates on."""
    data = demo_cli(tmp, "regression", 0).datamodule  # one cached set for every run
    data.setup("fit")
    return data


def train_nme(tmp: Path, data, head: str, seed: int, steps: int = STEPS) -> float:
    """Validation NME after ``steps`` steps of ``head`` from seed ``seed``."""
    cli = demo_cli(tmp / f"{head}{seed}", head, seed, steps)
    pl.seed_everything(seed, workers=True)
    cli.trainer.fit(cli.model, data)
    nme = cli.trainer.validate(cli.model, data, verbose=False)[0]["val/nme"]
    print(f"\nlandmarks {head} seed {seed}: val NME {nme:.4f}", flush=True)
    return nme


@pytest.fixture(scope="module")
def ablation(tmp_path_factory) -> dict:
    """NME after STEPS steps for every (head, seed), and the mean shape's NME."""
    tmp = tmp_path_factory.mktemp("landmarks")
    data = shared_data(tmp)
    results = {"mean_shape": mean_shape_nme(data)}
    for head in HEADS:
        for seed in SEEDS[head]:
            results[head, seed] = train_nme(tmp, data, head, seed)
    print(f"\nlandmarks, {STEPS} steps x {BATCH} crops: mean shape NME {results['mean_shape']:.4f}; "
          + "; ".join(f"{h} seed {s}: {results[h, s]:.4f}" for h in HEADS for s in SEEDS[h]))
    return results


@pytest.mark.slow
def test_regression_beats_the_mean_shape_by_a_margin(ablation: dict):
    for seed in SEEDS["regression"]:
        assert ablation["regression", seed] < MARGIN * ablation["mean_shape"], (seed, ablation)


@pytest.mark.slow
def test_heatmap_head_beats_the_mean_shape(ablation: dict):
    for seed in SEEDS["heatmap"]:
        assert ablation["heatmap", seed] < ablation["mean_shape"], (seed, ablation)


@pytest.mark.slow
def test_regression_head_ahead_of_the_heatmap_head(ablation: dict):
    """The paper-style ablation at this budget: the direction that held over three seeds."""
    for seed in set(SEEDS["heatmap"]) & set(SEEDS["regression"]):
        assert ablation["regression", seed] < ablation["heatmap", seed], (seed, ablation)
