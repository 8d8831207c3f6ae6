"""Evaluate pseudo-labels against identities; prints one JSON line with ``metrics.METRIC_KEYS``.

    python -m facelit.cluster.evaluate --pred PRED.txt --gt GT.txt

Both files: one integer per line, line i = node i; ``-1`` in PRED marks a node left unlabelled.
"""

from __future__ import annotations

import argparse
import json

from facelit.cluster.io import check_same_length, load_labels
from facelit.cluster.metrics import cluster_metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, help="predicted labels, -1 = unlabelled")
    parser.add_argument("--gt", required=True, help="identity labels (>= 0)")
    args = parser.parse_args(argv)
    pred = load_labels(args.pred, allow_unlabelled=True)
    gt = load_labels(args.gt)
    check_same_length({args.pred: pred, args.gt: gt})
    print(json.dumps(cluster_metrics(pred, gt)))


if __name__ == "__main__":
    main()
