"""Context modules applied to every pyramid level before the detection heads.

``SSH`` (Najibi et al. 2017, as used by RetinaFace): three branches over the input map,

- a 3x3 conv with C/2 channels;
- a shared 3x3 conv with C/4 channels followed by a 3x3 conv with C/4 (a 5x5 receptive field);
- the same shared conv followed by two 3x3 convs with C/4 (a 7x7 receptive field);

concatenated (C channels) and passed through ReLU. The last conv of every branch has BatchNorm but
no activation; the intermediate ones use LeakyReLU (slope as in the FPN).

``deformable=True`` replaces every 3x3 conv with a modulated deformable conv (DCNv2,
``torchvision.ops.DeformConv2d``) whose offsets and mask come from a plain 3x3 conv initialised to
zero (offsets 0, mask 0.5), so training starts from a regular, uniformly scaled conv. The RetinaFace
paper applies DCN in its context modules. Deformable convs have no ONNX export.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from facelit.nets.fpn import default_leaky_slope
from facelit.nets.mobilenet import conv_bn_act

__all__ = ["DeformConvBNAct", "SSH", "CONTEXT_MODULES", "create_context"]


class DeformConvBNAct(nn.Module):
    """Modulated deformable 3x3 conv (stride 1) + BatchNorm + optional activation.

    Args:
        cin, cout: channels.
        slope: as in :func:`facelit.nets.mobilenet.conv_bn_act` (None = no activation).
    """

    def __init__(self, cin: int, cout: int, slope: float | None = 0.0, kernel: int = 3) -> None:
        super().__init__()
        self.kernel = kernel
        self.offset = nn.Conv2d(cin, 3 * kernel * kernel, kernel, padding=kernel // 2)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if slope is None:
            self.act: nn.Module = nn.Identity()
        else:
            self.act = nn.LeakyReLU(slope, inplace=True) if slope > 0 else nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        k2 = self.kernel * self.kernel
        om = self.offset(x)
        offset, mask = om[:, : 2 * k2], torch.sigmoid(om[:, 2 * k2 :])
        return self.act(self.bn(self.conv(x, offset, mask)))


def _conv3x3(cin: int, cout: int, slope: float | None, deformable: bool) -> nn.Module:
    return DeformConvBNAct(cin, cout, slope) if deformable else conv_bn_act(cin, cout, 3, slope=slope)


class SSH(nn.Module):
    """SSH context module (see the module docstring).

    Args:
        in_channels: input channels.
        out_channels: output channels, divisible by 4.
        deformable: use deformable 3x3 convs.
        leaky_slope: slope of the intermediate activations; None = FPN default for ``out_channels``.

    (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(
        self, in_channels: int, out_channels: int, deformable: bool = False, leaky_slope: float | None = None
    ) -> None:
        super().__init__()
        if out_channels % 4 != 0:
            raise ValueError(f"SSH out_channels must be divisible by 4, got {out_channels}")
        slope = default_leaky_slope(out_channels) if leaky_slope is None else leaky_slope
        half, quarter = out_channels // 2, out_channels // 4
        self.branch3 = _conv3x3(in_channels, half, None, deformable)
        self.shared = _conv3x3(in_channels, quarter, slope, deformable)
        self.branch5 = _conv3x3(quarter, quarter, None, deformable)
        self.branch7_a = _conv3x3(quarter, quarter, slope, deformable)
        self.branch7_b = _conv3x3(quarter, quarter, None, deformable)

    def forward(self, x: Tensor) -> Tensor:
        shared = self.shared(x)
        out = torch.cat(
            (self.branch3(x), self.branch5(shared), self.branch7_b(self.branch7_a(shared))), dim=1
        )
        return torch.relu(out)


class _NoContext(nn.Module):
    """Identity context (ablation: heads read the FPN maps directly)."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool = False) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(f"context 'none' needs equal channels, got {in_channels} -> {out_channels}")
        if deformable:
            raise ValueError("context 'none' has no convolutions to make deformable")

    def forward(self, x: Tensor) -> Tensor:
        return x


CONTEXT_MODULES: dict[str, type[nn.Module]] = {"ssh": SSH, "none": _NoContext}


def create_context(name: str, in_channels: int, out_channels: int, deformable: bool = False) -> nn.Module:
    """Build a context module by name (``"ssh"`` or ``"none"``)."""
    try:
        cls = CONTEXT_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown context module {name!r}; known: {sorted(CONTEXT_MODULES)}") from None
    return cls(in_channels, out_channels, deformable=deformable)
