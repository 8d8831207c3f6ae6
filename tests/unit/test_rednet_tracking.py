"""Tracking: the next box from the landmarks, crop-to-frame mapping, loss and re-detection, frame
reading. The detector here is a test stub (a function returning a fixed box), not a product part."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from facelit.geometry.schemes import LandmarkScheme, get_scheme
from facelit.tracking import box_from_landmarks, read_frames, square_box, track_video

SCHEME = get_scheme("rednet7")
CROP = 64
# rednet7 points in crop pixels: eye centre (32, 24), mouth centre (32, 45.33...) ->
# eye-mouth distance 21.33 = CROP / 3, so the box of these points is the crop itself again.
EYE_Y, MOUTH_Y = 24.0, 24.0 + CROP / 3
CROP_SHAPE = torch.tensor(
    [
        [20.0, EYE_Y],
        [28.0, EYE_Y],
        [36.0, EYE_Y],
        [44.0, EYE_Y],
        [32.0, 36.0],
        [24.0, MOUTH_Y],
        [40.0, MOUTH_Y],
    ]
)


def test_box_from_landmarks_hand_computed() -> None:
    box = box_from_landmarks(CROP_SHAPE[None], SCHEME)
    centre_y = 0.5 * (EYE_Y + MOUTH_Y)
    assert torch.allclose(box, torch.tensor([[0.0, centre_y - 32, 64.0, centre_y + 32]]), atol=1e-4)
    ibug = torch.zeros(1, 68, 2)
    ibug[0, 36:48] = torch.tensor([10.0, 10.0])
    ibug[0, 48:68] = torch.tensor([10.0, 20.0])
    assert torch.allclose(
        box_from_landmarks(ibug, get_scheme("ibug68")), torch.tensor([[-5.0, 0.0, 25.0, 30.0]])
    )
    with pytest.raises(ValueError, match="no eye or no mouth"):
        box_from_landmarks(
            torch.zeros(1, 2, 2), LandmarkScheme("eyes_only", ("left_eye", "right_eye"), (1, 0))
        )
    assert torch.equal(
        square_box(torch.tensor([[0.0, 0.0, 10.0, 4.0]])), torch.tensor([[0.0, -3.0, 10.0, 7.0]])
    )


class StubPredictor:
    """Always the same crop-space shape; confident unless the frame (crop) is dark."""

    def __init__(self) -> None:
        self.states: list[object] = []

    def __call__(self, crop: torch.Tensor, state: object) -> tuple[torch.Tensor, torch.Tensor, object]:
        self.states.append(state)
        conf = torch.full((7,), 1.0 if crop.mean() > 0.25 else 0.0)
        return CROP_SHAPE.clone(), conf, len(self.states)


def test_tracking_maps_points_follows_and_redetects() -> None:
    frames = [torch.full((3, 128, 128), 0.5) for _ in range(5)]
    frames[2] = torch.zeros(3, 128, 128)  # the track is lost here
    calls: list[int] = []

    def detect(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return torch.tensor([[40.0, 30.0, 72.0, 70.0], [0.0, 0.0, 8.0, 8.0]]), torch.tensor([0.9, 0.1])

    predictor = StubPredictor()
    result = track_video(frames, predictor, SCHEME, CROP, detect=detect, detection_scale=1.6)
    out = result.stacked()
    first_box = torch.tensor([24.0, 18.0, 88.0, 82.0])  # square of side 40 * 1.6 around (56, 50)
    assert torch.allclose(out["boxes"][0], first_box)
    assert torch.allclose(
        out["landmarks"][0], CROP_SHAPE + first_box[:2], atol=1e-4
    )  # crop side 64 = box side
    # Frame 1 uses the box of frame 0's points: the same square, shifted to centre them.
    centre_y = first_box[1] + 0.5 * (EYE_Y + MOUTH_Y)
    assert torch.allclose(
        out["boxes"][1], torch.tensor([24.0, centre_y - 32, 88.0, centre_y + 32]), atol=1e-4
    )
    # Lost at frame 2 -> re-detected at frame 3 with a fresh state; 2 detector calls in all.
    assert out["detected"].tolist() == [True, False, False, True, False]
    assert len(calls) == 2 and predictor.states[3] is None and predictor.states[1] is not None
    assert out["confidence"].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]


def test_collapsed_points_lose_the_track() -> None:
    calls: list[int] = []

    def detect(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.tensor([1.0])

    def collapsed(crop: torch.Tensor, state: object) -> tuple[torch.Tensor, torch.Tensor, object]:
        return torch.full((7, 2), 16.0), torch.ones(7), state

    track_video([torch.zeros(3, 32, 32)] * 3, collapsed, SCHEME, CROP, detect=detect)
    assert len(calls) == 3  # every frame re-detects: one point-sized box is no track


def test_tracking_needs_a_start_and_survives_an_empty_detection() -> None:
    with pytest.raises(ValueError, match="initial_box or a detect"):
        track_video([torch.zeros(3, 8, 8)], StubPredictor(), SCHEME, CROP)
    result = track_video(
        [torch.zeros(3, 32, 32)],
        StubPredictor(),
        SCHEME,
        CROP,
        detect=lambda f: (torch.zeros(0, 4), torch.zeros(0)),
    ).stacked()
    assert torch.isnan(result["landmarks"]).all() and result["confidence"].tolist() == [0.0]
    # Without a detector a lost track keeps its box.
    kept = track_video(
        [torch.zeros(3, 64, 64)] * 2,
        StubPredictor(),
        SCHEME,
        CROP,
        initial_box=torch.tensor([0.0, 0, 64, 64]),
    ).stacked()
    assert torch.isfinite(kept["landmarks"]).all()


def test_read_frames_folder_and_errors(tmp_path: Path) -> None:
    for i in range(3):
        write_png(torch.full((3, 6, 5), 50 * i, dtype=torch.uint8), str(tmp_path / f"{i:06d}.png"))
    frames = list(read_frames(tmp_path))
    assert len(frames) == 3 and frames[2].shape == (3, 6, 5)
    assert frames[2].max().item() == pytest.approx(100 / 255)
    with pytest.raises(FileNotFoundError, match="no frame folder or video"):
        read_frames(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no frame image"):
        read_frames(empty)
