"""Data augmentation: per-sample (CPU DataLoader workers) and batched (device, kornia) paths.

- :mod:`facelit.augment.geometry`: affine matrices in the pixel-area frame, point/box transforms,
  the conversion to kornia's pixel-centre frame and the batched warp.
- :mod:`facelit.augment.photometric`: SSD/RetinaFace brightness, contrast, saturation, hue.
- :mod:`facelit.augment.detection`: the RetinaFace crop/flip/resize recipe for detection samples.
- :mod:`facelit.augment.landmarks`: flip/rotation/scale/shift for face crops, with pose labels.
"""

from facelit.augment.detection import BatchedDetectionAugment, DetectionAugment
from facelit.augment.geometry import from_kornia_frame, to_kornia_frame, transform_points, warp_image
from facelit.augment.landmarks import BatchedLandmarkAugment, LandmarkAugment, augment_pose
from facelit.augment.photometric import PhotometricDistort

__all__ = [
    "DetectionAugment",
    "BatchedDetectionAugment",
    "LandmarkAugment",
    "BatchedLandmarkAugment",
    "augment_pose",
    "PhotometricDistort",
    "to_kornia_frame",
    "from_kornia_frame",
    "transform_points",
    "warp_image",
]
