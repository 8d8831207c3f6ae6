"""300-VW (Shen et al., ICCV-W 2015): 114 annotated videos, 68 iBUG points per frame.

Layout under the dataset root (as distributed)::

    <clip>/vid.avi                 the video (decoded with PyAV)
    <clip>/annot/000001.pts        one iBUG .pts per frame, 1-based frame numbers, contiguous
    <clip>/frames/000001.png       optional: frames extracted once (``python -m
                                   facelit.datasets.w300vw extract <root>``), read instead of vid.avi

Splits (the challenge's, pinned in :data:`W300VW_TRAIN` and :data:`W300VW_CATEGORIES`): 50 training
videos; 64 test videos in three categories: 1 (31 videos, laboratory and naturalistic well-lit), 2
(19, real-world with lighting changes), 3 (14, completely unconstrained: illumination, occlusion,
make-up, expression, head pose).

Clips: training videos are cut into windows of T consecutive frames starting every ``stride``
frames; the last window of a video (and a video shorter than T) is padded with ``frame_mask`` False,
never dropped. Test videos are served whole (``clip_length=None``) or in consecutive windows that
cover every frame once. Every frame is cropped to a square around its own landmarks' box (side
``(1 + 2 * margin)`` x the longer side, :func:`facelit.datasets.crops.crop_box_from_points`) and
resized to S x S with the project's one crop-resize.

Convention
----------
The ``.pts`` points are 1-based with integers at pixel centres (MATLAB), moved to the pixel-area
frame with ``x - 0.5`` (:data:`facelit.datasets.crops.MATLAB_TO_AREA`). All points of 300-VW are
annotated: ``landmarks_visible`` is True except for a scheme subset's points (all annotated too).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from facelit.augment.crop import crop_resize
from facelit.datasets.clips import pad_clip
from facelit.datasets.crops import MATLAB_TO_AREA, crop_box_from_points, load_rgb
from facelit.datasets.video import decode_video
from facelit.geometry.schemes import IBUG68, get_scheme, subset_from_ibug68
from facelit.parsing import check_number_tokens

__all__ = [
    "W300VW_TRAIN",
    "W300VW_CATEGORIES",
    "W300VW_VIDEOS",
    "DEFAULT_MARGIN",
    "category_of",
    "read_pts",
    "VideoClip",
    "scan_clip",
    "clip_windows",
    "iter_frames",
    "read_frames",
    "W300VWClips",
    "extract_frames",
]

log = logging.getLogger(__name__)

W300VW_TRAIN: tuple[str, ...] = (
    "001", "002", "003", "004", "007", "009", "010", "011", "013", "015", "016", "017", "018", "019",
    "020", "022", "025", "027", "028", "029", "031", "033", "034", "035", "037", "039", "041", "043",
    "044", "046", "047", "048", "049", "053", "057", "059", "112", "113", "115", "119", "120", "123",
    "138", "143", "144", "160", "204", "205", "223", "225",
)  # fmt: skip
W300VW_CATEGORIES: dict[int, tuple[str, ...]] = {
    1: ("114", "124", "125", "126", "150", "158", "401", "402", "505", "506", "507", "508", "509", "510",
        "511", "514", "515", "518", "519", "520", "521", "522", "524", "525", "537", "538", "540", "541",
        "546", "547", "548"),
    2: ("203", "208", "211", "212", "213", "214", "218", "224", "403", "404", "405", "406", "407", "408",
        "409", "412", "550", "551", "553"),
    3: ("410", "411", "516", "517", "526", "528", "529", "530", "531", "533", "557", "558", "559", "562"),
}  # fmt: skip
W300VW_VIDEOS: tuple[str, ...] = W300VW_TRAIN + tuple(
    c for k in sorted(W300VW_CATEGORIES) for c in W300VW_CATEGORIES[k]
)
"""Every video id, training videos first: a video's identity label is its position here."""
DEFAULT_MARGIN = 0.25  # crop: the landmarks' box plus a quarter of its longer side on each side
_CROP_CHUNK = 32  # frames decoded before they are cropped
_FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
_PTS_NAME = re.compile(r"^(\d+)\.pts$")


def category_of(clip: str) -> int:
    """The 300-VW test category (1-3) of a clip id, 0 for a training (or unknown) clip."""
    for category, clips in W300VW_CATEGORIES.items():
        if clip in clips:
            return category
    return 0


def read_pts(path: str | Path, num_points: int = IBUG68.num_points) -> torch.Tensor:
    """Read an iBUG ``.pts`` file into (K, 2) points in the pixel-area frame.

    Raises:
        FileNotFoundError: naming the path.
        ValueError: naming the file and line for a malformed header, a non-numeric value, a point
            count other than ``num_points`` or a missing closing brace.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file not found: {path}")
    lines = path.read_text().splitlines()
    declared, start = None, None
    for no, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("n_points"):
            value = text.split(":", 1)[-1].strip()
            if not value.isdigit():
                raise ValueError(f"{path}:{no}: bad n_points value {value!r}")
            declared = int(value)
        elif text == "{":
            start = no
            break
    if start is None:
        raise ValueError(f"{path}: no '{{' line opening the points")
    rows: list[list[float]] = []
    for no in range(start + 1, len(lines) + 1):
        tokens = lines[no - 1].split()
        if tokens == ["}"]:
            break
        if not tokens:
            continue
        where = f"{path}:{no}"
        if len(tokens) != 2:
            raise ValueError(f"{where}: expected 'x y', got {lines[no - 1].strip()!r}")
        check_number_tokens(tokens, where)
        rows.append([float(tokens[0]), float(tokens[1])])
    else:
        raise ValueError(f"{path}: no '}}' line closing the points")
    if declared is not None and declared != len(rows):
        raise ValueError(f"{path}: header says n_points {declared} but the file lists {len(rows)} points")
    if len(rows) != num_points:
        raise ValueError(f"{path}: {len(rows)} points, expected {num_points}")
    return torch.tensor(rows, dtype=torch.float32) + MATLAB_TO_AREA


@dataclass(frozen=True)
class VideoClip:
    """One 300-VW video: its folder, frame count (annotated frames 1..N) and test category."""

    name: str
    root: Path
    num_frames: int
    category: int

    def pts_path(self, frame: int) -> Path:
        """The annotation of 0-based ``frame``."""
        return self.root / "annot" / f"{frame + 1:06d}.pts"

    @property
    def video_path(self) -> Path:
        return self.root / "vid.avi"

    @property
    def frames_dir(self) -> Path:
        return self.root / "frames"


def scan_clip(root: str | Path, need_frames: bool = True) -> VideoClip:
    """Index a clip folder; annotations must be ``000001.pts`` .. ``N.pts`` without a gap.

    Raises:
        FileNotFoundError: no ``annot`` folder, no ``.pts`` in it, or (with ``need_frames``) neither
            ``vid.avi`` nor ``frames/``; a missing annotation in the middle names the missing file.
    """
    root = Path(root)
    annot = root / "annot"
    if not annot.is_dir():
        raise FileNotFoundError(f"300-VW clip without annotations: {annot} is not a folder")
    numbers = sorted(int(m.group(1)) for p in annot.iterdir() if (m := _PTS_NAME.match(p.name)))
    if not numbers:
        raise FileNotFoundError(f"no .pts annotation in {annot}")
    expected = range(1, numbers[-1] + 1)
    if len(numbers) != len(expected):
        missing = sorted(set(expected) - set(numbers))[0]
        raise FileNotFoundError(
            f"missing annotation {annot / f'{missing:06d}.pts'} (frames 1..{numbers[-1]})"
        )
    clip = VideoClip(root.name, root, numbers[-1], category_of(root.name))
    if need_frames and not clip.video_path.is_file() and not clip.frames_dir.is_dir():
        raise FileNotFoundError(f"300-VW clip {root} has neither {clip.video_path.name} nor frames/")
    return clip


def clip_windows(num_frames: int, length: int | None, stride: int | None = None) -> list[tuple[int, int]]:
    """Windows (start, count) over ``num_frames`` frames: every ``stride`` (default ``length``)
    frames, ``count <= length``; the windows reach the last frame (the last one may be short);
    ``length=None`` gives the whole video."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if length is None:
        return [(0, num_frames)]
    stride = length if stride is None else stride
    if length < 1 or stride < 1:
        raise ValueError(f"window length and stride must be >= 1, got {length}, {stride}")
    starts = list(range(0, max(num_frames - length, 0) + 1, stride))
    if starts[-1] + length < num_frames:  # the tail the stride skipped over
        starts.append(starts[-1] + stride)
    return [(s, min(length, num_frames - s)) for s in starts]


def _frame_file(clip: VideoClip, frame: int) -> Path:
    for suffix in _FRAME_SUFFIXES:
        path = clip.frames_dir / f"{frame + 1:06d}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"missing frame {clip.frames_dir / f'{frame + 1:06d}.png'} (or {'/'.join(_FRAME_SUFFIXES[1:])})"
    )


def iter_frames(clip: VideoClip, start: int, count: int) -> Iterator[torch.Tensor]:
    """Frames start .. start + count - 1 (0-based), one by one, as (3, H, W) uint8.

    Read from ``frames/`` when the clip has it, otherwise decoded from ``vid.avi`` with PyAV from
    the first frame (exact frame numbers; extract the frames once for fast random access).

    Raises:
        FileNotFoundError: a missing frame file, or a video with fewer frames than needed (naming it).
    """
    if clip.frames_dir.is_dir():
        for f in range(start, start + count):
            yield (load_rgb(_frame_file(clip, f)) * 255).round_().to(torch.uint8)
        return
    done = 0
    for i, frame in enumerate(decode_video(clip.video_path)):
        if done == count:
            break
        if i >= start:
            yield frame
            done += 1
    if done < count:
        raise FileNotFoundError(
            f"{clip.video_path}: missing frame {start + done + 1} "
            f"(the video ends before frame {start + count})"
        )


def read_frames(clip: VideoClip, start: int, count: int) -> torch.Tensor:
    """Frames start .. start + count - 1 (0-based) as (count, 3, H, W) float in [0, 1] (see
    :func:`iter_frames`)."""
    return torch.stack(list(iter_frames(clip, start, count))).float().div_(255.0)


class W300VWClips(Dataset):
    """300-VW clips of face crops (samples of :mod:`facelit.datasets.clips`).

    Args:
        root: dataset root (one folder per video).
        clips: video ids to serve (e.g. :data:`W300VW_TRAIN` or a category's list). A clip's
            ``identity`` is its video's position in :data:`W300VW_VIDEOS` (training videos 0-49);
            ids outside the published lists follow after them.
        clip_length: frames per window T, or ``None`` for whole videos.
        stride: frames between window starts (default ``clip_length``: consecutive windows).
        size: crop side S.
        scheme: ``ibug68`` or an iBUG-68 subset (``rednet7``).
        margin: crop margin (fraction of the landmarks' box added on each side).
    """

    def __init__(
        self,
        root: str | Path,
        clips: Sequence[str],
        clip_length: int | None = 16,
        stride: int | None = None,
        size: int = 128,
        scheme: str = "ibug68",
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"300-VW root not found: {self.root}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.scheme = get_scheme(scheme)
        if self.scheme.name != IBUG68.name:
            subset_from_ibug68(torch.zeros(IBUG68.num_points, 2), self.scheme)  # raises if not a subset
        self.size, self.margin, self.clip_length = int(size), float(margin), clip_length
        missing = [c for c in clips if not (self.root / c).is_dir()]
        if missing:
            raise FileNotFoundError(f"300-VW videos missing under {self.root}: {missing}")
        self.videos = [scan_clip(self.root / c) for c in clips]
        extra = iter(range(len(W300VW_VIDEOS), len(W300VW_VIDEOS) + len(self.videos)))
        self.identities = {
            v.name: W300VW_VIDEOS.index(v.name) if v.name in W300VW_VIDEOS else next(extra)
            for v in self.videos
        }
        slow = [v.name for v in self.videos if not v.frames_dir.is_dir()]
        if clip_length is not None and slow:
            log.warning(
                "300-VW: %d videos without frames/ (%s...): each clip decodes vid.avi from its first frame; "
                "extract the frames once: python -m facelit.datasets.w300vw extract %s",
                len(slow),
                slow[0],
                self.root,
            )
        self.windows = [
            (v, s, n) for v in self.videos for s, n in clip_windows(v.num_frames, clip_length, stride)
        ]
        log.info("300-VW: %d videos, %d clips from %s", len(self.videos), len(self.windows), self.root)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, start, count = self.windows[index]
        points = torch.stack([read_pts(video.pts_path(f)) for f in range(start, start + count)])
        boxes = torch.stack([crop_box_from_points(p, None, self.margin) for p in points])
        crops, frames = [], iter_frames(video, start, count)
        for k in range(0, count, _CROP_CHUNK):  # whole test videos never sit in memory uncropped
            chunk = (
                torch.stack([next(frames) for _ in range(min(_CROP_CHUNK, count - k))]).float().div_(255.0)
            )
            crops.append(crop_resize(chunk, boxes[k : k + _CROP_CHUNK], self.size).clamp_(0.0, 1.0))
        scale = self.size / (boxes[:, 2:] - boxes[:, :2])  # (T, 2)
        moved = (points - boxes[:, None, :2]) * scale[:, None]
        if self.scheme.name != IBUG68.name:
            moved = subset_from_ibug68(moved, self.scheme)
        sample = {
            "image": torch.cat(crops),
            "landmarks": moved,
            "landmarks_visible": torch.ones(moved.shape[:2], dtype=torch.bool),
            "frame_mask": torch.ones(count, dtype=torch.bool),
            "occluded": torch.zeros(count, dtype=torch.bool),
            "frame_index": torch.arange(start, start + count),
            "identity": torch.tensor(self.identities[video.name]),
            "category": torch.tensor(video.category),
            "clip": video.name,
        }
        return pad_clip(sample, self.clip_length or count)


def extract_frames(root: str | Path, clips: Sequence[str] | None = None, suffix: str = ".png") -> int:
    """Decode every ``<clip>/vid.avi`` under ``root`` into ``<clip>/frames/000001<suffix>`` ...

    Resumable: a clip whose ``frames/`` already holds as many frames as it has annotations is
    skipped; a partial folder is completed. Returns the number of frames written.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    root = Path(root)
    names = (
        list(clips) if clips is not None else sorted(p.name for p in root.iterdir() if (p / "annot").is_dir())
    )
    written = 0
    for name in tqdm(names, desc="300-VW frames"):
        clip = scan_clip(root / name)
        clip.frames_dir.mkdir(exist_ok=True)
        if all((clip.frames_dir / f"{i + 1:06d}{suffix}").is_file() for i in range(clip.num_frames)):
            continue
        for i, frame in enumerate(decode_video(clip.video_path)):
            if i >= clip.num_frames:
                break
            path = clip.frames_dir / f"{i + 1:06d}{suffix}"
            if not path.is_file():
                tmp = path.with_name(path.stem + ".part" + suffix)
                Image.fromarray(frame.permute(1, 2, 0).numpy()).save(tmp)
                tmp.replace(path)  # a killed job never leaves a truncated frame
                written += 1
    return written


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="300-VW tools")
    sub = parser.add_subparsers(dest="command", required=True)
    ext = sub.add_parser("extract", help="decode every vid.avi into <clip>/frames/ (resumable)")
    ext.add_argument("root", help="300-VW root (one folder per video)")
    ext.add_argument("--suffix", default=".png", choices=_FRAME_SUFFIXES)
    args = parser.parse_args(argv)
    print(f"wrote {extract_frames(args.root, suffix=args.suffix)} frames")


if __name__ == "__main__":
    _main()
