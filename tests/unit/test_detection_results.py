"""The detector-independent predict output (facelit.metrics.wider_files.write_detection_results)
and RetinaFace's predict on a flat image folder, run twice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from datamodules.wider_face import WiderFaceDataModule
from facelit.metrics.widerface import (
    NO_EVENT,
    detection_results_path,
    read_predictions,
    start_detection_results,
    write_detection_results,
)
from lightning_modules.retinaface import RetinaFaceModule


def _result(event: str, name: str, n: int, landmarks: bool = True) -> dict:
    boxes = torch.tensor([[10.0 + i, 20.0, 30.5 + i, 44.0] for i in range(n)])
    out = {"event": event, "file": name, "boxes": boxes, "scores": torch.linspace(0.9, 0.5, n)}
    if landmarks:
        out["landmarks"] = torch.arange(n * 10, dtype=torch.float32).reshape(n, 5, 2)
    return out


def test_writes_official_layout_and_json_lines(tmp_path: Path) -> None:
    results = [_result("0--Parade", "0_Parade_1", 2), _result("1--Handshaking", "b.jpg", 0, landmarks=False)]
    start_detection_results(tmp_path, rank=1)
    write_detection_results(tmp_path, results, rank=1)
    preds = read_predictions(tmp_path)
    assert set(preds) == {("0--Parade", "0_Parade_1"), ("1--Handshaking", "b")}
    np.testing.assert_allclose(
        preds[("0--Parade", "0_Parade_1")], [[10, 20, 20.5, 24, 0.9], [11, 20, 20.5, 24, 0.5]], rtol=1e-6
    )
    assert preds[("1--Handshaking", "b")].shape == (0, 5)
    lines = detection_results_path(tmp_path, 1).read_text().splitlines()
    first, second = (json.loads(x) for x in lines)
    assert first["event"] == "0--Parade" and first["file"] == "0_Parade_1"
    assert first["boxes"][1] == [11.0, 20.0, 31.5, 44.0] and len(first["landmarks"]) == 2
    assert second["file"] == "b" and second["boxes"] == [] and "landmarks" not in second


def test_start_truncates_so_a_rerun_does_not_duplicate(tmp_path: Path) -> None:
    for _ in range(2):
        start_detection_results(tmp_path)
        write_detection_results(tmp_path, [_result("e", "a", 1)])
        write_detection_results(tmp_path, [_result("e", "b", 1)])
    assert len(detection_results_path(tmp_path).read_text().splitlines()) == 2


def test_flat_folder_event_and_bad_input(tmp_path: Path) -> None:
    write_detection_results(tmp_path, [_result(NO_EVENT, "photo", 1)])
    assert (tmp_path / "photo.txt").read_text().splitlines()[:2] == ["photo", "1"]
    with pytest.raises(ValueError, match=r"results\[0\] \(e/x\) 'boxes' must be \(N, 4\)"):
        write_detection_results(
            tmp_path, [{"event": "e", "file": "x", "boxes": torch.zeros(2, 5), "scores": torch.zeros(2)}]
        )
    with pytest.raises(ValueError, match="lacks \\['scores'\\]"):
        write_detection_results(tmp_path, [{"event": "e", "file": "x", "boxes": torch.zeros(2, 4)}])
    with pytest.raises(ValueError, match="2 boxes, 3 scores"):
        write_detection_results(
            tmp_path, [{"event": "e", "file": "x", "boxes": torch.zeros(2, 4), "scores": torch.zeros(3)}]
        )
    with pytest.raises(ValueError, match="invalid event '..'"):
        write_detection_results(tmp_path, [_result("..", "x", 1)])


def test_retinaface_predict_on_a_flat_folder_twice(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for path in (images / "a.png", images / "b.jpg", images / "sub" / "c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "pred"
    model = RetinaFaceModule(image_size=64, predict_dir=str(out), score_threshold=0.0)
    data = WiderFaceDataModule(image_size=64, predict_images=str(images), num_workers=0)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    for _ in range(2):
        trainer.predict(model, datamodule=data, return_predictions=False)
    lines = [json.loads(x) for x in detection_results_path(out, 0).read_text().splitlines()]
    assert [(r["event"], r["file"]) for r in lines] == [(".", "a"), (".", "b"), ("sub", "c")]
    assert (out / "a.txt").is_file() and (out / "b.txt").is_file() and (out / "sub" / "c.txt").is_file()
    assert all(len(r["boxes"]) == len(r["scores"]) == len(r["landmarks"]) > 0 for r in lines)
