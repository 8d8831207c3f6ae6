"""facelit: Lightning-free building blocks for face-analysis research (nets, losses, metrics,
geometry, datasets, augmentation and the synthetic face world)."""

__version__ = "0.1.0"
