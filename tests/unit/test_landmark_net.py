"""LandmarkRegressor: both heads, mean-shape initialisation, soft-argmax frame, local weights."""

from __future__ import annotations

import pytest
import timm
import torch

from facelit.nets.landmark_net import LandmarkRegressor, soft_argmax_2d


def test_regression_head_starts_at_the_mean_shape():
    torch.manual_seed(0)
    mean_shape = torch.rand(5, 2)
    net = LandmarkRegressor("resnet18", num_points=5, mean_shape=mean_shape).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, 5, 2)
        assert (out - mean_shape).abs().max() < 0.05  # small weights: close to the mean shape
        net.fc.weight.zero_()
        assert torch.allclose(net(x), mean_shape.expand(2, 5, 2))
    default = LandmarkRegressor("resnet18", num_points=3)
    assert torch.allclose(default.fc.bias, torch.full((6,), 0.5))
    with pytest.raises(ValueError, match=r"mean_shape must be \(5, 2\)"):
        LandmarkRegressor("resnet18", num_points=5, mean_shape=torch.rand(4, 2))


def test_normalisation_inside_forward_uses_backbone_stats():
    net = LandmarkRegressor("resnet18", num_points=2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    assert torch.allclose(net.normalize(mean.expand(1, 3, 4, 4)), torch.zeros(1, 3, 4, 4), atol=1e-6)


def test_soft_argmax_uses_cell_centres():
    hm = torch.full((1, 2, 4, 8), -1e4)
    hm[0, 0, 1, 5] = 0.0  # cell (row 1, col 5) -> ((5 + 0.5) / 8, (1 + 0.5) / 4)
    hm[0, 1] = 0.0  # uniform -> the centre
    out = soft_argmax_2d(hm)
    assert torch.allclose(out[0, 0], torch.tensor([5.5 / 8, 1.5 / 4]))
    assert torch.allclose(out[0, 1], torch.tensor([0.5, 0.5]))


def test_heatmap_head_shapes_range_and_gradients():
    net = LandmarkRegressor("resnet18", num_points=4, head="heatmap", head_channels=16)
    x = torch.rand(2, 3, 32, 64)
    out = net(x)
    with torch.no_grad():
        assert net.heatmaps(x).shape == (2, 4, 8, 16)  # stride 4
    assert out.shape == (2, 4, 2) and out.min() >= 0 and out.max() <= 1
    out.sum().backward()
    assert net.backbone.conv1.weight.grad is not None
    with pytest.raises(ValueError, match="multiple of the backbone reduction 32"):
        net(torch.rand(1, 3, 60, 32))
    with pytest.raises(ValueError, match="mean_shape initialises the regression head"):
        LandmarkRegressor("resnet18", num_points=4, head="heatmap", mean_shape=torch.rand(4, 2))


def test_seresnet_backbone_smoke():
    names = timm.list_models("*seresnet18*")
    assert "seresnet18" in names
    net = LandmarkRegressor("seresnet18", num_points=68).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 68, 2)


def test_local_weights_file(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    reg = LandmarkRegressor("resnet18", num_points=3, weights_file=path)
    assert torch.equal(reg.backbone.conv1.weight, source.conv1.weight)
    hm = LandmarkRegressor("resnet18", num_points=3, head="heatmap", weights_file=path, head_channels=8)
    assert torch.equal(hm.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        LandmarkRegressor("resnet18", weights_file=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown head"):
        LandmarkRegressor("resnet18", head="transformer")


def test_flatten_pool_keeps_where_features_lie():
    """pool='flatten' feeds every cell of the (C, h, w) map to the linear layer; 'avg' pools it away."""
    torch.manual_seed(0)
    flat = LandmarkRegressor("resnet18", num_points=3, pool="flatten", input_size=64).eval()
    assert flat.grid == (2, 2) and flat.fc.in_features == 512 * 2 * 2
    avg = LandmarkRegressor("resnet18", num_points=3).eval()
    assert avg.fc.in_features == 512
    features = torch.rand(1, 512, 2, 2)
    swapped = features.flip(-1)  # the same features, left and right cells exchanged
    flat.backbone.forward = lambda x: features if x[0, 0, 0, 0] > 0 else swapped  # type: ignore[method-assign]
    avg.backbone.forward = lambda x: (features if x[0, 0, 0, 0] > 0 else swapped).mean((-2, -1))  # type: ignore[method-assign]
    with torch.no_grad():
        a, b = torch.ones(1, 3, 64, 64), torch.full((1, 3, 64, 64), -1.0)
        assert not torch.allclose(flat(a), flat(b))  # position reaches the output
        assert torch.allclose(avg(a), avg(b))  # global pooling cannot tell the two apart
    out = LandmarkRegressor("resnet18", num_points=3, pool="flatten", input_size=64)(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 3, 2)
    with pytest.raises(
        ValueError, match=r"built for a \(2, 2\) feature map, got \(3, 3\) from a 96x96 input"
    ):
        LandmarkRegressor("resnet18", num_points=3, pool="flatten", input_size=64)(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="pool='flatten' needs head='regression' and a positive input_size"):
        LandmarkRegressor("resnet18", pool="flatten")
    with pytest.raises(ValueError, match="pool='flatten' needs head='regression'"):
        LandmarkRegressor("resnet18", head="heatmap", pool="flatten", input_size=64)
    with pytest.raises(ValueError, match="unknown pool"):
        LandmarkRegressor("resnet18", pool="max")
