"""RED-Net learns from the images on synthetic video, measured against the mean-shape predictor.

Setting (``benchmarks/rednet_claims.py``, ``RECIPE``): the demo net of configs/demo/rednet.yaml
(64x64 crops, 7 points, narrow SegNet, three spatial steps, temporal recurrence and identity head),
AdamW at lr 1e-2, 600 steps of 2 clips x 4 frames on 150 cached synthetic clips of the ``video``
domain (yaw up to +-75 degrees, occluder passages), seed 0, one thread (a spawned worker, so the
figures are the benchmark's); 16 validation clips.

Baseline: the mean-shape predictor (the mean training shape on every frame, the strongest
image-blind predictor), inter-ocular NME 0.403 on the same validation frames. A model that does not
look at the image cannot beat it on average; the test asks for MARGIN x its NME.

Asserted: the RED-Net output (``merge: window``: each regressed point refined by its landmark's map
within 5 % of the crop side around it) and the regression sub-network alone both fall below MARGIN x
the mean shape's NME. Measured over seeds 0 / 1 / 2 (benchmark): output 0.868x / 0.887x / 0.861x,
regression 0.877x / 0.897x / 0.872x; seed 0 is tested. Not asserted (README "RED-Net"): the
temporal model's gain over the same net trained and run frame by frame, which does not hold over
the three seeds at this budget (NME lower in 1 of 3, jitter lower in 2 of 3), nor at the demo's full
budget, and the step order. The README ("RED-Net") gives the diagnosis: the temporal model's own
weights run frame by frame score the same to the third digit, because the output hardly depends on
the bottleneck code where the recurrence lives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from rednet_claims import run_side_by_side  # noqa: E402

MARGIN = 0.9


@pytest.mark.slow
def test_rednet_output_beats_the_mean_shape(tmp_path: Path):
    (scores,) = run_side_by_side([(0, "temporal")], tmp_path, 1)
    baseline = scores["mean_shape"]
    print(f"\nrednet: {scores}")
    assert scores["nme"] < MARGIN * baseline, scores
    assert scores["nme_regression"] < MARGIN * baseline, scores
