"""RED-Net's claims in miniature: temporal vs frame by frame, with and without the identity head,
NME per spatial step, over seeds at an equal step budget.

Each variant trains the demo net (configs/demo/rednet.yaml) with the learning test's recipe
(:func:`recipe_args`: AdamW at ``--lr`` 1e-2, ``--steps`` 600 steps of 2 clips x ``--clip-length`` 4
frames on ``--train-clips`` 150 cached synthetic clips of the ``video`` domain, yaw up to +-75
degrees, occluders), and reports the validation metrics after its last step (``--val-clips`` 16
clips), with the mean-shape predictor's NME on the same validation clips and the merged output's
ratio to it; a temporal run is validated a second time with its own weights run frame by frame
(``nme_run_frame_by_frame`` ...: the issue's "same model run frame by frame"). Prints one JSON
object (per run a line on stderr as it finishes). Each run is one single-threaded worker process;
``--jobs`` runs that many side by side. ``--mean-shape-by-yaw`` trains nothing and prints the
mean-shape predictor's NME per |yaw| bin of the validation frames. Usage::

    python benchmarks/rednet_claims.py [--steps 600] [--seeds 0 1 2] [--variants ...] [--jobs 2]
    python benchmarks/rednet_claims.py --mean-shape-by-yaw [--val-clips 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli import main  # noqa: E402
from facelit.metrics.video import VideoLandmarkMetrics, nme_per_frame  # noqa: E402
from facelit.nets.landmark_net import mean_shape  # noqa: E402
from tests.support import budget_args  # noqa: E402

DEMO = REPO / "configs" / "demo" / "rednet.yaml"
VARIANTS = {
    "temporal": ["--model.init_args.temporal=true", "--model.init_args.identity_head=true"],
    "frame_by_frame": ["--model.init_args.temporal=false", "--model.init_args.identity_head=true"],
    "no_identity_head": ["--model.init_args.temporal=true", "--model.init_args.identity_head=false"],
}
KEYS = (
    "nme",
    "nme_step1",
    "nme_step2",
    "nme_step3",
    "nme_detection",
    "nme_regression",
    "nme_occluded",
    "nme_unoccluded",
    "jitter",
    "jitter_occluded",
    "jitter_unoccluded",
)
# Re-measured with a temporal model's own weights run frame by frame (``<key>_run_frame_by_frame``).
RUN_ALONE_KEYS = ("nme", "nme_occluded", "nme_unoccluded", "jitter")
# The learning test's recipe (tests/learning/test_rednet_learning.py): lr 1e-2 was the best of
# 2e-3 / 5e-3 / 1e-2 in a search at this budget; 150 cached clips of 4 frames, 16 validation clips.
RECIPE = dict(steps=600, lr=0.01, warmup_steps=15, batch_size=2, clip_length=4, train_clips=150, val_clips=16)


def recipe_args(
    seed: int,
    root: Path,
    steps: int = RECIPE["steps"],
    lr: float = RECIPE["lr"],
    clip_length: int = RECIPE["clip_length"],
    train_clips: int = RECIPE["train_clips"],
    val_clips: int = RECIPE["val_clips"],
) -> list[str]:
    """CLI arguments of the demo config trained for ``steps`` steps with the short recipe."""
    return [
        "--config", str(DEMO), f"--seed_everything={seed}", *budget_args(steps, root),
        f"--model.init_args.lr={lr}", f"--model.init_args.warmup_steps={RECIPE['warmup_steps']}",
        "--data.init_args.num_workers=0", "--data.init_args.synth_cache=true",
        f"--data.init_args.batch_size={RECIPE['batch_size']}", f"--data.init_args.clip_length={clip_length}",
        f"--data.init_args.num_train_clips={train_clips}", f"--data.init_args.num_val_clips={val_clips}",
    ]  # fmt: skip


def demo_cli(root: Path, seed: int, variant: str, **recipe):
    return main([*recipe_args(seed, root, **recipe), *VARIANTS[variant]], run=False)


def _mean_shape_and_val(datamodule) -> tuple[torch.Tensor, list[dict]]:
    """The (K, 2) mean training shape and the validation samples."""
    train = datamodule.train_set.dataset
    shape = mean_shape(torch.cat([train[i]["landmarks"] for i in range(len(train))]))
    return shape, [datamodule.val_set[i] for i in range(len(datamodule.val_set))]


def mean_shape_nme(datamodule) -> float:
    """NME over the validation frames of predicting the mean training shape on every frame."""
    shape, val = _mean_shape_and_val(datamodule)
    target = torch.stack([s["landmarks"] for s in val])
    metric = VideoLandmarkMetrics("inter_ocular", "rednet7")
    metric.update(shape.expand_as(target), target, torch.stack([s["frame_mask"] for s in val]))
    return float(metric.compute()["nme"])


YAW_EDGES = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)


def mean_shape_by_yaw(datamodule, edges: tuple[float, ...] = YAW_EDGES) -> dict[str, dict[str, float]]:
    """The mean-shape predictor's inter-ocular NME on the validation frames, per |yaw| bin (degrees):
    ``{"lo-hi": {"frames": n, "nme": mean, "inter_ocular_px": mean normaliser}}``. Shows how the
    normaliser (outer eye corners) shrinks towards profile views and inflates every NME there."""
    shape, val = _mean_shape_and_val(datamodule)
    target = torch.stack([s["landmarks"] for s in val])  # (B, T, K, 2)
    mask = torch.stack([s["frame_mask"] for s in val])
    yaw = torch.stack([s["pose"][..., 0] for s in val]).abs()  # (B, T)
    frame = nme_per_frame(shape.expand_as(target), target, mask, "inter_ocular", "rednet7")
    inter_ocular = (shape - target).norm(dim=-1).mean(-1) / frame  # the normaliser, in pixels
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = mask & (yaw >= lo) & (yaw < hi)
        if sel.any():
            out[f"{lo:g}-{hi:g}"] = {
                "frames": int(sel.sum()),
                "nme": round(float(frame[sel].mean()), 4),
                "inter_ocular_px": round(float(inter_ocular[sel].mean()), 2),
            }
    return out


def temporal_shares(module, datamodule) -> dict[str, float]:
    """How much the temporal pathway changes the bottleneck code on the validation clips (temporal
    mode, every spatial step), as ratios of Frobenius norms averaged over batches and steps:
    ``lstm_residual_share`` = |LSTM residual added to the pose half| / |pose half|, and
    ``identity_shift_share`` = |running clip mean of the identity half - the frame's own| / |own|."""
    bottleneck = module.net.bottleneck
    half = bottleneck.half
    lstm, ident = [], []

    def hook(_mod, args, output):
        code, used = args[0], output[0]
        lstm.append(float((used[:, :, half:] - code[:, :, half:]).norm() / code[:, :, half:].norm()))
        ident.append(float((used[:, :, :half] - code[:, :, :half]).norm() / code[:, :, :half].norm()))

    handle = bottleneck.register_forward_hook(hook)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                module(batch["image"], batch["frame_mask"])
    finally:
        handle.remove()
        module.train(was_training)
    return {
        "lstm_residual_share": round(sum(lstm) / len(lstm), 4),
        "identity_shift_share": round(sum(ident) / len(ident), 4),
    }


def train_and_validate(seed: int, variant: str, root: str, **recipe) -> dict[str, float]:
    """One run on one thread: the validation metrics (``KEYS``), ``mean_shape`` (the mean-shape
    predictor's NME on the same clips) and ``merged_vs_mean_shape``."""
    torch.set_num_threads(1)
    cli = demo_cli(Path(root), seed, variant, **recipe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    result = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    scores = {k: round(float(result[f"val/{k}"]), 4) for k in KEYS if f"val/{k}" in result}
    if cli.model.temporal:
        # The same trained weights run frame by frame (LSTM restarted at every frame, each frame's
        # own identity code): how much of the temporal model's output depends on the carried state.
        cli.model.temporal = False
        alone = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
        cli.model.temporal = True
        scores.update({f"{k}_run_frame_by_frame": round(float(alone[f"val/{k}"]), 4) for k in RUN_ALONE_KEYS})
        scores.update(temporal_shares(cli.model, cli.datamodule))
    scores["mean_shape"] = round(mean_shape_nme(cli.datamodule), 4)
    scores["merged_vs_mean_shape"] = round(scores["nme"] / scores["mean_shape"], 3)
    return scores


def run_side_by_side(
    jobs: list[tuple[int, str]], root: Path, workers: int, **recipe
) -> list[dict[str, float]]:
    """``train_and_validate`` for each (seed, variant), ``workers`` fresh processes at a time
    (spawned: no thread pool state is inherited), results in the order of ``jobs``."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(train_and_validate, seed, variant, str(root / f"{variant}_{seed}"), **recipe)
            for seed, variant in jobs
        ]
        results = []
        for (seed, variant), future in zip(jobs, futures, strict=True):
            results.append(future.result())
            print(json.dumps({"variant": variant, "seed": seed, **results[-1]}), file=sys.stderr, flush=True)
    return results


def run(seeds: list[int], variants: list[str], workers: int = 1, **recipe) -> dict:
    jobs = [(seed, variant) for seed in seeds for variant in variants]
    runs: dict[str, dict[int, dict[str, float]]] = {v: {} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for (seed, variant), scores in zip(
            jobs, run_side_by_side(jobs, Path(tmp), workers, **recipe), strict=True
        ):
            runs[variant][seed] = scores
    return {**recipe, "seeds": seeds, "runs": runs}


def cli_main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    parser.add_argument("--lr", type=float, default=RECIPE["lr"])
    parser.add_argument("--clip-length", type=int, default=RECIPE["clip_length"])
    parser.add_argument("--train-clips", type=int, default=RECIPE["train_clips"])
    parser.add_argument("--val-clips", type=int, default=RECIPE["val_clips"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one thread each)")
    parser.add_argument(
        "--mean-shape-by-yaw", action="store_true", help="only the mean-shape NME per |yaw| bin (no training)"
    )
    a = parser.parse_args(argv)
    if a.mean_shape_by_yaw:
        with tempfile.TemporaryDirectory() as tmp:
            cli = demo_cli(Path(tmp), a.seeds[0], "temporal", clip_length=a.clip_length,
                           train_clips=a.train_clips, val_clips=a.val_clips)  # fmt: skip
            cli.datamodule.setup("fit")
            out = {
                "mean_shape_by_yaw": mean_shape_by_yaw(cli.datamodule),
                "mean_shape": mean_shape_nme(cli.datamodule),
            }
        print(json.dumps(out), flush=True)
        return out
    out = run(
        a.seeds,
        a.variants,
        a.jobs,
        steps=a.steps,
        lr=a.lr,
        clip_length=a.clip_length,
        train_clips=a.train_clips,
        val_clips=a.val_clips,
    )
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    cli_main()
