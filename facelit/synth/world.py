"""Face-crop and detection-scene samples of the synthetic world, deterministic in (seed, index).

Convention
----------
Samples follow ``facelit.batch``: images (3, H, W) float32 RGB in [0, 1]; points (x, y) in pixels
with the pixel-area frame (pixel i covers [i, i + 1)); boxes xyxy; angles (yaw, pitch, roll) in
degrees with the convention of ``facelit.geometry.pose`` (the renderer rotates heads with
``head_to_camera``, so labels and pixels agree by construction).

The face box is the bounding box of the projected iBUG-68 landmarks and three forehead points
(WIDER-like: hairline to chin, ears excluded). Derived schemes (five_point, aflw21, aflw19)
average landmark vertices in 3D, then project; AFLW-21 ears are ear-lobe vertices. A point is
visible when it is inside the image, its surface faces the camera and nothing (the head itself,
another face, an occluder) lies in front of it.

Every sample draws its random numbers from its own generator ``(seed, index)``; several samples
are rendered together (stacked as tiles of one canvas) by ``render_crops`` / ``render_scenes``,
which the datasets use for whole batches. A sample is the same whichever batch renders it (up to
float rounding, ~1e-5).

Scene attributes (WIDER-like):

- ``blur``: 0 clear, 1 normal (Gaussian sigma ~ 1.2 % of the face height), 2 heavy (~ 3.5 %).
- ``occlusion``: fraction of the 68 landmarks covered by other objects (occluders, closer faces):
  0 if < 2 %, 1 (partial) if < 35 %, 2 (heavy) otherwise. Faces with more than 90 % covered are
  drawn but not labelled.
- ``difficulty`` (easy, medium, hard): easy = height >= 40 px and blur < 2 and occlusion < 2;
  medium = height >= 20 px and occlusion < 2; hard = every face. So easy ⊆ medium ⊆ hard.
"""

from __future__ import annotations

from .compose import _check_scheme  # noqa: F401  (imported from here by earlier code)
from .crops import render_crop, render_crops
from .scenes import EASY_MIN_HEIGHT, MEDIUM_MIN_HEIGHT, render_scene, render_scenes

__all__ = [
    "render_crop",
    "render_crops",
    "render_scene",
    "render_scenes",
    "EASY_MIN_HEIGHT",
    "MEDIUM_MIN_HEIGHT",
]
