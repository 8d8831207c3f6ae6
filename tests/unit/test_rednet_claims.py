"""The claims benchmark's diagnostics (benchmarks/rednet_claims.py) without training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from rednet_claims import cli_main  # noqa: E402


def test_mean_shape_by_yaw_partitions_the_validation_frames(capsys: pytest.CaptureFixture[str]):
    out = cli_main(["--mean-shape-by-yaw", "--train-clips", "6", "--val-clips", "5", "--clip-length", "4"])
    bins = out["mean_shape_by_yaw"]
    frames = sum(b["frames"] for b in bins.values())
    assert frames == 5 * 4, bins  # every validation frame falls in exactly one |yaw| bin
    # the bins' frame-weighted mean is the overall mean-shape NME of the same frames
    pooled = sum(b["nme"] * b["frames"] for b in bins.values()) / frames
    assert pooled == pytest.approx(out["mean_shape"], abs=1e-3)
    assert all(b["inter_ocular_px"] > 0 for b in bins.values())
    assert '"mean_shape_by_yaw"' in capsys.readouterr().out


def test_temporal_shares_see_the_zero_initialised_lstm_residual(tmp_path: Path):
    """Untrained, the LSTM's output projection is zero (the temporal pathway starts as the identity
    map on the pose half), so its share is exactly 0; the running identity mean does move the code."""
    from rednet_claims import demo_cli, temporal_shares

    cli = demo_cli(tmp_path, 0, "temporal", train_clips=4, val_clips=2, clip_length=4)
    cli.datamodule.setup("fit")
    shares = temporal_shares(cli.model, cli.datamodule)
    assert shares["lstm_residual_share"] == 0.0, shares
    assert shares["identity_shift_share"] > 0.0, shares
    with torch.no_grad():
        cli.model.net.bottleneck.project_out.bias.fill_(1.0)
    assert temporal_shares(cli.model, cli.datamodule)["lstm_residual_share"] > 0.0
