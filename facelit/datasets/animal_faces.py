"""Reader of the interspecies keypoint-transfer release (Rashid et al. 2017): horse and sheep faces.

Layout (official release)::

    <data_dir>/
        train_horse.txt      one line per face: ``<image_path> <label_path.npy>``
        test_horse.txt
        train_sheep.txt / test_sheep.txt     (same layout)
        <images and .npy labels wherever the list lines point>

Relative paths in a list are resolved against the list file's folder. Images are pre-cropped to
the face. A label is a (5, 3) array of rows ``x, y, visible`` in the order left eye, right eye,
nose, left and right mouth corner (``animal5``); ``visible`` is 1 (visible) or 0/-1 (not).

Convention: label x, y are 0-based pixel indices (integers at pixel centres, numpy/OpenCV style)
and are converted to our pixel-area frame with :data:`facelit.datasets.crops.ZERO_BASED_TO_AREA`.
Every image is resized to ``image_size x image_size`` and its keypoints scaled with it, so the
face-crop side of the failure rate is ``image_size``. The same layout serves a human pool (AFLW
5-point faces exported as ``image label.npy`` lines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from facelit.datasets.crops import ZERO_BASED_TO_AREA, load_rgb, points_box

__all__ = [
    "NUM_KEYPOINTS",
    "VISIBLE_VALUES",
    "read_keypoint_list",
    "read_keypoint_label",
    "image_size_of",
    "KeypointListDataset",
    "flip_matches",
    "InterspeciesPairs",
]

NUM_KEYPOINTS = 5
VISIBLE_VALUES = (-1.0, 0.0, 1.0)


def read_keypoint_list(list_file: str | Path) -> list[tuple[Path, Path]]:
    """(image path, label path) pairs of a list file; errors name the file and line."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"keypoint list not found: {list_file}")
    pairs = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise ValueError(f"{list_file}:{lineno}: expected '<image_path> <label_path.npy>', got {line!r}")
        image, label = (Path(t) if Path(t).is_absolute() else list_file.parent / t for t in tokens)
        pairs.append((image, label))
    if not pairs:
        raise ValueError(f"{list_file}: no entries")
    return pairs


def read_keypoint_label(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(5, 2) keypoints in the pixel-area frame and (5,) bool visibility from a (5, 3) ``.npy`` label."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keypoint label not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read keypoint label {path}: {err}") from err
    if array.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(
            f"{path}: expected a ({NUM_KEYPOINTS}, 3) array (x, y, visible), got shape {array.shape}"
        )
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: non-finite values {array.tolist()}")
    flags = array[:, 2]
    bad = [v for v in flags.tolist() if v not in VISIBLE_VALUES]
    if bad:
        raise ValueError(f"{path}: visibility must be one of {VISIBLE_VALUES}, got {bad}")
    points = torch.from_numpy(array[:, :2] + ZERO_BASED_TO_AREA).float()
    return points, torch.from_numpy(flags > 0)


def image_size_of(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header; errors name the path."""
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    return h, w


class KeypointListDataset(Dataset):
    """Face-crop samples (``facelit.batch``) of a keypoint list, resized to ``image_size``.

    Samples: ``image`` (3, S, S), ``landmarks`` (5, 2), ``landmarks_visible`` (5,), ``boxes`` (4,)
    (tight box of the visible keypoints), ``pose`` (3,) zeros (unknown), ``meta`` (file, original size).
    """

    def __init__(self, list_file: str | Path, image_size: int = 64, indices: list[int] | None = None) -> None:
        self.list_file = Path(list_file)
        pairs = read_keypoint_list(self.list_file)
        self.pairs = pairs if indices is None else [pairs[i] for i in indices]
        self.image_size = int(image_size)
        self._labels: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def keypoints(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 5, 2) keypoints in pixels of the resized crops and (N, 5) visibility of every face (only the
        image headers are read)."""
        if self._labels is None:
            labels = []
            for image_path, label_path in self.pairs:
                points, visible = read_keypoint_label(label_path)
                labels.append((points * self._scale(image_size_of(image_path)), visible))
            self._labels = labels
        return torch.stack([p for p, _ in self._labels]), torch.stack([v for _, v in self._labels])

    def _scale(self, size: tuple[int, int]) -> torch.Tensor:
        """(2,) factors from an (H, W) original image to the (S, S) crop."""
        h, w = size
        return torch.tensor([self.image_size / w, self.image_size / h])

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.pairs[index]
        image = load_rgb(image_path)
        points, visible = read_keypoint_label(label_path)
        h, w = image.shape[-2:]
        s = self.image_size
        image = F.interpolate(image[None], size=(s, s), mode="bilinear", align_corners=False, antialias=True)[
            0
        ]
        points = points * self._scale((h, w))
        box = points_box(points, visible) if bool(visible.any()) else torch.tensor([0.0, 0.0, s, s])
        return {
            "image": image.clamp(0, 1),
            "landmarks": points,
            "landmarks_visible": visible,
            "pose": torch.zeros(3),
            "boxes": box,
            "meta": {"file": str(image_path), "orig_size": (h, w)},
        }


def flip_matches(
    points: torch.Tensor, visible: torch.Tensor, flipped: torch.Tensor, flip_perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror matched human keypoints of horizontally flipped samples.

    Args:
        points: (..., M, K, 2) keypoints in the NORMALISED frame (x' = -x on a flip).
        visible: (..., M, K) bool.
        flipped: (...) bool, one flag per sample.
        flip_perm: (K,) the scheme's flip permutation.
    """
    sign = torch.tensor([-1.0, 1.0], dtype=points.dtype, device=points.device)
    mirrored = points[..., flip_perm, :] * sign
    f = flipped[..., None, None]
    return torch.where(f[..., None], mirrored, points), torch.where(f, visible[..., flip_perm], visible)


class InterspeciesPairs(Dataset):
    """Animal face-crop samples with their pose-matched human keypoints (and a human face to train on).

    Adds to each animal sample: ``match_points`` (M, 5, 2) matched human keypoints in the normalised
    frame (:mod:`facelit.geometry.tps`), ``match_visible`` (M, 5) bool, ``match_valid`` (M,) bool;
    with ``humans``, also ``human_image`` (3, S, S), ``human_landmarks`` (5, 2), ``human_landmarks_visible``
    (5,) of a random human face (drawn from torch's global RNG, seeded per worker by Lightning).

    Args:
        animals: face-crop dataset of animals.
        match_points, match_visible, match_valid: per animal, (Na, M, 5, 2) / (Na, M, 5) / (Na, M).
        humans: optional face-crop dataset of humans.
        augment: optional per-sample landmark augmentation of the animal (it must report ``flipped``).
        human_augment: optional per-sample augmentation of the human face.
        flip_perm: (5,) flip permutation of the keypoint scheme.
    """

    def __init__(
        self,
        animals: Dataset,
        match_points: torch.Tensor,
        match_visible: torch.Tensor,
        match_valid: torch.Tensor,
        humans: Dataset | None = None,
        augment: Any = None,
        human_augment: Any = None,
        flip_perm: torch.Tensor | None = None,
    ) -> None:
        if match_points.shape[0] != len(animals):  # type: ignore[arg-type]
            raise ValueError(f"{match_points.shape[0]} match rows for {len(animals)} animals")  # type: ignore[arg-type]
        self.animals, self.humans = animals, humans
        self.match_points, self.match_visible, self.match_valid = match_points, match_visible, match_valid
        self.augment, self.human_augment = augment, human_augment
        self.flip_perm = flip_perm if flip_perm is not None else torch.tensor([1, 0, 2, 4, 3])

    def __len__(self) -> int:
        return len(self.animals)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.animals[index])
        points, visible = self.match_points[index], self.match_visible[index]
        if self.augment is not None:
            sample = self.augment(sample)
            points, visible = flip_matches(points, visible, sample.pop("flipped"), self.flip_perm)
            sample.pop("affine", None)
        sample.update(match_points=points, match_visible=visible, match_valid=self.match_valid[index])
        if self.humans is not None:
            j = int(torch.randint(len(self.humans), ()))  # type: ignore[arg-type]
            human = self.humans[j]
            if self.human_augment is not None:
                human = self.human_augment(human)
            sample.update(
                human_image=human["image"],
                human_landmarks=human["landmarks"],
                human_landmarks_visible=human["landmarks_visible"],
            )
        return sample
