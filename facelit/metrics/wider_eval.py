"""The WIDER FACE evaluation command (numpy only: it never imports torch)::

    python -m facelit.metrics.wider_eval --pred-dir PRED --gt-dir GT
    # last line of stdout: {"easy": ..., "medium": ..., "hard": ...}

``PRED/<event>/<image>.txt``: the image name, the number of boxes, then ``x y w h score`` lines
(``write_detection_results`` / ``python cli.py predict ... --model.init_args.predict_dir PRED``
write it). ``GT`` holds ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` (the
official eval_tools ground truth, also shipped in ``wider_face_split``).
``python -m facelit.metrics.widerface`` runs the same command (it also loads the torchmetrics
Metric, so it starts more slowly).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Parse the arguments, evaluate the submission folder, print one JSON line, return it."""
    parser = argparse.ArgumentParser(
        prog="python -m facelit.metrics.wider_eval",
        description="Official WIDER FACE validation AP (easy / medium / hard) of a submission folder.",
    )
    parser.add_argument("--pred-dir", required=True, type=Path, help="PRED/<event>/<image>.txt files")
    parser.add_argument("--gt-dir", required=True, type=Path, help="folder with wider_*_val.mat files")
    parser.add_argument("--iou-threshold", type=float, default=None, help="match IoU (official: 0.5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    # imported after parsing: --help and argument errors answer at once
    from facelit.metrics.wider_core import IOU_THRESHOLD, evaluate
    from facelit.metrics.wider_files import load_wider_val_gt, read_predictions

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    gt = load_wider_val_gt(args.gt_dir)
    preds = read_predictions(args.pred_dir, progress=not args.no_progress)
    iou = IOU_THRESHOLD if args.iou_threshold is None else args.iou_threshold
    result = evaluate(preds, gt, iou_threshold=iou)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
