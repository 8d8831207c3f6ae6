"""facelit.synth: the procedural synthetic face world (heads, crops, scenes, domains), rendered with torch.

Everything is deterministic in (seed, index); see ``world`` for the sample contracts (``crops`` and
``scenes`` render them, from the shared steps of ``compose``), ``posing`` for the camera,
``accessories`` / ``soup`` / ``features`` / ``render`` for the renderer, ``head`` / ``templates``
for the parametric heads and ``facelit.geometry.pose`` for the angle convention.
``video`` renders clips (one identity, smooth pose/expression/lighting, passing occluders) from the
crop renderer. ``render_crops`` / ``render_scenes`` (and the datasets' ``__getitems__``) render
several samples at once, several times faster than one by one. The renderer issues many
small tensor ops: run it single-threaded (DataLoader workers are), intra-op threads only slow it.
"""

from .datasets import FaceCropDataset, SceneDataset
from .domains import DOMAINS, Domain, get_domain
from .head import SPECIES, HeadModel, head_model
from .video import VIDEO_DOMAIN, ClipMotion, SyntheticClipDataset, render_clip, render_clips
from .world import render_crop, render_crops, render_scene, render_scenes

__all__ = [
    "head_model",
    "HeadModel",
    "SPECIES",
    "Domain",
    "DOMAINS",
    "get_domain",
    "render_crop",
    "render_crops",
    "render_scene",
    "render_scenes",
    "FaceCropDataset",
    "SceneDataset",
    "VIDEO_DOMAIN",
    "ClipMotion",
    "render_clip",
    "render_clips",
    "SyntheticClipDataset",
]
