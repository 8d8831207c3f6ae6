import pytest
import torch

from facelit.geometry.mirror import mirror_permutation


def test_mirror_permutation_of_symmetric_cloud():
    half = torch.rand(20, 3) + torch.tensor([0.1, 0.0, 0.0])
    verts = torch.cat([half, half * torch.tensor([-1.0, 1.0, 1.0]), torch.tensor([[0.0, 0.5, 0.5]])])
    perm = mirror_permutation(verts)
    assert torch.equal(perm[:20], torch.arange(20, 40)) and perm[40] == 40
    assert torch.equal(perm[perm], torch.arange(41))


def test_asymmetric_mesh_raises():
    with pytest.raises(ValueError, match="symmetric"):
        mirror_permutation(torch.tensor([[1.0, 0, 0], [0.5, 0, 0]]))
