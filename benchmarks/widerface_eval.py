"""Speed of the vectorised WIDER FACE evaluation against the per-prediction reference loop.

Builds realistic detections for the whole validation set from ../shared/data/widerface (every gt
box jittered by ~10 % of its size with 15 % of the faces missed, plus 50-200 random false
positives per image; seeded), then times ``facelit.metrics.widerface.evaluate`` (median of
``--runs``) and the reference loop of tests/unit/test_widerface_eval.py (median of
``--reference-runs``) side by side and prints one JSON line. numpy only, one process.

    python benchmarks/widerface_eval.py [--gt-dir DIR] [--runs 5] [--reference-runs 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facelit.metrics.widerface import SETTINGS, evaluate, load_wider_val_gt  # noqa: E402


def _load_reference():
    """The reference loop and the prediction generator live in the unit test file."""
    path = REPO / "tests" / "unit" / "test_widerface_eval.py"
    spec = importlib.util.spec_from_file_location("_widerface_eval_reference", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.reference_wider_ap, module.jittered_predictions


def _median_time(fn, runs: int):
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt-dir", type=Path, default=REPO.parent / "shared" / "data" / "widerface")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reference-runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    reference_wider_ap, jittered_predictions = _load_reference()
    gt = load_wider_val_gt(args.gt_dir)
    preds = jittered_predictions(gt, args.seed, false_positives=(50, 200))
    fast_s, fast = _median_time(lambda: evaluate(preds, gt), args.runs)
    ref_s, ref = _median_time(lambda: reference_wider_ap(preds, gt), args.reference_runs)
    print(
        json.dumps(
            {
                "benchmark": "widerface_eval",
                "images": len(gt),
                "predictions": int(sum(len(v) for v in preds.values())),
                "gt_faces": int(sum(len(b) for b in gt.boxes)),
                "vectorised_s": round(fast_s, 4),
                "reference_s": round(ref_s, 3),
                "speedup": round(ref_s / fast_s, 1),
                "ap": {s: round(fast[s], 6) for s in SETTINGS},
                "max_abs_diff_vs_reference": max(abs(fast[s] - ref[s]) for s in SETTINGS),
            }
        )
    )


if __name__ == "__main__":
    main()
