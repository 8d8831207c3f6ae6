"""facelit/geometry."""
