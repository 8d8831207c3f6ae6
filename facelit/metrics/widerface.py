"""The official WIDER FACE evaluation (easy / medium / hard AP): one import for all its parts.

The protocol and its vectorised implementation are described in ``facelit.metrics.wider_core``.
The parts:

- ``facelit.metrics.wider_core``: ``WiderGroundTruth``, ``wider_face_average_precision``,
  ``evaluate`` and the official IoU / score range / VOC AP (numpy only);
- ``facelit.metrics.wider_files``: ``load_wider_val_gt`` (the eval_tools ``.mat`` files),
  ``read_predictions`` / ``write_predictions`` (official submission layout) and
  ``start_detection_results`` / ``write_detection_results`` (what every detector's ``predict``
  writes);
- ``facelit.metrics.wider_ap``: ``WiderFaceAP``, the torchmetrics Metric (DDP-correct);
- ``facelit.metrics.wider_eval``: the command (imports no torch, so it starts fast)::

    python -m facelit.metrics.wider_eval --pred-dir PRED --gt-dir GT
    python -m facelit.metrics.widerface  --pred-dir PRED --gt-dir GT   # the same, slower start

Every name below is re-exported here, so ``from facelit.metrics.widerface import X`` keeps working.
"""

from __future__ import annotations

from facelit.metrics.wider_ap import WiderFaceAP
from facelit.metrics.wider_core import (
    IOU_THRESHOLD,
    NUM_THRESHOLDS,
    SETTINGS,
    PredictionKey,
    WiderGroundTruth,
    evaluate,
    official_iou,
    official_score_range,
    voc_ap,
    wider_face_average_precision,
)
from facelit.metrics.wider_eval import main
from facelit.metrics.wider_files import (
    GT_FILES,
    NO_EVENT,
    detection_results_path,
    load_wider_val_gt,
    read_predictions,
    start_detection_results,
    write_detection_results,
    write_predictions,
)

__all__ = [
    "SETTINGS",
    "IOU_THRESHOLD",
    "NUM_THRESHOLDS",
    "GT_FILES",
    "NO_EVENT",
    "PredictionKey",
    "WiderGroundTruth",
    "load_wider_val_gt",
    "read_predictions",
    "write_predictions",
    "detection_results_path",
    "start_detection_results",
    "write_detection_results",
    "official_score_range",
    "official_iou",
    "voc_ap",
    "wider_face_average_precision",
    "evaluate",
    "WiderFaceAP",
    "main",
]

if __name__ == "__main__":
    main()
