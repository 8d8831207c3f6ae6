"""facelit/datasets."""
