"""Feature pyramid network (Lin et al. 2017) as used by RetinaFace.

Lateral 1x1 conv-BN-act per input level, top-down nearest upsampling to the exact size of the finer
level (so odd input sizes work), addition, and a 3x3 conv-BN-act smoothing on every merged level
(the coarsest input level has nothing to merge and keeps its lateral map, as in the RetinaFace
release). Extra coarser levels (RetinaFace paper: P6) come from stride-2 3x3 conv-BN-act layers,
the first on the coarsest *input* map (C5), the next ones on the previous extra level.

Channel counts of the inputs come from the backbone's ``feature_info``; nothing is hard-coded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from facelit.nets.mobilenet import conv_bn_act

__all__ = ["FPN", "default_leaky_slope"]


def default_leaky_slope(channels: int) -> float:
    """LeakyReLU slope of the RetinaFace release necks: 0.1 for narrow (<= 64 channel) necks, else ReLU."""
    return 0.1 if channels <= 64 else 0.0


class FPN(nn.Module):
    """Feature pyramid.

    Args:
        in_channels: channels of the input maps, finest first (``backbone.feature_info.channels()``).
        out_channels: channels of every output level (64 for mnet0.25, 256 in the paper).
        num_extra_levels: coarser stride-2 levels appended after the last input level (1 for P6).
        leaky_slope: activation slope; None picks :func:`default_leaky_slope`.

    Input: list of L maps (B, C_i, H_i, W_i), each level half the size of the previous.
    Output: list of L + num_extra_levels maps (B, out_channels, H_i, W_i), finest first.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_extra_levels: int = 0,
        leaky_slope: float | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels) == 0 or out_channels <= 0 or num_extra_levels < 0:
            raise ValueError(
                f"FPN needs input channels, positive out_channels and num_extra_levels >= 0; got "
                f"{tuple(in_channels)}, {out_channels}, {num_extra_levels}"
            )
        slope = default_leaky_slope(out_channels) if leaky_slope is None else leaky_slope
        self.lateral = nn.ModuleList(conv_bn_act(c, out_channels, 1, slope=slope) for c in in_channels)
        self.smooth = nn.ModuleList(
            conv_bn_act(out_channels, out_channels, 3, slope=slope) for _ in range(len(in_channels) - 1)
        )
        extra_in = [in_channels[-1]] + [out_channels] * max(0, num_extra_levels - 1)
        self.extra = nn.ModuleList(
            conv_bn_act(c, out_channels, 3, stride=2, slope=slope) for c in extra_in[:num_extra_levels]
        )
        self.out_channels = out_channels

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.lateral):
            raise ValueError(f"FPN built for {len(self.lateral)} input levels, got {len(features)}")
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        outs = [laterals[-1]]
        for i in range(len(laterals) - 2, -1, -1):
            top = F.interpolate(outs[0], size=laterals[i].shape[-2:], mode="nearest")
            outs.insert(0, self.smooth[i](laterals[i] + top))
        source = features[-1]
        for conv in self.extra:
            source = conv(source)
            outs.append(source)
        return outs
