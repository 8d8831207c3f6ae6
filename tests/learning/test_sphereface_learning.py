"""SphereFace learns identities that transfer to unseen people, on the synthetic world.

Setting: the demo module and datamodule (configs/demo/sphereface.yaml: A-Softmax m = 4 with the
official lambda annealing, aligned 56x48 crops) with a smaller budget: SphereFace-4 at half
width, a 128-d embedding, AdamW, STEPS steps of BATCH crops from TRAIN_IDENTITIES identities.
Verification (the LFW 10-fold protocol, flip features) on pairs of EVAL_IDENTITIES identities that
were never seen in training.

Baselines: chance (0.5: the pairs are balanced, the strongest predictor that ignores the images)
and the same network untrained (random features: how separable the synthetic identities are
without learning, measured at the same time). The trained net must beat both by MARGIN.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl

from cli import main
from tests.support import budget_args

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo" / "sphereface.yaml"
STEPS = 150
BATCH = 64
TRAIN_IDENTITIES = 100
TRAIN_SIZE = 1600
EVAL_IDENTITIES = 60
EVAL_SIZE = 600
PAIRS_PER_FOLD = 30
CHANCE = 0.5
MARGIN = 0.08


def _cli(tmp_path: Path, steps: int):
    args = [
        "--config",
        str(DEMO),
        "--seed_everything=0",
        *budget_args(steps, tmp_path),
        "--model.init_args.backbone=sphere4",
        "--model.init_args.width=0.5",
        "--model.init_args.embedding_dim=128",
        "--model.init_args.optimizer=adamw",
        "--model.init_args.lr=0.002",
        "--data.init_args.num_workers=0",
        f"--data.init_args.batch_size={BATCH}",
        f"--data.init_args.num_identities={TRAIN_IDENTITIES}",
        f"--data.init_args.synth_train_size={TRAIN_SIZE}",
        f"--data.init_args.synth_eval_identities={EVAL_IDENTITIES}",
        f"--data.init_args.synth_eval_size={EVAL_SIZE}",
        f"--data.init_args.synth_pairs_per_fold={PAIRS_PER_FOLD}",
    ]
    return main(args, run=False)


@pytest.mark.slow
def test_asoftmax_verifies_unseen_identities(tmp_path: Path) -> None:
    cli = _cli(tmp_path, STEPS)
    data = cli.datamodule
    data.setup("fit")
    pl.seed_everything(0, workers=True)
    untrained = cli.trainer.validate(cli.model, data, verbose=False)[0]["val/accuracy"]
    cli.trainer.fit(cli.model, data)
    trained = cli.trainer.validate(cli.model, data, verbose=False)[0]["val/accuracy"]
    print(f"sphereface verification on unseen identities: untrained {untrained:.4f}, trained {trained:.4f}")
    assert trained > max(CHANCE, untrained) + MARGIN
