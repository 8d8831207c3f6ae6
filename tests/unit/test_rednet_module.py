"""RedNetModule wiring: losses per step, identity head on/off, metrics keys, bad arguments, tracking."""

from __future__ import annotations

import pytest
import torch

from facelit.datasets.clips import collate_clips
from facelit.synth.video import render_clips
from lightning_modules.rednet import RedNetModule

TINY = dict(widths=[4, 8, 8, 8, 8], depths=[1, 1, 1, 1, 1], lstm_hidden=8, image_size=32, num_identities=10,
            mean_shape_samples=0)


@pytest.fixture(scope="module")
def batch() -> dict:
    return collate_clips(render_clips(0, [0, 1], 3, 32, scheme="rednet7", num_identities=10))


def test_losses_per_step_and_identity_switch(batch: dict) -> None:
    torch.manual_seed(0)
    module = RedNetModule(**TINY)
    out = module.model_step(batch, "train")
    assert {"seg_step1", "seg_step2", "seg_step3", "reg_step3", "identity"} <= set(out)
    out["loss"].backward()
    assert module.net.identity_head.weight.grad is not None
    plain = RedNetModule(**TINY, identity_head=False).model_step(batch, "train")
    assert "identity" not in plain and module.net.identity_head is not None


def test_validation_metrics_per_step_and_branch(batch: dict) -> None:
    module = RedNetModule(**TINY).eval()
    logged: dict = {}
    module.log_dict = lambda values, **kw: logged.update(values)  # type: ignore[method-assign]
    with torch.no_grad():
        module.model_step(batch, "val")
    module._log_metrics("val")
    expected = {"val/nme", "val/nme_step1", "val/nme_step3", "val/nme_detection", "val/nme_regression",
                "val/jitter", "val/identity_acc"}
    assert expected <= set(logged)
    assert torch.isfinite(logged["val/nme"]) and logged["val/nme_step3"] == logged["val/nme"]


def test_merge_rules_wire_the_branches(batch: dict) -> None:
    module = RedNetModule(**TINY).eval()
    with torch.no_grad():
        out = module(batch["image"], batch["frame_mask"])
    preds = module.landmarks_from_outputs(out)
    half = module.detect_window * batch["image"].shape[-1]
    assert bool(((preds["landmarks"] - preds["regression"]).abs() <= half + 1e-4).all())
    assert not torch.equal(preds["landmarks"], preds["regression"])
    module.merge, module.detect_threshold = "threshold", 1.01  # above every confidence: regression
    assert torch.equal(module.landmarks_from_outputs(out)["landmarks"], preds["regression"])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="one side per recurrence step"):
        RedNetModule(**TINY, recurrence_steps=2)
    with pytest.raises(ValueError, match="num_identities >= 1"):
        RedNetModule(**{**TINY, "num_identities": 0})
    with pytest.raises(ValueError, match="merge must be one of"):
        RedNetModule(**TINY, merge="mean")
    with pytest.raises(ValueError, match="fraction of the crop side"):
        RedNetModule(**TINY, detect_window=2.0)


def test_track_runs_the_net_frame_by_frame_with_carried_state(batch: dict) -> None:
    module = RedNetModule(**TINY)
    frames = list(batch["image"][0])
    states: list = []
    original = module.net.forward

    def spy(*args, **kwargs):
        states.append(kwargs.get("state"))
        return original(*args, **kwargs)

    module.net.forward = spy  # type: ignore[method-assign]
    result = module.track(frames, initial_box=torch.tensor([0.0, 0.0, 32.0, 32.0]), progress=False).stacked()
    assert result["landmarks"].shape == (3, 7, 2) and torch.isfinite(result["landmarks"]).all()
    assert states[0] is None and states[1] is not None and len(states[1]) == 3  # one state per spatial step
    assert not module.training
