"""Video decoding: the project's one PyAV reader (300-VW videos, tracking input).

PyAV (``av``) decodes what FFmpeg decodes; torchvision no longer ships a video reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["decode_video"]


def decode_video(path: str | Path) -> Iterator[torch.Tensor]:
    """The frames of the first video stream of ``path``, in order, as (3, H, W) uint8 RGB tensors.

    Decoding is lazy: stop iterating to stop decoding (the file is closed when the generator is).

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    import av  # imported here: only video users pay for it

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
