"""The paper's OHEM claim in miniature: P-Net trained with online hard sample mining (back-propagate
the top 70 % of the classification losses) vs without (all of them), equal steps, several seeds.

    python benchmarks/mtcnn_ohem.py --seeds 0 1 2 --steps 400 --out /tmp/mtcnn_ohem

Both arms use the same mined synthetic samples (data seed 0, cached once) and differ only in
``keep_ratio`` and the training seed (initialisation, batch order). Each trained P-Net is scored
as a proposal stage on synthetic validation scenes (WIDER-protocol AP of its NMS-ed, calibrated
windows, and recall at IoU 0.5), plus its val recall/precision at probability 0.5 on the mined
val crops. Prints JSON: per run, and the mean per arm. (The paper reports +1.5 % on FDDB.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARMS = {"ohem_70": 0.7, "no_ohem": 1.0}


def run(seed: int, keep_ratio: float, steps: int, out: Path, scenes: int) -> dict[str, float]:
    import torch

    from cli import main
    from facelit.metrics.mtcnn import evaluate_cascade
    from facelit.nets.mtcnn_cascade import get_preset
    from facelit.synth import SceneDataset

    root = out / f"keep{keep_ratio}_seed{seed}"
    cli = main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "demo" / "mtcnn_pnet.yaml"),
            f"--seed_everything={seed}",
            f"--model.init_args.keep_ratio={keep_ratio}",
            f"--trainer.max_steps={steps}",
            "--trainer.max_time=null",
            "--trainer.val_check_interval=null",
            "--trainer.check_val_every_n_epoch=1000",
            "--trainer.max_epochs=1000",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            f"--data.init_args.cache_dir={out / 'cache'}",
            "--data.init_args.seed=0",
        ]
    )
    crops = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    net = cli.model.net.eval()
    data = SceneDataset(seed=1, length=scenes, height=256, width=256, max_faces=12)
    with torch.no_grad():
        report = evaluate_cascade((net, None, None), (data[i] for i in range(scenes)), get_preset("default"))
    return {
        "seed": seed,
        "keep_ratio": keep_ratio,
        "val_recall": round(float(crops["val/recall"]), 4),
        "val_precision": round(float(crops["val/precision"]), 4),
        **{k: round(v, 4) for k, v in report.items() if k.startswith(("ap_", "recall_", "candidates_"))},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--scenes", type=int, default=60, help="validation scenes for the proposal AP")
    parser.add_argument("--out", default="/tmp/mtcnn_ohem")
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        for arm, keep in ARMS.items():
            result = {"arm": arm, **run(seed, keep, args.steps, Path(args.out), args.scenes)}
            runs.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    summary = {}
    for arm in ARMS:
        rows = [r for r in runs if r["arm"] == arm]
        summary[arm] = {
            k: round(statistics.mean(r[k] for r in rows), 4)
            for k in rows[0]
            if k not in ("arm", "seed", "keep_ratio")
        }
    print(json.dumps({"steps": args.steps, "seeds": args.seeds, "runs": runs, "mean": summary}, indent=1))


if __name__ == "__main__":
    main()
