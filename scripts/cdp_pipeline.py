"""Consensus-Driven Propagation end to end: split, base + committee, features, mediator,
propagation, retraining, evaluation.

    python scripts/cdp_pipeline.py --out logs/cdp_demo        # synthetic default, minutes on a CPU

Stages, each writing under ``--out`` and skipped when its output is there (``--force STAGE`` reruns
it; ``--stages`` runs a subset, reading the earlier stages' outputs):

1. ``train``: the base model and every committee member (``--committee``) on the labelled part
   (``configs/demo/cdp.yaml``, ``part=labelled``): ``models/<name>.ckpt`` and ``models/<name>.json``
   (verification on held-out identities: the 10-fold protocol of the test pairs, thresholds chosen
   on the other folds). The base model is the "labelled only" baseline.
2. ``features``: ``features/<name>_{labelled,unlabelled}.npy`` of every model (``predict``),
   ``features/labelled_labels.txt`` and ``features/unlabelled_labels.txt`` (ground truth, only for
   evaluation). "labelled" here means the mediator's training nodes: the held-out labelled
   identities when the config sets ``data.init_args.held_out_fraction > 0``, else the trained ones.
3. ``mediator``: the mediator (``configs/demo/cdp_mediator.yaml``) on the labelled candidate pairs;
   ``mediator/pairs.npy`` and ``mediator/scores.npy`` for the unlabelled candidate pairs.
4. ``propagate``: ``pseudo/<method>.txt`` (one label per unlabelled image, -1 discarded) and
   ``pseudo/<method>.json`` (``facelit.cluster.metrics.cluster_metrics`` against the ground truth)
   for ``--method`` and the baselines (``knn``: single-model kNN propagation; ``vote``: committee
   voting); ``pseudo/curves.json``: pairwise precision/recall of each method over a threshold sweep.
5. ``retrain``: labelled + pseudo-labelled (``--method``), two heads, equal share per batch:
   ``models/retrain.ckpt`` / ``.json``.
6. ``all_labels``: the upper bound with every true label: ``models/all_labels.ckpt`` / ``.json``.

``report.json`` gathers the figures. Extra CLI overrides after ``--`` go to every recognition stage
(e.g. ``-- --data.init_args.data_dir=data/ms1m --trainer.max_steps=...``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("train", "features", "mediator", "propagate", "retrain", "all_labels")
METHODS = ("mediator", "vote", "knn")
DEFAULT_COMMITTEE = ("committee1:seed=1", "committee2:seed=2,width=0.25")
SWEEP_POINTS = 41


@dataclass
class Member:
    """A recognition model of the run: a name, its seed offset and its model overrides."""

    name: str
    seed: int = 0
    model: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Member:
        """``name:key=value,key=value``; ``seed`` offsets the run seed, other keys are model init args."""
        name, _, rest = spec.partition(":")
        if not name or name in ("base", "retrain", "all_labels"):
            raise ValueError(f"committee member {spec!r}: give a name other than base/retrain/all_labels")
        member = cls(name)
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"committee member {spec!r}: {item!r} is not key=value")
            if key == "seed":
                member.seed = int(value)
            else:
                member.model[key] = value
        return member


@dataclass
class Run:
    """Settings of one pipeline run."""

    out: Path
    config: Path
    mediator_config: Path
    committee: list[Member]
    seed: int = 0
    method: str = "mediator"
    threshold: float = 0.5
    vote_accept: int | None = None
    vote_threshold: float = 0.6
    knn_threshold: float = 0.6
    max_size: int = 600
    step: float = 0.05
    k: int = 15
    structure: str = "mean_var"
    overrides: list[str] = field(default_factory=list)
    mediator_overrides: list[str] = field(default_factory=list)
    force: set[str] = field(default_factory=set)
    progress: bool = True

    def due(self, keys: Sequence[str], *outputs: Path) -> bool:
        """Whether a stage must run: one of its ``keys`` (stage or model names) is forced, or an
        output is missing."""
        return bool(self.force.intersection(keys)) or not all(p.exists() for p in outputs)


# ---- recognition stages ------------------------------------------------------------------------
def recognition_args(run: Run, name: str, part: str, extra: Sequence[str] = ()) -> list[str]:
    """CLI arguments of a recognition model's stage (without the subcommand)."""
    member = next((m for m in run.committee if m.name == name), Member(name))
    root = run.out / "logs"
    return [
        "--config",
        str(run.config),
        f"--seed_everything={run.seed + member.seed}",
        f"--data.init_args.seed={run.seed}",
        f"--data.init_args.split_seed={run.seed}",
        f"--data.init_args.part={part}",
        f"--data.init_args.cache_dir={run.out / 'cache'}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.logger.init_args.name={name}",
        f"--trainer.enable_progress_bar={str(run.progress).lower()}",
        *[f"--model.init_args.{k}={v}" for k, v in member.model.items()],
        *run.overrides,
        *extra,
    ]


def num_classes(run: Run, part: str, extra: Sequence[str] = ()) -> int:
    """Classifier classes of ``part`` under the run's config (parsed, nothing trained)."""
    from cli import main
    from datamodules.cdp import part_num_identities

    cli = main(recognition_args(run, "base", part, extra), run=False)
    data = cli.datamodule
    total = data.synth_identities if data.synthetic else _count_identities(data.data_dir)
    return part_num_identities(total, data.labelled_fraction, part, data.held_out_fraction)


def _count_identities(root: str) -> int:
    from facelit.datasets.recognition import scan_identity_folders

    return len(scan_identity_folders(root)[1])


def train(run: Run, name: str, part: str, extra: Sequence[str] = (), stage: str = "train") -> dict[str, Any]:
    """Fit one recognition model, save its checkpoint, score it on the test pairs (stage ``stage``)."""
    from cli import main

    ckpt, report = run.out / "models" / f"{name}.ckpt", run.out / "models" / f"{name}.json"
    if not run.due((stage, name), ckpt, report):
        return json.loads(report.read_text())
    classes = f"--data.init_args.num_identities={num_classes(run, part, extra)}"
    cli = main(["fit", *recognition_args(run, name, part, [*extra, classes])])
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    cli.trainer.save_checkpoint(ckpt)
    metrics = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
    result = {"name": name, "part": part, "ckpt": str(ckpt), **_rounded(metrics)}
    report.write_text(json.dumps(result, indent=1))
    return result


def extract_features(run: Run, name: str) -> None:
    """Features of the labelled and unlabelled images under model ``name`` (and the labels)."""
    import torch

    from cli import main
    from facelit.cluster.io import save_features, save_labels

    folder = run.out / "features"
    outputs = [folder / f"{name}_{part}.npy" for part in ("labelled", "unlabelled")]
    if not run.due(("features", name), *outputs):
        return
    classes = f"--data.init_args.num_identities={num_classes(run, 'labelled')}"
    cli = main(recognition_args(run, name, "labelled", [classes]), run=False)
    ckpt = run.out / "models" / f"{name}.ckpt"
    # the mediator learns on the held-out labelled identities when there are some, else on the trained ones
    sources = ("held_out" if cli.datamodule.held_out_fraction > 0 else "labelled", "unlabelled")
    for source, part, path in zip(sources, ("labelled", "unlabelled"), outputs, strict=True):
        cli.datamodule.predict_part = source
        batches = cli.trainer.predict(cli.model, cli.datamodule, ckpt_path=str(ckpt))
        order = torch.cat([b["index"] for b in batches]).argsort()
        save_features(path, torch.cat([b["features"] for b in batches])[order].numpy())
        save_labels(folder / f"{part}_labels.txt", torch.cat([b["identity"] for b in batches])[order].numpy())


# ---- mediator and propagation -------------------------------------------------------------------
def mediator_args(run: Run) -> list[str]:
    root = run.out / "logs"
    return [
        "--config",
        str(run.mediator_config),
        f"--seed_everything={run.seed}",
        f"--data.init_args.seed={run.seed}",
        f"--data.init_args.data_dir={run.out / 'features'}",
        f"--data.init_args.committee=[{', '.join(m.name for m in run.committee)}]",
        f"--data.init_args.k={run.k}",
        f"--data.init_args.structure={run.structure}",
        f"--model.init_args.num_committee={len(run.committee)}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.enable_progress_bar={str(run.progress).lower()}",
        *run.mediator_overrides,
    ]


def train_mediator(run: Run) -> dict[str, Any]:
    """Fit the mediator, score the unlabelled candidate pairs."""
    import torch

    from cli import main

    folder = run.out / "mediator"
    pairs_path, scores_path, report = folder / "pairs.npy", folder / "scores.npy", folder / "mediator.json"
    if not run.due(("mediator",), pairs_path, scores_path, report):
        return json.loads(report.read_text())
    cli = main(["fit", *mediator_args(run)])
    val = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)
    batches = cli.trainer.predict(cli.model, cli.datamodule)
    order = torch.cat([b["index"] for b in batches]).argsort()
    folder.mkdir(parents=True, exist_ok=True)
    np.save(pairs_path, cli.datamodule.pair_set("unlabelled").pairs)
    np.save(scores_path, torch.cat([b["scores"] for b in batches])[order].numpy())
    cli.trainer.save_checkpoint(folder / "mediator.ckpt")
    result = _rounded(val[0] if val else {})
    report.write_text(json.dumps(result, indent=1))
    return result


def method_pairs(run: Run, method: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(pairs (P, 2), scores (P,), threshold) that ``method`` hands to the propagation."""
    from datamodules.cdp_mediator import PairSet
    from facelit.cluster.io import load_features

    if method == "mediator":
        folder = run.out / "mediator"
        return np.load(folder / "pairs.npy"), np.load(folder / "scores.npy"), run.threshold
    names = ["base", *(m.name for m in run.committee)]
    paths = [run.out / "features" / "graphs" / f"{n}_unlabelled_k{run.k}.npz" for n in names]
    features = [load_features(run.out / "features" / f"{n}_unlabelled.npy") for n in names]
    pairs = PairSet(features, run.k, run.structure, graph_paths=paths)
    base_sims = pairs.inputs[:, len(run.committee)]  # column aff_0: the base model's cosine
    if method == "knn":
        return pairs.pairs, base_sims, run.knn_threshold
    from facelit.cluster.baselines import committee_vote

    accept = len(run.committee) if run.vote_accept is None else run.vote_accept
    kept = committee_vote(pairs.pairs, pairs.graphs[1:], base_sims, accept, run.vote_threshold)
    return pairs.pairs[kept], base_sims[kept], run.vote_threshold


def pseudo_labels(run: Run) -> dict[str, Any]:
    """Propagate every method's scored pairs; metrics against the ground truth (evaluation only)."""
    from facelit.cluster.io import load_labels, save_labels
    from facelit.cluster.metrics import cluster_metrics
    from facelit.cluster.propagate import propagate_detailed

    folder = run.out / "pseudo"
    gt = load_labels(run.out / "features" / "unlabelled_labels.txt")
    outputs = [folder / f"{m}.json" for m in METHODS] + [folder / "curves.json"]
    if not run.due(("propagate",), *outputs):
        return {m: json.loads((folder / f"{m}.json").read_text()) for m in METHODS}
    folder.mkdir(parents=True, exist_ok=True)
    results, curves = {}, {}
    for method in METHODS:
        pairs, scores, threshold = method_pairs(run, method)
        result = propagate_detailed(
            pairs, scores, len(gt), threshold, run.max_size, run.step, progress=run.progress
        )
        save_labels(folder / f"{method}.txt", result.labels)
        results[method] = {
            "threshold": threshold,
            **result.summary(),
            **_rounded(cluster_metrics(result.labels, gt)),
        }
        (folder / f"{method}.json").write_text(json.dumps(results[method], indent=1))
        curves[method] = threshold_curve(pairs, scores, gt, run)
    (folder / "curves.json").write_text(json.dumps(curves, indent=1))
    save_plots(folder, curves, results)
    return results


def save_plots(folder: Path, curves: dict[str, list[dict[str, float]]], results: dict[str, Any]) -> None:
    """``<method>_threshold.png`` (precision/recall vs threshold) and ``<method>_sizes.png`` (cluster
    sizes of the propagated labels) per method."""
    import matplotlib.pyplot as plt

    from facelit.cluster.io import load_labels
    from facelit.cluster.plots import plot_cluster_sizes, plot_precision_recall_vs_threshold

    for method, curve in curves.items():
        for name, fig in (
            ("threshold", plot_precision_recall_vs_threshold(curve, title=method)),
            (
                "sizes",
                plot_cluster_sizes(
                    load_labels(folder / f"{method}.txt", allow_unlabelled=True), title=method
                ),
            ),
        ):
            fig.savefig(folder / f"{method}_{name}.png", dpi=80)
            plt.close(fig)


def threshold_curve(
    pairs: np.ndarray, scores: np.ndarray, gt: np.ndarray, run: Run
) -> list[dict[str, float]]:
    """``facelit.cluster.metrics.threshold_sweep`` at the scores' quantiles from 5 % to 99.5 % (equal
    pair counts between thresholds, so saturated probabilities near 1 are resolved as finely as
    cosines; every metric of ``cluster_metrics`` per threshold)."""
    from facelit.cluster.metrics import threshold_sweep

    if len(scores) == 0:
        return []
    lo, hi = np.quantile(scores, [0.05, 0.995])
    sweep = threshold_sweep(
        pairs,
        scores,
        gt,
        np.linspace(lo, hi, SWEEP_POINTS),
        max_size=run.max_size,
        step=run.step,
        progress=False,
    )
    return [{k: round(float(v), 5) for k, v in row.items()} for row in sweep]


def precision_at_recall(
    curve: list[dict[str, float]], recall: float, key: str = "pairwise_recall_all"
) -> float | None:
    """Best ``pairwise_precision`` of a threshold curve among its points whose ``key`` recall is at
    least ``recall`` (None when no threshold reaches it). ``_all`` recall counts discarded nodes as
    singletons, so a method cannot buy precision by discarding."""
    reached = [p["pairwise_precision"] for p in curve if p[key] >= recall]
    return max(reached) if reached else None


# ---- driver -----------------------------------------------------------------------------------
def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(float(v), 5) if not isinstance(v, (bool, str)) else v for k, v in metrics.items()}


def run_pipeline(run: Run, stages: Sequence[str] = STAGES) -> dict[str, Any]:
    """Run ``stages`` in order; returns (and writes to ``report.json``) every stage's figures."""
    run.out.mkdir(parents=True, exist_ok=True)
    names = ["base", *(m.name for m in run.committee)]
    report: dict[str, Any] = {}
    if "train" in stages:
        report["models"] = {n: train(run, n, "labelled") for n in names}
    if "features" in stages:
        for n in names:
            extract_features(run, n)
    if "mediator" in stages:
        report["mediator"] = train_mediator(run)
    if "propagate" in stages:
        report["pseudo"] = pseudo_labels(run)
        curves = json.loads((run.out / "pseudo" / "curves.json").read_text())
        report["precision_at_recall"] = {
            f"{r:g}": {m: precision_at_recall(c, r) for m, c in curves.items()} for r in (0.3, 0.5, 0.7)
        }
    if "retrain" in stages:
        labels = run.out / "pseudo" / f"{run.method}.txt"
        classes = int(np.loadtxt(labels, dtype=np.int64, ndmin=1).max()) + 1
        if classes < 1:
            raise RuntimeError(
                f"{labels}: the propagation kept no pair; lower --threshold (it is {run.threshold})"
            )
        pseudo = [
            f"--data.init_args.pseudo_labels={labels}",
            f"--data.init_args.num_pseudo_identities={classes}",
        ]
        report["retrain"] = train(run, "retrain", "pseudo", pseudo, stage="retrain")
    if "all_labels" in stages:
        report["all_labels"] = train(run, "all_labels", "all", stage="all_labels")
    if "retrain" in stages and "all_labels" in stages and "train" in stages:
        acc = {k: report[k]["test/accuracy"] for k in ("retrain", "all_labels")}
        acc["labelled_only"] = report["models"]["base"]["test/accuracy"]
        gap = acc["all_labels"] - acc["labelled_only"]
        acc["gap_closed"] = round((acc["retrain"] - acc["labelled_only"]) / gap, 4) if gap > 0 else None
        report["verification"] = acc
    (run.out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def parse_args(argv: Sequence[str] | None = None) -> tuple[Run, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="logs/cdp_demo", help="output folder of every stage")
    parser.add_argument("--config", default=str(REPO / "configs" / "demo" / "cdp.yaml"))
    parser.add_argument("--mediator-config", default=str(REPO / "configs" / "demo" / "cdp_mediator.yaml"))
    parser.add_argument(
        "--committee",
        nargs="+",
        default=list(DEFAULT_COMMITTEE),
        help="members as name:key=value,... (seed=offset, any model init arg)",
    )
    parser.add_argument("--seed", type=int, default=0, help="world, split and base-model seed")
    parser.add_argument("--method", choices=METHODS, default="mediator", help="pseudo labels used to retrain")
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="mediator probability threshold (official: 0.9875)"
    )
    parser.add_argument("--vote-accept", type=int, default=None, help="committee votes needed (default: all)")
    parser.add_argument("--vote-threshold", type=float, default=0.6, help="base cosine threshold of voting")
    parser.add_argument(
        "--knn-threshold", type=float, default=0.6, help="cosine threshold of kNN propagation"
    )
    parser.add_argument("--max-size", type=int, default=600)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("-k", type=int, default=15, help="neighbours per node")
    parser.add_argument("--structure", default="mean_var", choices=("mean_var", "common_neighbours"))
    parser.add_argument(
        "--mediator-override",
        action="append",
        default=[],
        help="CLI override of the mediator stage, repeatable: --mediator-override=--trainer.max_epochs=20",
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument(
        "--force",
        nargs="+",
        default=[],
        help="stages or model names to recompute although their outputs exist",
    )
    parser.add_argument("--clean", action="store_true", help="delete --out first")
    parser.add_argument("overrides", nargs="*", help="CLI overrides for every recognition stage (after --)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.clean and out.exists():
        shutil.rmtree(out)
    run = Run(
        out=out,
        config=Path(args.config),
        mediator_config=Path(args.mediator_config),
        committee=[Member.parse(s) for s in args.committee],
        seed=args.seed,
        method=args.method,
        threshold=args.threshold,
        vote_accept=args.vote_accept,
        vote_threshold=args.vote_threshold,
        knn_threshold=args.knn_threshold,
        max_size=args.max_size,
        step=args.step,
        k=args.k,
        structure=args.structure,
        overrides=list(args.overrides),
        mediator_overrides=list(args.mediator_override),
        force=set(args.force),
    )
    return run, list(args.stages)


def main(argv: Sequence[str] | None = None) -> None:
    run, stages = parse_args(argv)
    print(json.dumps(run_pipeline(run, stages), indent=1))


if __name__ == "__main__":
    main()
