"""The RetinaFace paper's landmark ablation in miniature: landmark supervision vs box-only.

Deng et al. 2020, table 3: adding the five-landmark loss (weight 0.1) to box + classification
raises WIDER val AP (+0.4 / +0.6 / +0.6 on easy / medium / hard for ResNet-50). Here: the demo
configuration (MobileNet-0.25, 192x192 synthetic scenes, configs/demo/retinaface.yaml) trained for a
fixed number of steps on one cached scene set, with ``landmark_weight`` 0.1 (the paper) or 0
(box-only), over several training seeds (initialisation and augmentation draws); the same data in
every run. Prints one JSON object: per arm and seed the letterboxed WIDER AP (easy, medium, hard)
on the synthetic val scenes, the per-arm means, the mean difference, and the AP of the anchor-prior
predictor (tests/learning/test_retinaface_learning.py) on the same scenes. Usage::

    OMP_NUM_THREADS=1 python benchmarks/retinaface_landmark_ablation.py [--steps 300] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli import main  # noqa: E402
from tests.learning.test_retinaface_learning import prior_ap  # noqa: E402
from tests.support import budget_args  # noqa: E402

ARMS = {"landmarks": 0.1, "box_only": 0.0}
SETTINGS = ("easy", "medium", "hard")


def run(steps: int, seeds: list[int], size: int, train_scenes: int, val_scenes: int) -> dict:
    results: dict[str, dict[int, dict[str, float]]] = {arm: {} for arm in ARMS}
    datamodule = None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for arm, weight in ARMS.items():
                args = [
                    "--config", str(REPO / "configs" / "demo" / "retinaface.yaml"),
                    f"--seed_everything={seed}", f"--model.init_args.landmark_weight={weight}",
                    *budget_args(steps, tmp),
                    f"--data.init_args.image_size={size}", "--data.init_args.num_workers=0",
                    f"--data.init_args.synth_train_size={train_scenes}",
                    f"--data.init_args.synth_val_size={val_scenes}", "--data.init_args.synth_cache=true",
                ]  # fmt: skip
                cli = main(args, run=False)
                datamodule = datamodule or cli.datamodule  # one scene set, rendered once
                cli.trainer.fit(cli.model, datamodule)
                metrics = cli.trainer.validate(cli.model, datamodule, verbose=False)[0]
                results[arm][seed] = {s: round(float(metrics[f"val/ap_{s}@{size}"]), 4) for s in SETTINGS}
                line = {"arm": arm, "seed": seed, **results[arm][seed]}
                print(json.dumps(line), file=sys.stderr, flush=True)
        prior = prior_ap(cli.model, datamodule, size)
    mean = {arm: {s: round(sum(r[s] for r in runs.values()) / len(runs), 4) for s in SETTINGS}
            for arm, runs in results.items()}  # fmt: skip
    diff = {s: round(mean["landmarks"][s] - mean["box_only"][s], 4) for s in SETTINGS}
    wins = {s: sum(results["landmarks"][k][s] > results["box_only"][k][s] for k in seeds) for s in SETTINGS}
    return {"steps": steps, "seeds": seeds, "image_size": size, "runs": results, "mean": mean,
            "landmarks_minus_box_only": diff, "seeds_where_landmarks_win": wins,
            "anchor_prior": {s: round(prior[f"ap_{s}"], 4) for s in SETTINGS}}  # fmt: skip


def cli_main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--train-scenes", type=int, default=800)
    parser.add_argument("--val-scenes", type=int, default=48)
    a = parser.parse_args(argv)
    out = run(a.steps, a.seeds, a.image_size, a.train_scenes, a.val_scenes)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    cli_main()
