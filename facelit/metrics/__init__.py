"""facelit/metrics."""
