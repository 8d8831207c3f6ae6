"""The MTCNN cascade learns on the synthetic world: a bounded version of the demo pipeline
(scripts/mtcnn_demo_pipeline.py: P-Net -> R-Net on P-Net's hard samples -> O-Net on P+R's).

Here each stage trains ``STEPS`` steps on samples mined from ``TRAIN_SCENES`` 256x256 synthetic
scenes. Stated levels, with margins over the trivial predictor:

- each stage's face classifier on its mined val crops (positives and negatives, probability 0.5):
  recall >= ``MIN_RECALL`` and precision >= ``MIN_PRECISION``; calling every crop a face has
  recall 1 but precision = the positive share of the crops (1 positive per 3 negatives by the
  3:1:1:2 mix, at most 0.25 + what the mining adds), which the threshold exceeds by a wide margin;
- the cascade of the three trained nets on 30 synthetic val scenes: WIDER-protocol AP easy >=
  ``MIN_AP_EASY`` (a detector that has not learnt scores ~0).

Measured while writing this test (2 shared cores): see the print; the figures of the full demo
are in the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest

STEPS = (250, 200, 150)
TRAIN_SCENES = 50
MIN_RECALL = 0.6
MIN_PRECISION = 0.6
MIN_AP_EASY = 0.15


@pytest.mark.slow
def test_mtcnn_cascade_learns_on_synthetic_scenes(tmp_path: Path):
    from scripts.mtcnn_demo_pipeline import run_pipeline

    overrides = ["--trainer.max_time=null", "--trainer.val_check_interval=null",
                 "--trainer.check_val_every_n_epoch=1000", "--trainer.max_epochs=1000",
                 "--trainer.enable_progress_bar=false", f"--data.init_args.synth_train_size={TRAIN_SCENES}",
                 "--data.init_args.synth_val_size=20"]
    report = run_pipeline(tmp_path, STEPS, overrides, eval_scenes=30)
    print({k: {m: v for m, v in r.items() if m != "ckpt"} for k, r in report.items()})
    for stage in ("pnet", "rnet", "onet"):
        assert report[stage]["val/recall"] >= MIN_RECALL, (stage, report[stage])
        assert report[stage]["val/precision"] >= MIN_PRECISION, (stage, report[stage])
    cascade = report["cascade"]
    assert cascade["ap_easy"] >= MIN_AP_EASY, cascade
    assert cascade["candidates_pnet"] > cascade["candidates_rnet"] > cascade["candidates_onet"], cascade
