"""The heatmap-vs-regression landmark head ablation in miniature, over several seeds.

The setting of tests/learning/test_landmarks_learning.py (the 300W-LP demo recipe on one cached set
of synthetic 64x64 crops, a fixed budget of steps, ResNet-18, Wing loss; the heatmap head with a
deconvolution width chosen so that both heads cost about the same per step), run for each head and
each seed (initialisation and augmentation stream); the same data in every run. Prints one JSON
object: per head and seed the inter-ocular validation NME, the per-head means, the seeds where
regression is ahead, and the mean-shape predictor's NME on the same crops. Usage::

    OMP_NUM_THREADS=1 python benchmarks/landmark_head_ablation.py [--steps 200] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.learning.test_landmarks_learning import STEPS, mean_shape_nme, shared_data, train_nme  # noqa: E402

HEADS = ("regression", "heatmap")


def run(steps: int, seeds: list[int]) -> dict:
    """NME per head and seed after ``steps`` steps, the means and the mean shape's NME."""
    runs: dict[str, dict[int, float]] = {head: {} for head in HEADS}
    with tempfile.TemporaryDirectory() as tmp:
        data = shared_data(Path(tmp))
        baseline = mean_shape_nme(data)
        for seed in seeds:
            for head in HEADS:
                runs[head][seed] = round(float(train_nme(Path(tmp), data, head, seed, steps)), 4)
                line = {"head": head, "seed": seed, "nme": runs[head][seed]}
                print(json.dumps(line), file=sys.stderr, flush=True)
    mean = {head: round(sum(r.values()) / len(r), 4) for head, r in runs.items()}
    wins = sum(runs["regression"][s] < runs["heatmap"][s] for s in seeds)
    return {"steps": steps, "seeds": seeds, "runs": runs, "mean": mean,
            "seeds_where_regression_wins": wins, "mean_shape": round(baseline, 4)}  # fmt: skip


def cli_main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = parser.parse_args(argv)
    out = run(a.steps, a.seeds)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    cli_main()
