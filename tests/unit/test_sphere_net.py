"""SphereFace-N and the timm embedding alternative."""

from __future__ import annotations

import pytest
import torch

from facelit.nets.sphere import SPHERE_UNITS, SphereNet, TimmEmbedding, create_embedding_net


def test_sphere20_layout_at_112x96() -> None:
    net = SphereNet(20)
    assert net.fc5.in_features == 7 * 6 * 512 and net.fc5.out_features == 512
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20  # 4 stride-2 convs + 2 x (1 + 2 + 4 + 1) residual convs (then fc5)
    assert [c.out_channels for c in convs if c.stride == (2, 2)] == [64, 128, 256, 512]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


@pytest.mark.parametrize("depth", sorted(SPHERE_UNITS))
def test_depths_count_their_layers(depth: int) -> None:
    net = SphereNet(depth, (32, 32), 16, width=0.125)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert convs == depth
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 16)


def test_small_crops_and_prototxt_units() -> None:
    net = SphereNet(image_size=(56, 48), embedding_dim=64, width=0.25, units=(3, 7, 16, 3))
    assert net.fc5.in_features == 4 * 3 * 128
    assert net(torch.rand(1, 3, 56, 48)).shape == (1, 64)
    with pytest.raises(ValueError, match=r"built for \(56, 48\)"):
        net(torch.rand(1, 3, 112, 96))


def test_timm_alternative_has_an_embedding_head() -> None:
    net = create_embedding_net("resnet10t", (64, 64), embedding_dim=32)
    assert isinstance(net, TimmEmbedding)
    assert net.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 32)


def test_bad_names() -> None:
    with pytest.raises(ValueError, match="depth must be one of"):
        SphereNet(18)
    with pytest.raises(ValueError, match="sphere"):
        create_embedding_net("spherex", (112, 96))
