"""facelit/losses: detection (multibox + OHEM) and mesh losses."""

from facelit.losses.mesh import mesh_edge_loss, mesh_edges, mesh_vertex_loss
from facelit.losses.multibox import MultiBoxLoss, select_hard_negatives

__all__ = ["MultiBoxLoss", "select_hard_negatives", "mesh_edge_loss", "mesh_edges", "mesh_vertex_loss"]
