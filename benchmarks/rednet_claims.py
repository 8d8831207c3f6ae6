"""RED-Net's claims in miniature: temporal vs frame by frame, with and without the identity head,
NME per spatial step, over seeds at an equal step budget.

Each variant trains the demo recipe (configs/demo/rednet.yaml) for ``--steps`` steps of 2 clips x
8 frames on ``--train-clips`` cached synthetic clips of the ``video`` domain (yaw up to +-75
degrees, occluders), one process per run, and reports the validation metrics of its last step
(32 clips). Also reports the mean-shape predictor's NME on the same validation clips. Prints one
JSON object (per run a line on stderr as it finishes). The README's RED-Net table came from the same
overrides run through ``cli.py fit`` (validating at steps 200 and 400; 400 steps, seeds 0 and 1,
two runs at a time on the shared CPU). Usage::

    OMP_NUM_THREADS=1 python benchmarks/rednet_claims.py [--steps 400] [--seeds 0 1] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli import main  # noqa: E402
from facelit.metrics.video import VideoLandmarkMetrics  # noqa: E402
from facelit.nets.landmark_net import mean_shape  # noqa: E402
from tests.support import budget_args  # noqa: E402

DEMO = REPO / "configs" / "demo" / "rednet.yaml"
VARIANTS = {
    "temporal": ["--model.init_args.temporal=true", "--model.init_args.identity_head=true"],
    "frame_by_frame": ["--model.init_args.temporal=false", "--model.init_args.identity_head=true"],
    "no_identity_head": ["--model.init_args.temporal=true", "--model.init_args.identity_head=false"],
}
KEYS = ("nme_step1", "nme_step2", "nme_step3", "nme_detection", "nme_regression", "nme_occluded",
        "nme_unoccluded", "jitter")


def demo_cli(root: Path, seed: int, steps: int, train_clips: int, variant: str):
    args = [
        "--config", str(DEMO), f"--seed_everything={seed}", *budget_args(steps, root),
        "--data.init_args.num_workers=0", "--data.init_args.synth_cache=true",
        f"--data.init_args.num_train_clips={train_clips}", *VARIANTS[variant],
    ]  # fmt: skip
    return main(args, run=False)


def mean_shape_nme(datamodule) -> float:
    """NME over the validation frames of predicting the mean training shape on every frame."""
    train = datamodule.train_set.dataset
    shape = mean_shape(torch.cat([train[i]["landmarks"] for i in range(len(train))]))
    val = [datamodule.val_set[i] for i in range(len(datamodule.val_set))]
    target = torch.stack([s["landmarks"] for s in val])
    metric = VideoLandmarkMetrics("inter_ocular", "rednet7")
    metric.update(shape.expand_as(target), target, torch.stack([s["frame_mask"] for s in val]))
    return float(metric.compute()["nme"])


def run(steps: int, seeds: list[int], variants: list[str], train_clips: int) -> dict:
    runs: dict[str, dict[int, dict[str, float]]] = {v: {} for v in variants}
    baseline = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for variant in variants:
                cli = demo_cli(Path(tmp) / f"{variant}_{seed}", seed, steps, train_clips, variant)
                cli.trainer.fit(cli.model, datamodule=cli.datamodule)
                result = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
                if baseline != baseline:  # NaN: first run
                    baseline = mean_shape_nme(cli.datamodule)
                runs[variant][seed] = {k: round(float(result[f"val/{k}"]), 4) for k in KEYS if f"val/{k}" in result}
                print(json.dumps({"variant": variant, "seed": seed, **runs[variant][seed]}), file=sys.stderr,
                      flush=True)
    return {"steps": steps, "seeds": seeds, "runs": runs, "mean_shape": round(baseline, 4)}


def cli_main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train-clips", type=int, default=300)
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = run(a.steps, a.seeds, a.variants, a.train_clips)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    cli_main()
