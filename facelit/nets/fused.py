"""Conv + BatchNorm + activation with BatchNorm folded into the convolution at inference.

In training (or whenever autograd records) :class:`ConvBNAct` runs conv, BatchNorm and the
activation as three modules, exactly like the ``nn.Sequential`` it subclasses (same state-dict keys
``0.*`` conv, ``1.*`` BatchNorm). In eval mode without autograd it runs one convolution whose
weight and bias fold the BatchNorm's running statistics and affine parameters:

    w' = w * g / sqrt(v + eps),   b' = beta - m * g / sqrt(v + eps)   (per output channel)

The folded pair is computed once and cached, keyed by the ``_version`` counters, device and dtype
of every tensor it is computed from, so an optimizer step, ``load_state_dict`` or ``.to(...)``
invalidates it. The folded weight is stored channels_last (CPU MKLDNN and cuDNN convolutions run
faster on channels_last maps; a contiguous input still works). A 1x1 stride-1 conv on a
channels_last map runs as one GEMM over the (pixels, C) matrix the map already is (PyTorch's CPU
conv copies such maps to NCHW for its 1x1 path at batch 1). Folding changes results only by float
rounding (~1e-6 relative).

On CPU at VGA (mnet0.25 RetinaFace, 1 thread) BatchNorm is ~15 % of the eager forward; folding it
and running channels_last makes the forward ~25 % faster (``benchmarks/peer_retinaface.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBNAct", "fold_conv_bn"]


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight (C_out, C_in / groups, k, k) and bias (C_out,) of the conv that equals ``bn(conv(x))``
    with ``bn`` in eval mode (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    return weight.contiguous(memory_format=torch.channels_last), shift


def _tracing() -> bool:
    """Exporters and compilers trace the plain modules (no host-side cache on traced tensors)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


class ConvBNAct(nn.Sequential):
    """``nn.Sequential(conv, bn[, act])`` that folds ``bn`` into ``conv`` at inference (module docstring).

    Args:
        conv: a 2D convolution (any stride, groups, padding; ``padding_mode="zeros"``).
        bn: its BatchNorm.
        act: optional activation applied after BatchNorm.

    (B, C_in, H, W) -> (B, C_out, H', W').
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: nn.Module | None = None) -> None:
        layers: list[nn.Module] = [conv, bn] + ([act] if act is not None else [])
        super().__init__(*layers)
        self._folded: tuple[tuple, Tensor, Tensor] | None = None
        self._pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
        self._pointwise = self._pointwise and conv.padding in (0, (0, 0))

    def _cache_key(self) -> tuple:
        conv, bn = self[0], self[1]
        tensors = [conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var]
        return tuple(
            (t._version, t.data_ptr(), t.device, t.dtype) if t is not None else None for t in tensors
        )

    def folded(self) -> tuple[Tensor, Tensor]:
        """The cached folded (weight, bias), recomputed when any source tensor changed."""
        key = self._cache_key()
        if self._folded is None or self._folded[0] != key:
            with torch.no_grad():
                weight, bias = fold_conv_bn(self[0], self[1])
            self._folded = (key, weight, bias)
        return self._folded[1], self._folded[2]

    def forward(self, x: Tensor) -> Tensor:
        if self.training or torch.is_grad_enabled() or self[1].running_mean is None or _tracing():
            return super().forward(x)
        conv = self[0]
        weight, bias = self.folded()
        if self._pointwise and x.is_contiguous(memory_format=torch.channels_last):
            # a 1x1 conv is a GEMM over (pixels, C); channels_last maps are that matrix already, while
            # PyTorch's CPU conv would copy them to NCHW for its 1x1 path (batch 1, one thread)
            y = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
        else:
            y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return self[2](y) if len(self) > 2 else y
