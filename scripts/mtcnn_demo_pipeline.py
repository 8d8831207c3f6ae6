"""Train the MTCNN cascade on the synthetic world, P-Net -> R-Net -> O-Net, and evaluate it.

    python scripts/mtcnn_demo_pipeline.py --out logs/mtcnn_pipeline

Each stage is ``python cli.py fit --config configs/demo/mtcnn_<stage>.yaml`` with the earlier
stages' last checkpoints as ``data.init_args.detector_ckpt`` (hard-sample mining); the mined samples
are cached under ``<out>/cache`` (a rerun reuses them). The cascade of the three last checkpoints
(never selected on the evaluation scenes) is then run on synthetic validation scenes: the JSON
printed at the end gives each stage's val recall/precision on its crops, the cascade's WIDER-protocol
AP and the per-stage recall and candidates kept; ``<out>/cascade_stages.png`` shows the boxes each
stage keeps on three of the scenes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STAGES = ("pnet", "rnet", "onet")


def train_stage(stage: str, out: Path, earlier: list[str], overrides: list[str]) -> dict[str, Any]:
    """Fit one stage from its demo config; returns its last checkpoint and final val metrics."""
    from cli import main

    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "demo" / f"mtcnn_{stage}.yaml"),
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--data.init_args.cache_dir={out / 'cache'}",
        *overrides,
    ]
    if earlier:
        args.append(f"--data.init_args.detector_ckpt=[{', '.join(earlier)}]")
    cli = main(args)
    metrics = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    return {
        "ckpt": cli.trainer.checkpoint_callback.last_model_path,
        **{k: round(float(v), 4) for k, v in metrics.items() if k.startswith("val/")},
    }


def evaluate(
    ckpts: list[str],
    seed: int,
    scenes: int,
    size: int,
    max_faces: int,
    preset: str,
    overlay: Path | None = None,
) -> dict[str, float]:
    """Cascade figures of the trained nets on ``scenes`` synthetic scenes (the val seed, seed + 1);
    with ``overlay``, a PNG of each stage's surviving boxes on the first three scenes."""
    import torch

    from facelit.metrics.mtcnn import evaluate_cascade
    from facelit.nets.mtcnn import load_stage
    from facelit.nets.mtcnn_cascade import get_preset
    from facelit.synth import SceneDataset

    nets = [load_stage(c, s) for c, s in zip(ckpts, STAGES, strict=False)]
    nets += [None] * (3 - len(nets))
    data = SceneDataset(seed=seed + 1, length=scenes, height=size, width=size, max_faces=max_faces)
    with torch.no_grad():
        report = evaluate_cascade(tuple(nets), (data[i] for i in range(len(data))), get_preset(preset))
    if overlay is not None:
        stage_overlays(nets, [data[i] for i in range(min(3, len(data)))], get_preset(preset), overlay)
    return {k: round(v, 4) for k, v in report.items()}


def stage_overlays(nets: list, scenes: list[dict[str, Any]], settings: Any, path: Path) -> None:
    """One row per scene: the boxes surviving P-Net, R-Net and O-Net (green) over the faces (red)."""
    import torch
    from PIL import Image

    from facelit.nets.mtcnn_cascade import detect_faces
    from facelit.viz import draw_overlay, grid

    tiles = []
    with torch.no_grad():
        for scene in scenes:
            _, stages = detect_faces(scene["image"][None], *nets, settings=settings, return_stages=True)
            for name in ("pnet", "rnet", "onet"):
                if name in stages:
                    items = {"boxes": stages[name][0]["boxes"], "gt_boxes": scene["boxes"]}
                    tiles.append(draw_overlay(scene["image"], items))
    Image.fromarray(grid(tiles, columns=len(tiles) // max(1, len(scenes)))).save(path)


def run_pipeline(
    out: Path,
    steps: tuple[int, int, int] | None = None,
    overrides: list[str] | None = None,
    eval_scenes: int = 60,
    seed: int = 0,
    size: int = 256,
    max_faces: int = 12,
    preset: str = "default",
) -> dict[str, Any]:
    """Train the three stages in order and evaluate the cascade; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    ckpts: list[str] = []
    for i, stage in enumerate(STAGES):
        extra = list(overrides or []) + [f"--seed_everything={seed}", f"--data.init_args.seed={seed}"]
        if steps is not None:
            extra.append(f"--trainer.max_steps={steps[i]}")
        report[stage] = train_stage(stage, out / stage, list(ckpts), extra)
        ckpts.append(report[stage]["ckpt"])
    report["cascade"] = evaluate(
        ckpts, seed, eval_scenes, size, max_faces, preset, out / "cascade_stages.png"
    )
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="logs/mtcnn_pipeline")
    parser.add_argument("--steps", type=int, nargs=3, default=None, help="max_steps of P, R and O-Net")
    parser.add_argument("--eval-scenes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="default")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="extra CLI overrides for every stage, e.g. --model.init_args.keep_ratio=1.0 (after --)",
    )
    args = parser.parse_args(argv)
    report = run_pipeline(
        Path(args.out),
        tuple(args.steps) if args.steps else None,
        args.overrides,
        args.eval_scenes,
        args.seed,
        preset=args.preset,
    )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
