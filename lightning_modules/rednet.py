"""RED-Net (Peng et al., ECCV 2016; IJCV 2018): recurrent encoder-decoder face alignment in video.

Batch: the clip batch of ``datamodules.w300vw`` (T frames, K landmarks, pixel-area frame):
``image`` (B, T, 3, S, S), ``landmarks`` (B, T, K, 2), ``landmarks_visible`` (B, T, K),
``frame_mask`` (B, T), ``identity`` (B,), ``occluded`` (B, T) (synthetic; zeros for 300-VW).

Training loss, summed over the ``recurrence_steps`` spatial steps (step s labels squares of
``square_sides[s]`` pixels, 7 / 5 / 3 in the paper): class-balanced per-pixel softmax on the L + 1
response maps + ``regression_weight`` x L2 of the regression sub-network (crop-normalised units)
+ ``identity_weight`` x cross-entropy of the clip identity classifier (with ``identity_head``).

Modes: ``temporal=True`` runs the LSTM over the frames of a clip and shares the clip's running
identity code; ``temporal=False`` is the frame-by-frame baseline: the same network and weights,
the LSTM restarted at every frame (no carry), each frame with its own identity code.

Predicted landmarks per step (``merge``, see :mod:`facelit.losses.rednet`; both rules are ours):
``window`` (default) refines each regressed point with its landmark's map inside a window of
``detect_window`` x the crop side around it (:func:`facelit.losses.rednet.refine_in_window`);
``threshold`` keeps the class centroid of the merged (argmax) map where a landmark's confidence
reaches ``detect_threshold`` and the regressed point elsewhere
(:func:`facelit.losses.rednet.combine_detection_regression`). All annotated points of valid frames
are scored (occluded points too: their positions are known), with the inter-ocular NME.

Logged (val/test), with :class:`facelit.metrics.video.VideoLandmarkMetrics`: ``nme`` (last step),
``nme_step{s}``, ``nme_occluded`` / ``nme_unoccluded`` (frames with / without an occluder),
``nme_cat{c}`` (300-VW categories), ``auc@0.08``, ``fr@0.08``, ``jitter`` (prediction acceleration
against the ground truth's), ``nme_detection`` / ``nme_regression`` (last step, each branch alone),
``identity_acc``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.aggregation import MeanMetric

from facelit.geometry.schemes import get_scheme
from facelit.losses.rednet import (
    DEFAULT_SQUARE_SIDES,
    class_balanced_cross_entropy,
    combine_detection_regression,
    decode_maps,
    label_maps,
    refine_in_window,
)
from facelit.metrics.video import VideoLandmarkMetrics
from facelit.nets.landmark_net import mean_shape
from facelit.nets.rednet import VGG16_DEPTHS, VGG16_WIDTHS, RedNet
from facelit.tracking import Detector, TrackResult, track_video
from lightning_modules.base import FaceModule

__all__ = ["RedNetModule"]

BRANCHES = ("detection", "regression")
MERGE_RULES = ("window", "threshold")


class RedNetModule(FaceModule):
    """RED-Net on clips.

    Args:
        scheme: landmark scheme (``rednet7`` the authors' demo points, or ``ibug68``); linked from
            the datamodule.
        image_size: crop side (multiple of 32); linked from the datamodule.
        widths, depths: encoder stages (VGG-16 by default; narrow widths for CPU demos).
        lstm_hidden: LSTM hidden size of the temporal bottleneck.
        temporal: LSTM over frames (False: the frame-by-frame baseline, see the module docstring).
        identity_head: supervise the identity half of the code with an identity classifier.
        num_identities: identity classes (synthetic identities; 300-VW: training clips).
        recurrence_steps: spatial recurrence steps in training and inference.
        square_sides: label-square side per step (odd pixels), ``recurrence_steps`` entries.
        label_invisible: label occluded landmarks too (see :mod:`facelit.losses.rednet`).
        regression_weight: weight of the regression L2 loss.
        identity_weight: weight of the identity cross-entropy.
        merge: how detection and regression make the output landmarks, ``window`` or ``threshold``
            (see the module docstring).
        detect_window: ``window`` rule: half-side of the window around each regressed point, as a
            fraction of the crop side (0.05: 3.2 px of a 64 px crop).
        detect_threshold: ``threshold`` rule: confidence from which a detected landmark is kept
            over the regressed one.
        normaliser: NME normaliser (``inter_ocular``, the 300-VW convention).
        mean_shape_samples: training clips averaged for the regression mean shape (0: crop centre).
        **kwargs: optimizer arguments of :class:`FaceModule`.
    """

    def __init__(
        self,
        scheme: str = "rednet7",
        image_size: int = 128,
        widths: Sequence[int] = VGG16_WIDTHS,
        depths: Sequence[int] = VGG16_DEPTHS,
        lstm_hidden: int = 256,
        temporal: bool = True,
        identity_head: bool = True,
        num_identities: int = 1000,
        recurrence_steps: int = 3,
        square_sides: Sequence[int] = DEFAULT_SQUARE_SIDES,
        label_invisible: bool = True,
        regression_weight: float = 1.0,
        identity_weight: float = 0.1,
        merge: str = "window",
        detect_window: float = 0.05,
        detect_threshold: float = 0.5,
        normaliser: str = "inter_ocular",
        mean_shape_samples: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if len(square_sides) != recurrence_steps:
            raise ValueError(
                f"square_sides {tuple(square_sides)} needs one side per recurrence step ({recurrence_steps})"
            )
        if merge not in MERGE_RULES:
            raise ValueError(f"merge must be one of {MERGE_RULES}, got {merge!r}")
        if merge == "window" and not 0 < detect_window <= 1:
            raise ValueError(f"detect_window is a fraction of the crop side in (0, 1], got {detect_window}")
        if identity_head and num_identities < 1:
            raise ValueError(f"identity_head needs num_identities >= 1, got {num_identities}")
        self.scheme = get_scheme(scheme)
        self.temporal = temporal
        self.steps = recurrence_steps
        self.square_sides = tuple(int(s) for s in square_sides)
        self.label_invisible = label_invisible
        self.regression_weight = regression_weight
        self.identity_weight = identity_weight if identity_head else 0.0
        self.merge = merge
        self.detect_window = detect_window
        self.detect_threshold = detect_threshold
        self.normaliser = normaliser
        self.mean_shape_samples = mean_shape_samples
        self.net = RedNet(
            self.scheme.num_points, image_size, widths, depths, lstm_hidden,
            num_identities if identity_head else 0,
        )
        self.register_buffer("mean_shape_initialised", torch.tensor(False))
        # Per stage: one video metric per spatial step (combined landmarks), one per branch of the
        # last step (detection alone, regression alone), and the identity accuracy.
        names = [f"step{s + 1}" for s in range(self.steps)] + list(BRANCHES)
        self.stage_metrics = torch.nn.ModuleDict({
            stage: torch.nn.ModuleDict(
                {n: VideoLandmarkMetrics(normaliser, self.scheme) for n in names}
                | {"identity_acc": MeanMetric()}
            )
            for stage in ("val", "test")
        })

    # ---- setup ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.mean_shape_samples > 0 and not bool(self.mean_shape_initialised):
            self._init_mean_shape()

    @torch.no_grad()
    def _init_mean_shape(self) -> None:
        """Start the regression at the mean crop-normalised shape of training frames."""
        dataset = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        if dataset is None:
            return
        dataset = getattr(dataset, "dataset", dataset)
        samples = [dataset[i] for i in range(min(len(dataset), self.mean_shape_samples))]
        valid = torch.cat([s["frame_mask"] for s in samples])
        points = torch.cat([s["landmarks"] for s in samples])[valid]
        size = samples[0]["image"].shape[-1]
        self.net.set_mean_shape((mean_shape(points) / size).to(self.net.mean_shape))
        self.mean_shape_initialised.fill_(True)

    # ---- inference --------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, frame_mask: torch.Tensor | None = None) -> dict[str, Any]:
        """Clips (B, T, 3, S, S) -> the net's outputs (see :class:`facelit.nets.rednet.RedNetOutput`)."""
        return self.net(images, frame_mask, steps=self.steps, temporal=self.temporal)

    def landmarks_from_outputs(self, out: dict[str, Any], step: int = -1) -> dict[str, torch.Tensor]:
        """Per-step landmarks (B, T, K, 2): ``detection``, ``regression``, their combination
        ``landmarks`` (the ``merge`` rule), and ``confidence`` (B, T, K), each map's peak probability."""
        logits = out["logits"][step].detach()
        b, t = logits.shape[:2]
        det, conf = decode_maps(logits.flatten(0, 1))
        det, conf = det.view(b, t, -1, 2), conf.view(b, t, -1)
        reg = out["regression"][step].detach().float()
        if self.merge == "window":
            half = self.detect_window * logits.shape[-1]
            merged = refine_in_window(logits.flatten(0, 1), reg.flatten(0, 1), half).view_as(reg)
        else:
            merged = combine_detection_regression(det, conf, reg, self.detect_threshold)
        return {"detection": det, "regression": reg, "landmarks": merged, "confidence": conf}

    # ---- training ---------------------------------------------------------------------------
    def _losses(self, out: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        points, frame_mask = batch["landmarks"].float(), batch["frame_mask"].bool()
        b, t, k, _ = points.shape
        size = batch["image"].shape[-1]
        flat_points = points.flatten(0, 1)
        visible = batch["landmarks_visible"].flatten(0, 1)
        pixel_mask = frame_mask.flatten()
        point_mask = frame_mask.unsqueeze(-1).expand(b, t, k)
        if not self.label_invisible:
            point_mask = point_mask & batch["landmarks_visible"].bool()
        parts: dict[str, torch.Tensor] = {}
        total = points.new_zeros(())
        for s, (logits, reg) in enumerate(zip(out["logits"], out["regression"], strict=True)):
            side = self.square_sides[s]
            labels = label_maps(flat_points, (size, size), side, visible, self.label_invisible)
            seg = class_balanced_cross_entropy(logits.flatten(0, 1), labels, pixel_mask)
            err = ((reg.float() - points) / size).pow(2).sum(-1)
            l2 = (err * point_mask).sum() / point_mask.sum().clamp(min=1)
            parts[f"seg_step{s + 1}"], parts[f"reg_step{s + 1}"] = seg.detach(), l2.detach()
            total = total + seg + self.regression_weight * l2
        if self.identity_weight > 0 and out["identity_logits"] is not None:
            ident = F.cross_entropy(out["identity_logits"].float(), batch["identity"].long())
            parts["identity"] = ident.detach()
            total = total + self.identity_weight * ident
        parts["loss"] = total
        return parts

    def model_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        out = self(self.prepare_images(batch["image"]), batch["frame_mask"])
        parts = self._losses(out, batch)
        if stage in ("val", "test"):
            self._update_metrics(out, batch, stage)
        return parts

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def _update_metrics(self, out: dict[str, Any], batch: dict[str, Any], stage: str) -> None:
        metrics = self.stage_metrics[stage]
        target, mask = batch["landmarks"].float(), batch["frame_mask"].bool()
        extra = {"category": batch.get("category"), "occluded": batch.get("occluded")}
        preds: dict[str, torch.Tensor] = {}
        for s in range(self.steps):
            preds = self.landmarks_from_outputs(out, s)
            metrics[f"step{s + 1}"].update(preds["landmarks"], target, mask, **extra)
        for branch in BRANCHES:
            metrics[branch].update(preds[branch], target, mask, **extra)
        if out["identity_logits"] is not None:
            metrics["identity_acc"].update((out["identity_logits"].argmax(-1) == batch["identity"]).float())

    def _log_metrics(self, stage: str) -> None:
        """``nme_step{s}`` per step; the last step's full set unprefixed (``nme``, ``jitter``,
        ``nme_occluded`` ...); ``nme_detection`` / ``nme_regression``; ``identity_acc``."""
        values: dict[str, torch.Tensor] = {}
        metrics = self.stage_metrics[stage]
        for s in range(self.steps):
            if not metrics[f"step{s + 1}"].update_called:
                return
            result = metrics[f"step{s + 1}"].compute()
            values[f"nme_step{s + 1}"] = result["nme"]
            if s + 1 == self.steps:
                values.update({k: v for k, v in result.items() if k != "skipped"})
        for branch in BRANCHES:
            values[f"nme_{branch}"] = metrics[branch].compute()["nme"]
        if metrics["identity_acc"].update_called:
            values["identity_acc"] = metrics["identity_acc"].compute()
        for metric in metrics.values():
            metric.reset()
        # compute() already gathered every rank's values: no further sync.
        self.log_dict({f"{stage}/{k}": torch.as_tensor(v, dtype=torch.float32) for k, v in values.items()},
                      sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Clips in, per-frame landmarks (B, T, K, 2) in crop pixels and confidences out."""
        preds = self.landmarks_from_outputs(self(batch["image"], batch.get("frame_mask")))
        return {**preds, "clip": batch.get("clip"), "frame_index": batch.get("frame_index")}

    def predict_clips(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, T, K, 2) landmarks of a clip batch (what :class:`callbacks.frame_strip.ClipStrip` draws)."""
        return self.landmarks_from_outputs(self(batch["image"], batch.get("frame_mask")))["landmarks"]

    # ---- tracking ---------------------------------------------------------------------------
    def track(
        self,
        frames: Iterable[torch.Tensor],
        detect: Detector | None = None,
        initial_box: torch.Tensor | None = None,
        lost_threshold: float = 0.3,
        detection_scale: float = 1.0,
        progress: bool = True,
    ) -> TrackResult:
        """Track one face through a video's frames (see :func:`facelit.tracking.track_video`).

        Each frame is one step of the recurrences (LSTM state carried while the track holds;
        a re-detection starts a new clip). Runs in eval mode without gradients.
        """
        self.eval()
        predict = self._track_predictor()
        with torch.no_grad():
            return track_video(
                frames, predict, self.scheme, self.net.image_size, detect, initial_box, lost_threshold,
                detection_scale, progress,
            )

    def _track_predictor(self) -> Callable[[torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor, Any]]:
        def predict(crop: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
            images = crop.to(self.device)[None, None]
            out = self.net(images, None, steps=self.steps, temporal=self.temporal, state=state)
            preds = self.landmarks_from_outputs(out)
            return preds["landmarks"][0, 0], preds["confidence"][0, 0], out["state"]

        return predict
