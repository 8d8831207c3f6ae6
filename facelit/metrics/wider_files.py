"""WIDER FACE files: the validation ground truth (``.mat``), prediction files in the official
submission layout, and the detection-results writer every detector's ``predict`` uses.

Submission layout (read by ``read_predictions`` and the official ``eval_tools``)::

    <pred_dir>/<event>/<image>.txt     image name, number of boxes, then ``x y w h score`` lines

Detection results (``write_detection_results``) add one JSON line per image to
``<pred_dir>/predictions.rank<r>.jsonl``: ``{"event", "file", "boxes" (xyxy), "scores"[,
"landmarks"]}`` in original-image pixels.

Convention: files hold ``x y w h`` (official); the detection-results writer takes project xyxy
boxes (pixel-area frame) and converts them (``x1, y1, x2 - x1, y2 - y1``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelit.metrics.wider_core import SETTINGS, PredictionKey, WiderGroundTruth
from facelit.parsing import check_number_tokens

__all__ = [
    "GT_FILES",
    "NO_EVENT",
    "load_wider_val_gt",
    "read_predictions",
    "write_predictions",
    "detection_results_path",
    "start_detection_results",
    "write_detection_results",
]

GT_FILES: dict[str, str] = {
    "all": "wider_face_val.mat",
    "easy": "wider_easy_val.mat",
    "medium": "wider_medium_val.mat",
    "hard": "wider_hard_val.mat",
}

NO_EVENT = "."  # event of an image directly in a flat predict folder: its file goes to <pred_dir>/<image>.txt


def _loadmat(path: Path, variables: list[str]) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(f"WIDER FACE ground-truth file not found: {path}")
    data = loadmat(str(path), variable_names=variables)
    missing = [v for v in variables if v not in data]
    if missing:
        raise ValueError(f"{path}: missing variables {missing}")
    return data


def _mat_names(cell: np.ndarray) -> list[str]:
    return [str(c[0][0]) for c in cell]


def load_wider_val_gt(gt_dir: str | Path) -> WiderGroundTruth:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``gt_dir``.

    Raises:
        FileNotFoundError: naming the first missing file.
        ValueError: when the setting files list other images than ``wider_face_val.mat``, or a
            ``gt_list`` index is out of range or repeated.
    """
    gt_dir = Path(gt_dir)
    for fname in GT_FILES.values():  # fail on the first missing file before reading anything
        if not (gt_dir / fname).is_file():
            raise FileNotFoundError(f"WIDER FACE ground-truth file not found: {gt_dir / fname}")
    main_mat = _loadmat(gt_dir / GT_FILES["all"], ["face_bbx_list", "event_list", "file_list"])
    event_cells, file_cells, box_cells = (
        main_mat["event_list"],
        main_mat["file_list"],
        main_mat["face_bbx_list"],
    )
    event_names = [str(e[0][0]) for e in event_cells]
    settings_gt = []
    for setting in SETTINGS:
        path = gt_dir / GT_FILES[setting]
        mat = _loadmat(path, ["gt_list", "file_list"])
        if len(mat["file_list"]) != len(file_cells) or len(mat["gt_list"]) != len(file_cells):
            raise ValueError(
                f"{path}: {len(mat['file_list'])} events, {GT_FILES['all']} has {len(file_cells)}"
            )
        for e, (ours, theirs) in enumerate(zip(file_cells, mat["file_list"], strict=True)):
            if _mat_names(ours[0]) != _mat_names(theirs[0]):
                raise ValueError(f"{path}: event {event_names[e]} lists other images than {GT_FILES['all']}")
        settings_gt.append((path, mat["gt_list"]))

    events: list[str] = []
    names: list[str] = []
    boxes: list[np.ndarray] = []
    keeps: list[np.ndarray] = []
    for e, event in enumerate(event_names):
        for j, name in enumerate(_mat_names(file_cells[e][0])):
            b = np.asarray(box_cells[e][0][j][0], dtype=np.int32).reshape(-1, 4)
            keep = np.zeros((b.shape[0], len(SETTINGS)), dtype=bool)
            for s, (path, gt_list) in enumerate(settings_gt):
                idx = np.asarray(gt_list[e][0][j][0], dtype=np.int64).ravel() - 1
                if idx.size and (idx.min() < 0 or idx.max() >= b.shape[0]):
                    raise ValueError(f"{path}: gt_list of {event}/{name} indexes outside 1..{b.shape[0]}")
                if np.unique(idx).size != idx.size:
                    raise ValueError(f"{path}: gt_list of {event}/{name} repeats a face index")
                keep[idx, s] = True
            events.append(event)
            names.append(name)
            boxes.append(b)
            keeps.append(keep)
    return WiderGroundTruth(tuple(events), tuple(names), tuple(boxes), tuple(keeps))


def _image_name(name_line: str) -> str:
    base = name_line.strip().replace("\\", "/").split("/")[-1]
    return base[: -len(".jpg")] if base.lower().endswith(".jpg") else base


def _parse_rows(path: Path, numbered: list[tuple[int, str]]) -> np.ndarray:
    """Parse ``(line number, "x y w h score")`` pairs into (P, 5) float64.

    Errors name the file, the line number and the offending value.
    """
    if not numbered:
        return np.zeros((0, 5), dtype=np.float64)
    try:
        rows = np.array([ln.split() for _, ln in numbered], dtype=np.float64)
        if rows.ndim == 2 and rows.shape[1] == 5 and np.isfinite(rows).all():
            return rows
    except ValueError:
        pass
    for line_no, ln in numbered:  # slow path, only to name the offending line
        tokens = ln.split()
        where = f"{path}, line {line_no}"
        if len(tokens) != 5:
            raise ValueError(f"{where}: expected 5 values 'x y w h score', got {ln.strip()!r}")
        check_number_tokens(tokens, where)
    raise AssertionError("unreachable: the fast parse failed on valid lines")  # pragma: no cover


def _read_prediction_file(path: Path) -> tuple[str, np.ndarray]:
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected an image name line and a box count line, got {len(lines)} lines")
    name = _image_name(lines[0])
    if not name:
        raise ValueError(f"{path}, line 1: empty image name")
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise ValueError(f"{path}, line 2: box count is not an integer: {lines[1].strip()!r}") from None
    if count < 0:
        raise ValueError(f"{path}, line 2: negative box count {count}")
    numbered = [(k + 3, ln) for k, ln in enumerate(lines[2:]) if ln.strip()]
    if len(numbered) != count:
        raise ValueError(f"{path}: line 2 announces {count} boxes, the file has {len(numbered)} box lines")
    return name, _parse_rows(path, numbered)


def read_predictions(pred_dir: str | Path, progress: bool = False) -> dict[PredictionKey, np.ndarray]:
    """Read an official submission folder ``pred_dir/<event>/<image>.txt``.

    Returns:
        {(event, image name): (P, 5) float64 ``x, y, w, h, score``} (file order kept).

    Raises:
        FileNotFoundError: ``pred_dir`` is not a folder.
        ValueError: a malformed file (file, line number and value named), a box count that does
            not match the box lines, or two files for one image.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    files = sorted(p for event in pred_dir.iterdir() if event.is_dir() for p in event.glob("*.txt"))
    preds: dict[PredictionKey, np.ndarray] = {}
    origin: dict[PredictionKey, Path] = {}
    from tqdm import tqdm

    for path in tqdm(files, desc="reading predictions", file=sys.stderr, disable=not progress):
        name, rows = _read_prediction_file(path)
        key = (path.parent.name, name)
        if key in preds:
            raise ValueError(f"{path}: image {key[0]}/{name} already read from {origin[key]}")
        preds[key] = rows
        origin[key] = path
    return preds


def write_predictions(pred_dir: str | Path, event: str, name: str, boxes_xywh_score: np.ndarray) -> Path:
    """Write one image's detections in the official layout, highest score first.

    Args:
        pred_dir: submission root; the file is ``pred_dir/event/name.txt``.
        event: event folder, e.g. ``"0--Parade"``; ``NO_EVENT`` (``"."``) for an image of a flat
            folder, written to ``pred_dir/name.txt`` (outside the WIDER layout, which needs events).
        name: image name (a trailing ``.jpg`` is removed).
        boxes_xywh_score: (P, 5) ``x, y, w, h, score`` in pixels.

    Values are written with ``repr`` precision, so reading them back gives the same floats. An
    existing file is overwritten (a rerun replaces, never appends).
    """
    name = _image_name(name)
    for label, value in (("event", event), ("name", name)):
        if label == "event" and value == NO_EVENT:
            continue
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"write_predictions: invalid {label} {value!r}")
    rows = np.asarray(boxes_xywh_score, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"write_predictions: expected (P, 5) x, y, w, h, score, got shape {rows.shape}")
    if not np.isfinite(rows).all():
        raise ValueError(f"write_predictions: non-finite values for {event}/{name}")
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    path = Path(pred_dir) / event / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(" ".join(repr(v) for v in row) + "\n" for row in rows.tolist())
    path.write_text(f"{name}\n{rows.shape[0]}\n{body}")
    return path


def detection_results_path(pred_dir: str | Path, rank: int = 0) -> Path:
    """``pred_dir/predictions.rank<rank>.jsonl``: the JSON lines file of one process."""
    return Path(pred_dir) / f"predictions.rank{int(rank)}.jsonl"


def start_detection_results(pred_dir: str | Path, rank: int = 0) -> Path:
    """Begin a predict run: create ``pred_dir`` and empty this rank's JSON lines file.

    Call once per process before the first ``write_detection_results`` of a run (a LightningModule
    does it in ``on_predict_start``), so that a rerun replaces the previous run's lines instead of
    appending duplicates. The per-image ``.txt`` files need no reset: each write overwrites its file.
    """
    path = detection_results_path(pred_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def _as_array(value: Any, what: str, shape_tail: tuple[int, ...], where: str) -> np.ndarray:
    """A tensor or array as float64 numpy ``(N, *shape_tail)``; errors name the result and key."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.size == 0:  # no detection: any empty shape
        array = array.reshape(0, *shape_tail)
    if array.ndim != 1 + len(shape_tail) or tuple(array.shape[1:]) != shape_tail:
        expected = "(N" + "".join(f", {d}" for d in shape_tail) + ")"
        raise ValueError(
            f"write_detection_results: {where} {what!r} must be {expected}, got {tuple(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"write_detection_results: {where} {what!r} has non-finite values")
    return array


def write_detection_results(pred_dir: str | Path, results: Sequence[dict[str, Any]], rank: int = 0) -> None:
    """Write detections of any detector: the official submission files and one JSON line per image.

    Args:
        pred_dir: output root (created). Per image: ``pred_dir/<event>/<file>.txt`` (official layout,
            ``x y w h score``, highest score first) and one line appended to
            ``pred_dir/predictions.rank<rank>.jsonl``.
        results: one dict per image with
            ``event`` (str): WIDER event folder, or ``NO_EVENT`` (``"."``) for a flat image folder
            (the ``.txt`` then goes to ``pred_dir/<file>.txt``);
            ``file`` (str): image name without ``.jpg`` (a trailing ``.jpg`` is removed);
            ``boxes`` (N, 4) xyxy in original-image pixels (pixel-area frame), tensor or array;
            ``scores`` (N,);
            ``landmarks`` (N, 5, 2) optional, original-image pixels.
        rank: process rank (one JSON lines file per process, so DDP ranks never interleave).

    Appends: call ``start_detection_results(pred_dir, rank)`` once at the start of a predict run so
    that a rerun does not duplicate JSON lines.

    Raises:
        ValueError: a missing key, a shape that does not fit, or non-finite values (naming the image).
    """
    root = Path(pred_dir)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, result in enumerate(results):
        missing = [k for k in ("event", "file", "boxes", "scores") if k not in result]
        if missing:
            raise ValueError(f"write_detection_results: results[{i}] lacks {missing}")
        event, name = str(result["event"]), str(result["file"])
        where = f"results[{i}] ({event}/{name})"
        boxes = _as_array(result["boxes"], "boxes", (4,), where)
        scores = _as_array(result["scores"], "scores", (), where)
        if scores.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"write_detection_results: {where} has {boxes.shape[0]} boxes, {scores.shape[0]} scores"
            )
        xywh_score = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores[:, None]], axis=1)
        write_predictions(root, event, name, xywh_score)
        record: dict[str, Any] = {
            "event": event,
            "file": _image_name(name),
            "boxes": boxes.tolist(),
            "scores": scores.tolist(),
        }
        if result.get("landmarks") is not None:
            landmarks = _as_array(result["landmarks"], "landmarks", (5, 2), where)
            if landmarks.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"write_detection_results: {where} has {boxes.shape[0]} boxes, "
                    f"{landmarks.shape[0]} landmark sets"
                )
            record["landmarks"] = landmarks.tolist()
        lines.append(json.dumps(record) + "\n")
    with open(detection_results_path(root, rank), "a") as jsonl:
        jsonl.writelines(lines)
