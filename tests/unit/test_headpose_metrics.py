"""Head-pose MAE in both conventions, the pyr <-> ypr conversion on real Biwi+ labels, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facelit.metrics.headpose import HeadPoseMAE, main, pose_mae, pyr_from_ypr, read_pose_file, ypr_from_pyr


def test_conversion_matches_every_biwi_plus_frame(shared_data):
    with np.load(shared_data / "biwi" / "Biwi_plus.npz") as d:
        ypr, pyr = torch.from_numpy(d["ypr"]), torch.from_numpy(d["pyr"])
    torch.testing.assert_close(pyr_from_ypr(ypr), pyr, atol=1e-9, rtol=0)
    torch.testing.assert_close(ypr_from_pyr(pyr), ypr, atol=1e-9, rtol=0)


def test_conversion_agrees_with_scipy_definition():
    from scipy.spatial.transform import Rotation

    g = torch.Generator().manual_seed(0)
    ypr = (torch.rand(50, 3, generator=g, dtype=torch.float64) * 2 - 1) * torch.tensor(
        [80.0, 60, 60]
    ).double()
    pyr = pyr_from_ypr(ypr).numpy()
    # README relation: r = from_euler('xyz', pyr); (rz, ry, rx) = r.as_euler('zyx'); ypr = -(ry, rx, rz)
    rz, ry, rx = Rotation.from_euler("xyz", pyr, degrees=True).as_euler("zyx", degrees=True).T
    np.testing.assert_allclose(-np.stack([ry, rx, rz], 1), ypr.numpy(), atol=1e-9)


def test_pose_mae_hand_computed():
    pred = torch.tensor([[10.0, 0, 0], [0, 5, -2]])
    gt = torch.tensor([[7.0, 1, 0], [1, 5, 2]])
    out = pose_mae(pred, gt, "ypr")
    assert (
        out["yaw"] == pytest.approx(2.0)
        and out["pitch"] == pytest.approx(0.5)
        and out["roll"] == pytest.approx(2.0)
    )
    assert out["mean"] == pytest.approx(1.5) and out["n"] == 2


def test_pure_yaw_error_scores_alike_but_combined_rotations_differ():
    gt = torch.tensor([[0.0, 0, 0]])
    pred = torch.tensor([[5.0, 0, 0]])
    ypr, pyr = pose_mae(pred, gt, "ypr"), pose_mae(pred, gt, "pyr")
    assert ypr["yaw"] == pytest.approx(5.0) and pyr["yaw"] == pytest.approx(5.0)
    assert pyr["pitch"] == pytest.approx(0.0, abs=1e-9) and pyr["roll"] == pytest.approx(0.0, abs=1e-9)
    gt2, pred2 = torch.tensor([[40.0, 20, 10]]), torch.tensor([[45.0, 20, 10]])
    assert abs(pose_mae(pred2, gt2, "pyr")["mean"] - pose_mae(pred2, gt2, "ypr")["mean"]) > 0.1


def test_metric_matches_function_and_accumulates():
    g = torch.Generator().manual_seed(1)
    pred, gt = torch.randn(10, 3, generator=g) * 20, torch.randn(10, 3, generator=g) * 20
    m = HeadPoseMAE()
    m.update(pred[:4], gt[:4])
    m.update(pred[4:], gt[4:])
    out = m.compute()
    ref_ypr, ref_pyr = pose_mae(pred, gt, "ypr"), pose_mae(pred, gt, "pyr")
    assert out["mae"].item() == pytest.approx(ref_ypr["mean"], rel=1e-5)
    assert out["yaw_pyr"].item() == pytest.approx(ref_pyr["yaw"], rel=1e-5)


def test_command_on_biwi_plus_files(shared_data, capsys):
    gt = shared_data / "biwi" / "Biwi_plus.npz"
    lines = main(["--pred", str(gt), "--gt", str(gt)])
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [p["convention"] for p in printed] == ["ypr", "pyr"] and printed == lines
    assert printed[0]["mean"] == 0 and printed[0]["n"] == 15678


def test_command_matches_by_name_and_reads_csv(tmp_path, capsys):
    gt = tmp_path / "gt.npz"
    np.savez(gt, images=np.array(["a.png", "b.png"]), ypr=np.array([[1.0, 2, 3], [4, 5, 6]]))
    pred = tmp_path / "pred.csv"
    pred.write_text("path,yaw,pitch,roll\nb.png,4,5,8\na.png,2,2,3\n")  # other order
    lines = main(["--pred", str(pred), "--gt", str(gt)])
    assert lines[0]["yaw"] == pytest.approx(0.5) and lines[0]["roll"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "text, match",
    [
        ("path,yaw,pitch\n", "header"),
        ("path,yaw,pitch,roll\na.png,1,2\n", ":2: expected 4 fields"),
        ("path,yaw,pitch,roll\na.png,1,x,3\n", ":2: angles are not numbers"),
        ("path,yaw,pitch,roll\na.png,1,nan,3\n", "row 0 has a non-finite"),
    ],
)
def test_bad_pose_files_name_file_and_line(tmp_path, text, match):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_pose_file(path)


def test_missing_prediction_is_named(tmp_path):
    gt = tmp_path / "gt.npz"
    np.savez(gt, images=np.array(["a.png", "b.png"]), ypr=np.zeros((2, 3)))
    pred = tmp_path / "pred.npz"
    np.savez(pred, images=np.array(["a.png"]), ypr=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="'b.png'"):
        main(["--pred", str(pred), "--gt", str(gt)])
