"""Feature backbones by name: any timm ``features_only`` model, plus our MobileNetV1 variants.

Every backbone returned by :func:`create_backbone` maps a normalised (B, 3, H, W) tensor to a list
of feature maps at the requested output strides and publishes ``feature_info``
(``timm.models.FeatureInfo``: ``channels()`` and ``reduction()`` per returned map), which necks
read instead of hard-coding channel counts.

Input normalisation: models take float RGB in [0, 1] (DESIGN.md) and normalise as their first
step with :class:`ImageNormalize` (ImageNet mean/std, defined once here).

No network access: timm models are built with ``pretrained=False`` unless ``weights_file`` names a
local checkpoint, loaded through ``pretrained_cfg_overlay=dict(file=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import timm
import torch
from timm.models import FeatureInfo
from torch import Tensor, nn

from facelit.nets.mobilenet import mobilenet_v1_025, mobilenet_v1_050, mobilenet_v1_100, unwrap_state_dict

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageNormalize",
    "TimmBackbone",
    "OWN_BACKBONES",
    "create_backbone",
    "timm_checkpoint_state",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

OWN_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mnet0.25": mobilenet_v1_025,
    "mnet0.5": mobilenet_v1_050,
    "mnet1.0": mobilenet_v1_100,
}


class ImageNormalize(nn.Module):
    """(x - mean) / std per channel for (B, 3, H, W) RGB in [0, 1] (constants as buffers)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected images (B, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


# Prefixes under which checkpoints hold a backbone: DataParallel, torchvision's IntermediateLayerGetter
# in detectors (Pytorch_Retinaface's ``body.``), wrappers named ``backbone`` or ``model``.
_CHECKPOINT_PREFIXES = ("", "body.", "backbone.", "model.", "backbone.body.")


def timm_checkpoint_state(name: str, weights_file: str | Path) -> dict[str, Tensor]:
    """The weights of timm model ``name`` from a local checkpoint, under timm's key names.

    Accepted: a timm or torchvision classification checkpoint (for ResNets both use ``conv1``,
    ``bn1``, ``layer1..4``, ``fc``), plain or under ``state_dict``/``model``, with DataParallel
    ``module.`` prefixes, or with the whole backbone under one of ``body.``, ``backbone.``,
    ``model.`` (e.g. a detector checkpoint; its other keys are left out). The classifier is
    optional; every other weight of the model must be present (timm itself loads non-strictly for
    ``features_only`` and would leave missing weights random without a word).

    Raises:
        FileNotFoundError: no such file. ValueError: the checkpoint lacks weights (some named).
    """
    path = Path(weights_file)
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {name!r} not found: {path}")
    state = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    try:
        with torch.device("meta"):
            full = timm.create_model(name, pretrained=False)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise ValueError(f"cannot build timm backbone {name!r}: {err}") from None
    classifier = full.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    needed = {k for k in full.state_dict() if not any(k.startswith(c + ".") for c in classifier)}
    for prefix in _CHECKPOINT_PREFIXES:
        mapped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if needed <= mapped.keys():
            return {k: v for k, v in mapped.items() if k in needed}
    missing = sorted(needed - state.keys())
    raise ValueError(
        f"weights file {path} does not hold timm {name!r} weights under any of the prefixes "
        f"{[p for p in _CHECKPOINT_PREFIXES if p]}: {len(missing)} of {len(needed)} keys missing, e.g. "
        f"{missing[:4]}; the file's keys look like {sorted(state)[:4]}"
    )


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model returning the feature maps of ``out_strides``.

    The stage indices (``out_indices``) of the requested strides are read from the model's own
    ``feature_info``, probed on the ``meta`` device (no memory, no weights), so any timm CNN works
    whatever its stage layout (ResNets start at stride 2, ConvNeXts at 4).

    Args:
        name: timm model name, e.g. ``"resnet50"``, ``"mobilenetv3_large_100"``.
        out_strides: strides of the returned maps; each must be one of the model's reductions.
        weights_file: local checkpoint, key-mapped by :func:`timm_checkpoint_state` and handed to
            timm through ``pretrained_cfg_overlay`` (nothing is downloaded).
    """

    def __init__(
        self, name: str, out_strides: Sequence[int] = (8, 16, 32), weights_file: str | Path | None = None
    ) -> None:
        super().__init__()
        kwargs: dict = {"features_only": True, "pretrained": False}
        if weights_file is not None:
            state = timm_checkpoint_state(name, weights_file)
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": state})
        try:
            with torch.device("meta"):
                probe = timm.create_model(name, features_only=True, pretrained=False).feature_info
        except RuntimeError as err:  # timm: "Unknown model (...)"
            raise ValueError(f"cannot build timm backbone {name!r}: {err}") from None
        reductions = list(probe.reduction())
        if len(out_strides) == 0 or any(s not in reductions for s in out_strides):
            raise ValueError(
                f"timm {name!r} provides strides {reductions}; cannot return {tuple(out_strides)}"
            )
        out_indices = tuple(probe.out_indices[reductions.index(s)] for s in sorted(out_strides))
        self.body = timm.create_model(name, out_indices=out_indices, **kwargs)
        self.feature_info: FeatureInfo = self.body.feature_info

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))


def create_backbone(
    name: str,
    out_strides: Sequence[int] = (8, 16, 32),
    pretrained: bool = False,
    weights_file: str | Path | None = None,
) -> nn.Module:
    """Build a feature backbone by name.

    Args:
        name: one of ``OWN_BACKBONES`` (``"mnet0.25"`` ...) or any timm model name.
        out_strides: strides of the returned maps, e.g. (8, 16, 32) or (4, 8, 16, 32).
        pretrained: must stay False unless ``weights_file`` is given (no hub downloads here);
            with ``weights_file`` it is implied.
        weights_file: local checkpoint file.

    Returns:
        module mapping (B, 3, H, W) to a list of maps, with ``feature_info``.
    """
    if pretrained and weights_file is None:
        raise ValueError(
            f"pretrained=True for {name!r} needs weights_file: this project never downloads weights; "
            "pass a local checkpoint path"
        )
    if name in OWN_BACKBONES:
        return OWN_BACKBONES[name](out_strides=out_strides, weights_file=weights_file)
    return TimmBackbone(name, out_strides=out_strides, weights_file=weights_file)
