"""MobileNetV1 with a width multiplier, as used by the RetinaFace "mnet0.25" detector.

A timm-style feature backbone: ``forward`` returns the feature maps of the requested output
strides and ``feature_info`` (a ``timm.models.FeatureInfo``) publishes their channels and
reductions, so necks read channel counts from it.

Architecture (Howard et al. 2017, width 1.0 channels; the RetinaFace release uses width 0.25 and
LeakyReLU(0.1)): a stride-2 3x3 stem, then depthwise-separable blocks (3x3 depthwise + 1x1
pointwise, each with BatchNorm and the activation), grouped in stages that end at strides
2, 4, 8, 16 and 32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from timm.models import FeatureInfo
from torch import Tensor, nn

from facelit.nets.fused import ConvBNAct

__all__ = [
    "MobileNetV1",
    "mobilenet_v1_025",
    "mobilenet_v1_050",
    "mobilenet_v1_100",
    "conv_bn_act",
    "load_state_dict_file",
    "map_port_keys",
    "unwrap_state_dict",
]

# Per stage: list of (out_channels at width 1.0, stride) for its depthwise-separable blocks.
# The stem conv (32 channels at width 1.0, stride 2) precedes stage 0.
_STEM_CHANNELS = 32
_STAGES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((64, 1),),  # stride 2
    ((128, 2), (128, 1)),  # stride 4
    ((256, 2), (256, 1)),  # stride 8
    ((512, 2),) + ((512, 1),) * 5,  # stride 16
    ((1024, 2), (1024, 1)),  # stride 32
)


def conv_bn_act(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, slope: float | None = 0.0
) -> ConvBNAct:
    """Conv (same padding, no bias) + BatchNorm + activation: ReLU for ``slope == 0``,
    LeakyReLU(slope) for ``slope > 0``, none for ``slope is None``. Shared by the necks.
    BatchNorm is folded into the conv at inference (:class:`facelit.nets.fused.ConvBNAct`)."""
    act = None
    if slope is not None:
        act = nn.LeakyReLU(slope, inplace=True) if slope > 0 else nn.ReLU(inplace=True)
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return ConvBNAct(conv, nn.BatchNorm2d(cout), act)


def _separable(cin: int, cout: int, stride: int, slope: float) -> nn.Sequential:
    return nn.Sequential(
        conv_bn_act(cin, cin, 3, stride, cin, slope),
        conv_bn_act(cin, cout, 1, 1, 1, slope),
    )


# The MobileNet-0.25 of the common PyTorch RetinaFace port (Pytorch_Retinaface ``models/net.py``,
# ImageNet checkpoint ``mobilenetV1X0.25_pretrain.tar``): ``stage1`` = stem + 5 blocks, ``stage2`` = 6,
# ``stage3`` = 2; inside a block, indices 0/1 are the depthwise conv/BN and 3/4 the pointwise conv/BN.
_PORT_STAGES: tuple[tuple[str, int], ...] = (("stage1", 6), ("stage2", 6), ("stage3", 2))
_PORT_BLOCK_LAYERS = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1"}


def _port_key_map() -> dict[str, str]:
    """{port module: our module}, e.g. ``stage1.0.1`` -> ``stem.1``, ``stage2.0.3`` -> ``stages.3.0.1.0``."""
    ours = [f"stages.{i}.{j}" for i, blocks in enumerate(_STAGES) for j in range(len(blocks))]
    theirs = [f"{name}.{j}" for name, n in _PORT_STAGES for j in range(n)]
    mapping = {f"{theirs[0]}.{layer}": f"stem.{layer}" for layer in ("0", "1")}  # conv, BN
    for port_block, our_block in zip(theirs[1:], ours, strict=True):
        for port_layer, our_layer in _PORT_BLOCK_LAYERS.items():
            mapping[f"{port_block}.{port_layer}"] = f"{our_block}.{our_layer}"
    return mapping


def map_port_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a Pytorch_Retinaface MobileNetV1 state dict (``stage1.*``, ``stage2.*``, ``stage3.*``,
    ``fc.*``) to this module's names; the classifier (``fc.*``) is dropped.

    Raises:
        ValueError: a key that is neither a known port layer nor the classifier (named).
    """
    mapping = _port_key_map()
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        module, _, param = key.rpartition(".")
        if module not in mapping:
            raise ValueError(
                f"unknown key {key!r} in a MobileNetV1 port checkpoint (expected stage1/2/3.* or fc.*)"
            )
        out[f"{mapping[module]}.{param}"] = value
    return out


def unwrap_state_dict(state: object, source: object) -> dict[str, Tensor]:
    """The tensor dict of a checkpoint: a plain state dict, or one under ``state_dict`` / ``model``,
    with DataParallel's ``module.`` prefixes removed. ``source`` names the file in errors."""
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{source}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_dict_file(module: nn.Module, weights_file: str | Path) -> None:
    """Load a local checkpoint into ``module`` (a :class:`MobileNetV1`).

    Accepted layouts: this module's own state dict (plain, or under ``state_dict``/``model``, with
    or without ``module.`` prefixes) and the ImageNet checkpoint of the common PyTorch RetinaFace
    port (``stage1.*``, ``stage2.*``, ``stage3.*``, ``fc.*``; :func:`map_port_keys`). Weights of
    stages the module does not build (smaller ``out_strides``) are skipped; every weight the module
    has must be in the file.

    Raises:
        FileNotFoundError: no such file. ValueError: the file does not fit (keys named).
    """
    path = Path(weights_file)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    if any(k.startswith("stage1.") for k in state):
        state = map_port_keys(state)
    expected = module.state_dict()
    built = {k.split(".")[1] for k in expected if k.startswith("stages.")}
    state = {k: v for k, v in state.items() if not (k.startswith("stages.") and k.split(".")[1] not in built)}
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(
            f"weights file {path} does not fit {type(module).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} ({len(missing)} / {len(unexpected)} keys)"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights file {path} does not fit {type(module).__name__}: {err}") from None


class MobileNetV1(nn.Module):
    """MobileNetV1 feature extractor.

    Args:
        width_mult: channel multiplier (0.25 for RetinaFace mnet0.25).
        out_strides: strides of the returned feature maps, subset of (2, 4, 8, 16, 32).
        leaky_slope: LeakyReLU slope (0.1 in the RetinaFace release; 0 gives ReLU).

    Input (B, 3, H, W) (already normalised); output: list of (B, C_i, ceil(H / s_i), ceil(W / s_i)).
    """

    def __init__(
        self, width_mult: float = 0.25, out_strides: Sequence[int] = (8, 16, 32), leaky_slope: float = 0.1
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        stage_strides = [2 ** (i + 1) for i in range(len(_STAGES))]
        unknown = sorted(set(out_strides) - set(stage_strides))
        if unknown or len(out_strides) == 0:
            raise ValueError(
                f"MobileNetV1 out_strides must be a non-empty subset of {stage_strides}, "
                f"got {tuple(out_strides)}"
            )
        last = stage_strides.index(max(out_strides))
        ch = lambda c: max(8, int(c * width_mult))  # noqa: E731
        self.stem = conv_bn_act(3, ch(_STEM_CHANNELS), 3, 2, 1, leaky_slope)
        cin = ch(_STEM_CHANNELS)
        stages, info = [], []
        for i, blocks in enumerate(_STAGES[: last + 1]):
            layers = []
            for cout, stride in blocks:
                layers.append(_separable(cin, ch(cout), stride, leaky_slope))
                cin = ch(cout)
            stages.append(nn.Sequential(*layers))
            info.append({"num_chs": cin, "reduction": stage_strides[i], "module": f"stages.{i}"})
        self.stages = nn.ModuleList(stages)
        self._out_positions = tuple(stage_strides.index(s) for s in sorted(out_strides))
        self.feature_info = FeatureInfo(info, self._out_positions)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self._out_positions:
                out.append(x)
        return out


def _factory(width: float):
    def create(
        out_strides: Sequence[int] = (8, 16, 32), weights_file: str | Path | None = None
    ) -> MobileNetV1:
        model = MobileNetV1(width_mult=width, out_strides=out_strides)
        if weights_file is not None:
            load_state_dict_file(model, weights_file)
        return model

    create.__doc__ = f"MobileNetV1 x{width} feature backbone (optionally loading a local state dict)."
    return create


mobilenet_v1_025 = _factory(0.25)
mobilenet_v1_050 = _factory(0.5)
mobilenet_v1_100 = _factory(1.0)
