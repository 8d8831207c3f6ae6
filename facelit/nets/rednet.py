"""RED-Net: a recurrent encoder-decoder for face alignment in video (Peng et al., ECCV 2016 / IJCV 2018).

Architecture (one network, weights shared over spatial steps and frames):

* **Encoder-decoder (SegNet style).** A VGG-16-style encoder with BatchNorm (stages of 2, 2, 3, 3, 3
  3x3 convolutions at widths ``widths``), each stage closed by a 2x2 stride-2 max-pool whose switch
  indices drive the max-unpooling of the mirrored decoder. The last decoder convolution outputs
  L + 1 response maps at input resolution (channel 0 = background, channel k + 1 = landmark k).
* **Spatial recurrence.** The input of step s is the image concatenated with the softmax of step
  s - 1's response maps (zeros at step 1): coarse-to-fine refinement with one network.
* **Temporal recurrence.** The bottleneck code (C channels at H/32 x W/32) is split in two halves
  of C/2 channels. The *identity* half is averaged over the valid frames of a clip (constant over
  the clip) and feeds an identity classifier (supervised identity disentangling). The
  *pose/expression* half is flattened, projected to ``lstm_hidden``, run through an LSTM over the
  frames and projected back; the result is added to the pose half (residual) before decoding.
  *Frame-by-frame mode* (``temporal=False``) runs exactly the same weights with the LSTM restarted
  at every frame (a sequence of length 1, zero state) and each frame's own identity half: no
  information crosses frames.
* **Regression sub-network.** From the L + 1 softmax maps plus the encoder's stage-2 and stage-4
  features to 2L coordinates, as offsets from the mean shape (normalised to the crop, [0, 1]),
  through a fully connected layer over the flattened H/32 map.

Convention: points are (x, y) in pixels of the input crop, pixel-area frame (pixel i covers
[i, i + 1), so a class centroid of pixel centres is ``index + 0.5``). Input side must be a
multiple of 2**5 = 32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from facelit.nets.backbones import ImageNormalize

__all__ = [
    "VGG16_WIDTHS",
    "VGG16_DEPTHS",
    "SegNetEncoder",
    "SegNetDecoder",
    "BottleneckState",
    "TemporalBottleneck",
    "RegressionNet",
    "RedNet",
    "RedNetOutput",
]

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
POOL = 2
# Encoder stages (1-based, as the paper counts them) whose outputs feed the regression sub-network.
REGRESSION_SKIP_STAGES = (2, 4)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _stage(cin: int, cout: int, depth: int) -> nn.Sequential:
    return nn.Sequential(*[_conv_bn_relu(cin if i == 0 else cout, cout) for i in range(depth)])


class SegNetEncoder(nn.Module):
    """VGG-style encoder; every stage ends with a 2x2 max-pool that keeps its switch indices.

    Args:
        in_channels: input channels (3 image + L + 1 feedback maps in RED-Net).
        widths: output channels per stage.
        depths: 3x3 convolutions per stage.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], depths: Sequence[int]) -> None:
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"widths {tuple(widths)} and depths {tuple(depths)} must have the same length")
        chans = [in_channels, *widths]
        self.stages = nn.ModuleList(_stage(chans[i], chans[i + 1], d) for i, d in enumerate(depths))
        self.pool = nn.MaxPool2d(POOL, POOL, return_indices=True)
        self.widths = tuple(widths)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[torch.Size], list[Tensor]]:
        """(N, C, H, W) -> code (N, widths[-1], H/32, W/32), pool indices, pre-pool sizes, and
        the pooled output of every stage (for skip features)."""
        indices, sizes, feats = [], [], []
        for stage in self.stages:
            x = stage(x)
            sizes.append(x.shape)
            x, idx = self.pool(x)
            indices.append(idx)
            feats.append(x)
        return x, indices, sizes, feats


class SegNetDecoder(nn.Module):
    """Mirror of :class:`SegNetEncoder`: max-unpool with the encoder's indices, then convolutions;
    the last convolution maps to ``out_channels`` without BN/ReLU (the response maps)."""

    def __init__(self, widths: Sequence[int], depths: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(POOL, POOL)
        rev_w, rev_d = list(widths)[::-1], list(depths)[::-1]
        stages = []
        for i, (w, d) in enumerate(zip(rev_w, rev_d)):
            out = rev_w[i + 1] if i + 1 < len(rev_w) else rev_w[-1]
            layers = [_conv_bn_relu(w, w) for _ in range(d - 1)] + [_conv_bn_relu(w, out)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(rev_w[-1], out_channels, 3, padding=1)

    def forward(self, code: Tensor, indices: list[Tensor], sizes: list[torch.Size]) -> Tensor:
        """code (N, C, h, w) -> (N, out_channels, H, W)."""
        x = code
        for stage, idx, size in zip(self.stages, indices[::-1], sizes[::-1]):
            x = stage(self.unpool(x, idx, output_size=size[-2:]))
        return self.head(x)


class BottleneckState(NamedTuple):
    """What the temporal bottleneck carries from one frame to the next (online tracking).

    ``h``, ``c``: (1, B, hidden) LSTM state; ``ident_sum``: (B, C/2, h, w) sum of the identity
    halves of the valid frames seen so far; ``count``: (B,) how many.
    """

    h: Tensor
    c: Tensor
    ident_sum: Tensor
    count: Tensor


class TemporalBottleneck(nn.Module):
    """Identity / pose-expression split of the bottleneck code with an LSTM over frames.

    The identity half at frame t is the mean of the identity halves of the valid frames 0..t (a
    causal running mean: constant up to noise over a clip, the same in training and in online
    tracking); at the end of a clip it is the clip mean that the identity classifier sees.

    Args:
        channels: channels C of the bottleneck code (even).
        spatial: side of the bottleneck map (input side / 32).
        hidden: LSTM hidden size.
    """

    def __init__(self, channels: int, spatial: int, hidden: int) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"the bottleneck code needs an even channel count to split, got {channels}")
        self.half = channels // 2
        flat = self.half * spatial * spatial
        self.project_in = nn.Linear(flat, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.project_out = nn.Linear(hidden, flat)
        nn.init.zeros_(self.project_out.weight)  # starts as the identity map on the pose half
        nn.init.zeros_(self.project_out.bias)

    def forward(
        self, code: Tensor, frame_mask: Tensor, temporal: bool, state: BottleneckState | None = None
    ) -> tuple[Tensor, Tensor, BottleneckState | None]:
        """Split, average identity over the clip so far, run the pose half through the LSTM.

        Args:
            code: (B, T, C, h, w) bottleneck codes.
            frame_mask: (B, T) bool, False on padding frames.
            temporal: carry the LSTM state over frames and share the clip's identity code; False
                runs each frame alone (LSTM on a length-1 sequence from zero state, own identity).
            state: carried state of the previous frames (temporal mode only); None starts a clip.

        Returns:
            the recombined code (B, T, C, h, w), the identity code (B, T, C/2, h, w) used, and the
            state after the last frame (None in frame-by-frame mode).
        """
        b, t = code.shape[:2]
        ident, pose = code[:, :, : self.half], code[:, :, self.half :]
        seq = self.project_in(pose.flatten(2))  # (B, T, hidden)
        if not temporal:
            out = self.lstm(seq.reshape(b * t, 1, -1))[0].reshape(b, t, -1)
            return torch.cat([ident, pose + self.project_out(out).view_as(pose)], dim=2), ident, None
        weight = frame_mask.to(code.dtype).view(b, t, 1, 1, 1)
        sums = (ident * weight).cumsum(1)
        counts = weight.cumsum(1)
        hc = None
        if state is not None:
            sums = sums + state.ident_sum.unsqueeze(1)
            counts = counts + state.count.view(b, 1, 1, 1, 1)
            hc = (state.h, state.c)
        ident = torch.where(counts > 0, sums / counts.clamp(min=1.0), ident)
        out, (h, c) = self.lstm(seq, hc)
        new_state = BottleneckState(h, c, sums[:, -1], counts[:, -1].view(b))
        return torch.cat([ident, pose + self.project_out(out).view_as(pose)], dim=2), ident, new_state


class RegressionNet(nn.Module):
    """Regression sub-network: response maps + encoder stage-2/4 features -> 2L shape offsets.

    The maps are reduced to the stage-2 resolution (H/4) by strided convolutions, concatenated with
    the stage-2 features, reduced to H/16, concatenated with the stage-4 features, reduced to
    ``POOL`` x smaller channels, flattened (so that the fully connected layer sees *where* the
    evidence is, which global pooling would discard) and mapped to (L, 2) offsets from the mean
    shape (crop-normalised units).

    Args:
        num_points: L. widths: encoder stage widths. width: channels of the sub-network.
        image_size: crop side (fixes the flattened size).
    """

    def __init__(self, num_points: int, widths: Sequence[int], width: int, image_size: int) -> None:
        super().__init__()
        s2, s4 = (widths[i - 1] for i in REGRESSION_SKIP_STAGES)
        self.to_s2 = nn.Sequential(
            nn.Conv2d(num_points + 1, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.to_s4 = nn.Sequential(
            _conv_bn_relu(width + s2, width), nn.MaxPool2d(POOL * 2, POOL * 2), _conv_bn_relu(width, width)
        )
        self.merge = nn.Sequential(_conv_bn_relu(width + s4, width), nn.MaxPool2d(POOL, POOL))
        side = image_size // POOL ** (max(REGRESSION_SKIP_STAGES) + 1)
        self.fc = nn.Linear(width * side * side, 2 * num_points)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.num_points = num_points

    def forward(self, maps: Tensor, skip2: Tensor, skip4: Tensor) -> Tensor:
        """maps (N, L+1, H, W), skip2 (N, C2, H/4, W/4), skip4 (N, C4, H/16, W/16) -> (N, L, 2)."""
        x = self.to_s4(torch.cat([self.to_s2(maps), skip2], dim=1))
        x = self.merge(torch.cat([x, skip4], dim=1)).flatten(1)
        return self.fc(x).view(-1, self.num_points, 2)


class RedNetOutput(dict):
    """Per spatial step s (lists of length ``steps``):

    * ``logits``: (B, T, L+1, H, W) response maps;
    * ``regression``: (B, T, L, 2) regressed landmarks in crop pixels;
    * ``identity_logits``: (B, num_identities) from the clip's identity code (last step), or None;
    * ``state``: per step, the :class:`BottleneckState` after the last frame (None frame by frame).
    """


class RedNet(nn.Module):
    """The RED-Net model over clips.

    Args:
        num_points: L landmarks.
        image_size: crop side (multiple of 32).
        widths: encoder stage widths (``VGG16_WIDTHS`` for the paper; narrow for CPU demos).
        depths: convolutions per stage (``VGG16_DEPTHS``).
        lstm_hidden: LSTM hidden size of the temporal bottleneck.
        num_identities: classes of the identity classifier (0: no identity head).
        regression_width: channels of the regression sub-network.
        mean_shape: (L, 2) crop-normalised mean shape the regression offsets start from (the crop
            centre until :meth:`set_mean_shape`).
    """

    def __init__(
        self,
        num_points: int,
        image_size: int = 128,
        widths: Sequence[int] = VGG16_WIDTHS,
        depths: Sequence[int] = VGG16_DEPTHS,
        lstm_hidden: int = 256,
        num_identities: int = 0,
        regression_width: int = 64,
    ) -> None:
        super().__init__()
        stride = POOL ** len(widths)
        if image_size % stride:
            raise ValueError(f"image_size must be a multiple of {stride} ({len(widths)} pools), got {image_size}")
        if len(widths) < max(REGRESSION_SKIP_STAGES):
            raise ValueError(f"need at least {max(REGRESSION_SKIP_STAGES)} encoder stages, got {len(widths)}")
        self.num_points = num_points
        self.image_size = image_size
        self.normalize = ImageNormalize()
        self.encoder = SegNetEncoder(3 + num_points + 1, widths, depths)
        self.bottleneck = TemporalBottleneck(widths[-1], image_size // stride, lstm_hidden)
        self.decoder = SegNetDecoder(widths, depths, num_points + 1)
        self.regression = RegressionNet(num_points, widths, regression_width, image_size)
        self.identity_head = nn.Linear(widths[-1] // 2, num_identities) if num_identities > 0 else None
        self.register_buffer("mean_shape", torch.full((num_points, 2), 0.5))

    @torch.no_grad()
    def set_mean_shape(self, shape: Tensor) -> None:
        """Set the (L, 2) crop-normalised mean shape the regression offsets are added to."""
        if shape.shape != (self.num_points, 2):
            raise ValueError(f"mean shape must be ({self.num_points}, 2), got {tuple(shape.shape)}")
        self.mean_shape.copy_(shape)

    def forward(
        self,
        images: Tensor,
        frame_mask: Tensor | None = None,
        steps: int = 3,
        temporal: bool = True,
        state: list[BottleneckState] | None = None,
    ) -> RedNetOutput:
        """Run ``steps`` spatial recurrence steps over clips.

        Args:
            images: (B, T, 3, H, W) in [0, 1] (or (B, 3, H, W), treated as T = 1).
            frame_mask: (B, T) bool; None = all frames valid.
            steps: spatial recurrence steps (>= 1).
            temporal: LSTM over frames and clip-level identity (False: frame by frame).
            state: per spatial step, the bottleneck state after the previous frames (online
                tracking feeds ``out["state"]`` of the previous call back); None starts a clip.
        """
        if images.ndim == 4:
            images = images.unsqueeze(1)
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"expected images (B, T, 3, H, W), got {tuple(images.shape)}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        b, t, _, h, w = images.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} crops, got {h}x{w}")
        if frame_mask is None:
            frame_mask = torch.ones(b, t, dtype=torch.bool, device=images.device)
        flat = self.normalize(images.flatten(0, 1))
        feedback = flat.new_zeros(b * t, self.num_points + 1, h, w)
        size = flat.new_tensor([w, h])
        out = RedNetOutput(logits=[], regression=[], identity_logits=None, state=[])
        ident = None
        for step in range(steps):
            code, indices, sizes, feats = self.encoder(torch.cat([flat, feedback], dim=1))
            carried = state[step] if state is not None else None
            code, ident, new_state = self.bottleneck(code.unflatten(0, (b, t)), frame_mask, temporal, carried)
            out["state"].append(new_state)
            logits = self.decoder(code.flatten(0, 1), indices, sizes)
            feedback = logits.softmax(dim=1)
            skip2, skip4 = (feats[i - 1] for i in REGRESSION_SKIP_STAGES)
            reg = (self.mean_shape + self.regression(feedback, skip2, skip4)) * size
            out["logits"].append(logits.unflatten(0, (b, t)))
            out["regression"].append(reg.unflatten(0, (b, t)))
        if self.identity_head is not None and ident is not None:
            # The clip mean of the identity halves over valid frames: the running mean at the last
            # frame in temporal mode, the masked mean of the frames' own halves frame by frame.
            pooled = ident.mean(dim=(3, 4))  # (B, T, C/2)
            if temporal:
                clip_code = pooled[:, -1]
            else:
                weight = frame_mask.to(ident.dtype).view(b, t, 1)
                clip_code = (pooled * weight).sum(1) / weight.sum(1).clamp(min=1.0)
            out["identity_logits"] = self.identity_head(clip_code)
        return out
