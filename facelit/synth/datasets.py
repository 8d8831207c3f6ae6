"""torch Datasets over the synthetic world.

Item i is ``render_crop(seed, i, ...)`` / ``render_scene(seed, i, ...)``.

Both datasets implement ``__getitems__`` (used by ``torch.utils.data.DataLoader`` for whole batches),
which renders the requested samples together (much faster than one by one) with the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from .compose import _check_scheme
from .crops import render_crops
from .domains import get_domain
from .head import check_species
from .scenes import render_scenes

__all__ = ["FaceCropDataset", "SceneDataset"]

_CROP_CHUNK = 64
_SCENE_CHUNK = 2


def _check_length(length: int) -> int:
    if int(length) < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    return int(length)


class _SyntheticDataset(Dataset):
    length: int
    chunk: int

    def __len__(self) -> int:
        return self.length

    def _check_index(self, i: int) -> int:
        if not -self.length <= int(i) < self.length:
            raise IndexError(f"index {i} out of range for a dataset of length {self.length}")
        return int(i) % self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._render([self._check_index(i)])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        idx = [self._check_index(i) for i in indices]
        out: list[dict[str, Any]] = []
        for k in range(0, len(idx), self.chunk):
            out.extend(self._render(idx[k : k + self.chunk]))
        return out

    def _render(self, indices: list[int]) -> list[dict[str, Any]]:
        raise NotImplementedError


class FaceCropDataset(_SyntheticDataset):
    """Face crops (``facelit.batch`` face-crop samples); collate with ``facelit.batch.collate_crops``."""

    chunk = _CROP_CHUNK

    def __init__(
        self,
        seed: int = 0,
        length: int = 1000,
        size: int = 128,
        domain: str = "source",
        species: str = "human",
        scheme: str = "ibug68",
        num_identities: int = 100,
        mesh: bool = False,
    ) -> None:
        get_domain(domain)
        check_species(species)
        _check_scheme(species, scheme)
        self.seed, self.length, self.size = int(seed), _check_length(length), int(size)
        self.domain, self.species, self.scheme = domain, species, scheme
        self.num_identities, self.mesh = int(num_identities), bool(mesh)

    def _render(self, indices: list[int]) -> list[dict[str, Any]]:
        return render_crops(
            self.seed,
            indices,
            self.size,
            self.domain,
            self.species,
            self.scheme,
            self.num_identities,
            self.mesh,
        )


class SceneDataset(_SyntheticDataset):
    """Detection scenes (``facelit.batch`` detection samples); collate with ``collate_detections``."""

    chunk = _SCENE_CHUNK

    def __init__(
        self,
        seed: int = 0,
        length: int = 200,
        height: int = 640,
        width: int = 640,
        domain: str = "source",
        max_faces: int = 24,
        min_face: float = 6.0,
    ) -> None:
        get_domain(domain)
        self.seed, self.length = int(seed), _check_length(length)
        self.height, self.width, self.domain = int(height), int(width), domain
        self.max_faces, self.min_face = int(max_faces), float(min_face)

    def _render(self, indices: list[int]) -> list[dict[str, Any]]:
        return render_scenes(
            self.seed, indices, self.height, self.width, self.domain, self.max_faces, self.min_face
        )
