"""The CDP pipeline runs every stage end to end on a tiny synthetic world, writes each stage's
outputs, skips a stage whose outputs exist and reruns it on --force."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from cdp_pipeline import METHODS, parse_args, run_pipeline  # noqa: E402

TINY = [
    "--data.init_args.synth_identities=40",
    "--data.init_args.synth_world_size=120",
    "--data.init_args.held_out_fraction=0.5",
    "--data.init_args.synth_eval_size=150",
    "--data.init_args.synth_eval_identities=30",
    "--data.init_args.synth_pairs_per_fold=1",
    "--data.init_args.batch_size=4",
    "--trainer.max_steps=2",
]


@pytest.mark.slow
def test_pipeline_end_to_end_and_rerun(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--out", str(out), "--committee", "c1:seed=1", "-k", "3", "--threshold", "0", "--max-size", "20"]
    run, stages = parse_args([*args, "--", *TINY])
    run.progress = False
    report = run_pipeline(run, stages)
    for name in ("base", "c1", "retrain", "all_labels"):
        assert (out / "models" / f"{name}.ckpt").is_file()
        assert 0.0 <= json.loads((out / "models" / f"{name}.json").read_text())["test/accuracy"] <= 1.0
    gt = np.loadtxt(out / "features" / "unlabelled_labels.txt", dtype=np.int64)
    features = np.load(out / "features" / "c1_unlabelled.npy")
    assert (
        features.shape[0] == len(gt)
        and np.load(out / "features" / "base_labelled.npy").shape[1] == features.shape[1]
    )
    pairs, scores = np.load(out / "mediator" / "pairs.npy"), np.load(out / "mediator" / "scores.npy")
    assert len(pairs) == len(scores) and ((scores >= 0) & (scores <= 1)).all()
    for method in METHODS:
        labels = np.loadtxt(out / "pseudo" / f"{method}.txt", dtype=np.int64)
        assert len(labels) == len(gt) and (out / "pseudo" / f"{method}_threshold.png").is_file()
        assert set(report["pseudo"][method]) >= {
            "pairwise_fscore",
            "bcubed_fscore",
            "nmi",
            "labelled_fraction",
        }
    assert set(report["verification"]) == {"retrain", "all_labels", "labelled_only", "gap_closed"}

    stamps = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*.ckpt")}
    run, _ = parse_args([*args, "--force", "retrain", "--", *TINY])
    run.progress = False
    run_pipeline(run, ["train", "retrain"])
    changed = {p.stem for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert changed == {"retrain"}  # existing outputs are reused, the forced stage is recomputed
