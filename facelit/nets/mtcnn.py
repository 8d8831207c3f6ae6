"""MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", IEEE SPL 2016): P-Net (12x12, fully convolutional), R-Net (24x24) and O-Net (48x48), and
loading of the pretrained release.

Convention
----------
Inputs are float RGB in [0, 1], (B, 3, H, W); the nets normalise them themselves as the release
does, ``(255 x - 127.5) * 0.0078125`` (:class:`MTCNNNormalize`). Every net returns a dict of raw
outputs (no softmax): ``logits`` (B, 2[, h, w]) (index 1 = face), ``boxes`` (B, 4[, h, w]) offsets
of the box corners (x1, y1, x2, y2) as fractions of the input window's side, and optionally
``landmarks`` (B, 10[, h, w]) in the release's order x1..x5 then y1..y5, as fractions of the
window (0 = left/top edge, 1 = right/bottom edge). P-Net outputs are maps (stride 2, one cell per
12x12 window); R/O-Net outputs are vectors.

Pretrained weights
------------------
The release converted by facenet-pytorch (MIT licence; its wheel ships them as
``facenet_pytorch/data/{pnet,rnet,onet}.pt``) loads into these nets unchanged: the attribute names
equal its state-dict keys, its conv kernels (stored spatially transposed relative to the original
Caffe models) are used as they are, and R/O-Net flatten their last feature map in (W, H, C) order
(``x.permute(0, 3, 2, 1)``) before the dense layers, as the dense weights expect. A copy ships with
facelit (``PACKAGE_WEIGHTS_DIR``); :func:`load_pretrained` reads a user's own copy as well.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "INPUT_MEAN",
    "INPUT_SCALE",
    "STAGE_SIZES",
    "PACKAGE_WEIGHTS_DIR",
    "MTCNNNormalize",
    "PNet",
    "RNet",
    "ONet",
    "build_stage_net",
    "load_pretrained",
    "pretrained_cascade_nets",
    "PRETRAINED",
    "load_stage",
]

INPUT_MEAN = 127.5  # the release's input centring, in 8-bit grey levels
INPUT_SCALE = 0.0078125  # 1 / 128
STAGE_SIZES = {"pnet": 12, "rnet": 24, "onet": 48}  # input window side of each stage
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "mtcnn"
_LANDMARK_OUTPUTS = 10
_WEIGHTS_HELP = (
    "The pretrained MTCNN weights (pnet.pt, rnet.pt, onet.pt) ship with facelit in {pkg} and with the "
    "facenet-pytorch wheel (MIT licence) in facenet_pytorch/data/; pass that folder as weights_dir."
)


class MTCNNNormalize(nn.Module):
    """[0, 1] RGB -> the release's input scale, ``(255 x - 127.5) / 128``."""

    def forward(self, x: Tensor) -> Tensor:
        return (x * 255.0 - INPUT_MEAN) * INPUT_SCALE


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameter) that runs channels_last maps as a (pixels, C) matrix, several
    times faster on CPU than PyTorch's PReLU kernel on channels_last tensors; same values."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            nhwc = x.permute(0, 2, 3, 1)
            return F.prelu(nhwc.reshape(-1, x.shape[1]), self.weight).view(nhwc.shape).permute(0, 3, 1, 2)
        return super().forward(x)


def _flatten_whc(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, W * H * C) in the released dense layers' (W, H, C) order."""
    return x.permute(0, 3, 2, 1).flatten(1)


class PNet(nn.Module):
    """Proposal net: conv3x3-10, PReLU, maxpool 2/2, conv3x3-16, PReLU, conv3x3-32, PReLU, 1x1 heads.

    Args:
        landmarks: add the 10-output landmark head of the paper's figure (the release has none).

    Output maps are (B, k, h, w) with h = ceil((H - 2) / 2) - 4 (one cell per 12x12 window, stride 2).
    """

    def __init__(self, landmarks: bool = False) -> None:
        super().__init__()
        self.normalize = MTCNNNormalize()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)
        self.conv4_3 = nn.Conv2d(32, _LANDMARK_OUTPUTS, kernel_size=1) if landmarks else None

    def stem(self, x: Tensor) -> Tensor:
        """Normalised input -> conv1 + PReLU (B, 10, H - 2, W - 2), before the first pool."""
        return self.prelu1(self.conv1(x))

    def trunk(self, x: Tensor) -> Tensor:
        """Pooled stem features -> the 32-channel map the heads read."""
        return self.prelu3(self.conv3(self.prelu2(self.conv2(x))))

    def heads(self, feats: Tensor) -> dict[str, Tensor]:
        """The 1x1 heads as one matrix product over the channels (the same arithmetic as three 1x1
        convs, without the slow small-output conv path on channels_last maps)."""
        convs = [c for c in (self.conv4_1, self.conv4_2, self.conv4_3) if c is not None]
        weight = torch.cat([c.weight.flatten(1) for c in convs])
        bias = torch.cat([c.bias for c in convs])
        out = F.linear(feats.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
        parts = out.split([c.out_channels for c in convs], dim=1)
        names = ("logits", "boxes", "landmarks")
        return dict(zip(names, parts, strict=False))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) in [0, 1], H, W >= 12 -> maps ``logits`` (B, 2, h, w), ``boxes`` (B, 4, h, w)."""
        return self.heads(self.trunk(self.pool1(self.stem(self.normalize(images)))))


class RNet(nn.Module):
    """Refinement net (24x24): conv3x3-28, pool 3/2, conv3x3-48, pool 3/2, conv2x2-64, FC-128, heads.

    Args:
        landmarks: add a 10-output landmark head (the release has none).
    """

    def __init__(self, landmarks: bool = False) -> None:
        super().__init__()
        self.normalize = MTCNNNormalize()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)
        self.dense5_3 = nn.Linear(128, _LANDMARK_OUTPUTS) if landmarks else None

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """(B, 3, 24, 24) in [0, 1] -> ``logits`` (B, 2), ``boxes`` (B, 4)[, ``landmarks`` (B, 10)]."""
        x = self.pool1(self.prelu1(self.conv1(self.normalize(images))))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        out = {"logits": self.dense5_1(x), "boxes": self.dense5_2(x)}
        if self.dense5_3 is not None:
            out["landmarks"] = self.dense5_3(x)
        return out


class ONet(nn.Module):
    """Output net (48x48): conv3x3-32, pool 3/2, conv3x3-64, pool 3/2, conv3x3-64, pool 2/2,
    conv2x2-128, FC-256 (dropout), heads face (2), box (4), landmarks (10).

    Args:
        dropout: dropout before the FC-256 layer during training (the paper's O-Net; 0 disables it).
    """

    def __init__(self, dropout: float = 0.25) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.normalize = MTCNNNormalize()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = PReLU(128)
        self.dropout = nn.Dropout(dropout)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, _LANDMARK_OUTPUTS)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """(B, 3, 48, 48) in [0, 1] -> ``logits`` (B, 2), ``boxes`` (B, 4), ``landmarks`` (B, 10)."""
        x = self.pool1(self.prelu1(self.conv1(self.normalize(images))))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = _flatten_whc(self.prelu4(self.conv4(x)))
        x = self.prelu5(self.dense5(self.dropout(x)))
        return {"logits": self.dense6_1(x), "boxes": self.dense6_2(x), "landmarks": self.dense6_3(x)}


def build_stage_net(stage: str, landmarks: bool = False) -> nn.Module:
    """The net of ``stage`` (``pnet`` | ``rnet`` | ``onet``; O-Net always has its landmark head)."""
    if stage == "pnet":
        return PNet(landmarks)
    if stage == "rnet":
        return RNet(landmarks)
    if stage == "onet":
        return ONet()
    raise ValueError(f"unknown MTCNN stage {stage!r}; use pnet, rnet or onet")


def _weights_path(weights_dir: str | Path | None, stage: str) -> Path:
    folder = PACKAGE_WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    path = folder / f"{stage}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"MTCNN weights file not found: {path}. " + _WEIGHTS_HELP.format(pkg=PACKAGE_WEIGHTS_DIR)
        )
    return path


def load_pretrained(net: nn.Module, stage: str, weights_dir: str | Path | None = None) -> nn.Module:
    """Load the released weights of ``stage`` into ``net`` (in place) and return it.

    Every released tensor must load with its exact shape; the only keys allowed to stay untrained
    are our optional landmark heads of P-Net/R-Net (the release has none).

    Args:
        net: a :class:`PNet` / :class:`RNet` / :class:`ONet` matching ``stage``.
        weights_dir: folder with ``{pnet,rnet,onet}.pt`` (None: the copy shipped with facelit).

    Raises:
        FileNotFoundError: naming the missing file and where the weights come from.
        ValueError: when the file does not fit the net (wrong stage or a corrupt file).
    """
    path = _weights_path(weights_dir, stage)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (unpickling errors have many types)
        raise ValueError(f"cannot read MTCNN weights {path}: {err}") from err
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        raise ValueError(f"{path} does not fit {type(net).__name__}: {err}") from err
    missing = [k for k in result.missing_keys if not k.startswith(("conv4_3.", "dense5_3."))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit {type(net).__name__}: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return net


def pretrained_cascade_nets(weights_dir: str | Path | None = None) -> tuple[PNet, RNet, ONet]:
    """P-, R- and O-Net with the released weights, in eval mode."""
    nets = (PNet(), RNet(), ONet())
    for stage, net in zip(STAGE_SIZES, nets, strict=False):
        load_pretrained(net, stage, weights_dir).eval()
    return nets  # type: ignore[return-value]


PRETRAINED = "pretrained"  # a stage source naming the released weights


def load_stage(source: str | Path, stage: str, weights_dir: str | Path | None = None) -> nn.Module:
    """A trained stage net, in eval mode, from ``source``.

    Args:
        source: ``"pretrained"`` (the released weights from ``weights_dir``), a Lightning checkpoint
            of ``lightning_modules.mtcnn.MTCNNModule`` (its ``state_dict`` holds the net under
            ``net.``; its hyper-parameters name the stage), or a plain state dict saved with
            ``torch.save(net.state_dict())``.
        stage: ``pnet`` | ``rnet`` | ``onet``.

    Raises:
        FileNotFoundError / ValueError: naming the file when it is missing, of another stage or unfit.
    """
    if str(source) == PRETRAINED:
        return load_pretrained(build_stage_net(stage), stage, weights_dir).eval()
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"MTCNN {stage} checkpoint not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    state = blob.get("state_dict", blob)
    hparams = blob.get("hyper_parameters", {})
    if hparams.get("stage", stage) != stage:
        raise ValueError(f"{path} holds an MTCNN {hparams['stage']} net, not the {stage} asked for")
    if any(k.startswith("net.") for k in state):
        state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    landmarks = stage == "onet" or any(k.startswith(("conv4_3.", "dense5_3.")) for k in state)
    net = build_stage_net(stage, landmarks)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the MTCNN {stage} net: {err}") from err
    return net.eval()
