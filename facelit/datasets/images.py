"""A folder of images for prediction: every .jpg/.jpeg/.png below ``root``, at its original size.

Each item is ``{"image": (3, H, W) float [0, 1], "meta": {"event": <sub-folder>, "file": <stem>,
"path": <path>, "orig_size": (H, W)}}``; ``event`` is the first folder level below ``root`` (WIDER
events), or ``NO_EVENT`` (``"."``) for images directly in it, matching the official submission
layout (``facelit.metrics.wider_files.write_detection_results`` writes those to the output root).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from facelit.datasets.crops import load_rgb
from facelit.metrics.wider_files import NO_EVENT

__all__ = ["IMAGE_SUFFIXES", "ImageFolderDataset"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageFolderDataset(Dataset):
    """All images below ``root`` in sorted path order."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} image below {self.root}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        image = load_rgb(path)
        rel = path.relative_to(self.root)
        event = rel.parts[0] if len(rel.parts) > 1 else NO_EVENT
        meta = {"event": event, "file": path.stem, "path": str(path), "orig_size": tuple(image.shape[-2:])}
        return {"image": image, "meta": meta}
