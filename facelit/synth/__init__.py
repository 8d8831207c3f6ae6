"""facelit/synth."""
