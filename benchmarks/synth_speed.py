"""Throughput of the synthetic world on one CPU thread; prints one JSON line.

    python benchmarks/synth_speed.py [--crops 256] [--scenes 16] [--rounds 5] [--baseline DIR]

Figures: crops/s at 128 x 128 and scenes/s at 640 x 640, both batched the way a DataLoader asks for
them (``Dataset.__getitems__``) and one sample at a time (``render_crop`` / ``render_scene``);
CPU time of this process is reported next to wall time because shared machines inflate the latter.
Each figure is the median over ``--rounds`` rounds.

``--baseline DIR`` compares against another version of the renderer, side by side in this process:
DIR is a checkout of an older commit (``git worktree add DIR <commit>``); its ``facelit/synth`` is
imported as a separate package (its imports of the rest of ``facelit`` resolve to this tree), the
rounds alternate between the two versions, and the output adds the baseline's figures, the
current / baseline ratios of the per-round medians, and whether both rendered bit-identical samples.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import facelit.synth  # noqa: E402

TARGET_CROPS_PER_S = 300.0
TARGET_SCENES_PER_S = 20.0
CROP_SIZE = 128
SCENE_SIZE = 640
CROP_BATCH = 64  # what FaceCropDataset renders per call
_BASELINE_PACKAGE = "_baseline_synth"


def load_baseline(checkout: Path) -> ModuleType:
    """The ``facelit/synth`` package of another checkout, imported as ``_baseline_synth``."""
    init = checkout / "facelit" / "synth" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--baseline: {init} does not exist (expected a checkout of this repository)")
    spec = importlib.util.spec_from_file_location(
        _BASELINE_PACKAGE, init, submodule_search_locations=[str(init.parent)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline: cannot import {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_BASELINE_PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def _digest(samples: list[dict[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for sample in samples:
        for key in sorted(sample):
            t = sample[key].contiguous()
            h.update(f"{key}{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


class _Workload:
    """The measured calls of one renderer version (``synth``: a ``facelit.synth`` package)."""

    def __init__(self, synth: ModuleType, n_crops: int, n_scenes: int) -> None:
        self.crops = synth.FaceCropDataset(seed=0, length=10**6, size=CROP_SIZE)
        self.scenes = synth.SceneDataset(seed=0, length=10**6, height=SCENE_SIZE, width=SCENE_SIZE)
        self.render_crop, self.render_scene = synth.render_crop, synth.render_scene
        self.crop_starts = list(range(1000, 1000 + n_crops // CROP_BATCH * CROP_BATCH, CROP_BATCH))
        self.n_single = max(8, n_crops // 8)
        self.n_scenes, self.n_scene1 = n_scenes, max(2, n_scenes // 4)
        synth.head_model("human")
        self.crops.__getitems__(list(range(256)))  # warm-up; fills the identity cache (100 identities)
        self.scenes.__getitems__([0, 1])

    def batched_crops(self) -> list[dict[str, torch.Tensor]]:
        out = []
        for i in self.crop_starts:
            out += self.crops.__getitems__(list(range(i, i + CROP_BATCH)))
        return out

    def single_crops(self) -> list[dict[str, torch.Tensor]]:
        return [self.render_crop(0, i) for i in range(5000, 5000 + self.n_single)]

    def batched_scenes(self) -> list[dict[str, torch.Tensor]]:
        return self.scenes.__getitems__(list(range(10, 10 + self.n_scenes)))

    def single_scenes(self) -> list[dict[str, torch.Tensor]]:
        return [self.render_scene(0, i) for i in range(100, 100 + self.n_scene1)]

    def jobs(self) -> dict[str, tuple[Callable[[], list], int]]:
        return {
            "crops": (self.batched_crops, len(self.crop_starts) * CROP_BATCH),
            "crops_single_call": (self.single_crops, self.n_single),
            "scenes": (self.batched_scenes, self.n_scenes),
            "scenes_single_call": (self.single_scenes, self.n_scene1),
        }


def _timed(fn: Callable[[], list], n: int) -> tuple[float, float, list]:
    """(samples per second of wall time, samples per second of process CPU time, the samples)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return n / (time.perf_counter() - w), n / (time.process_time() - c), out


def measure(
    workloads: dict[str, _Workload], rounds: int
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Per version, the median samples/s (wall and CPU) of every job over ``rounds`` rounds that
    alternate the versions job by job; and the digest of each version's samples per job."""
    wall: dict[str, dict[str, list[float]]] = {v: {} for v in workloads}
    cpu: dict[str, dict[str, list[float]]] = {v: {} for v in workloads}
    digests: dict[str, str] = {}
    names = list(next(iter(workloads.values())).jobs())
    for r in range(rounds):
        for job in names:
            order = list(workloads) if r % 2 == 0 else list(reversed(workloads))
            for version in order:
                fn, n = workloads[version].jobs()[job]
                w, c, samples = _timed(fn, n)
                wall[version].setdefault(job, []).append(w)
                cpu[version].setdefault(job, []).append(c)
                if r == 0:
                    digests[f"{version}/{job}"] = _digest(samples)
    med = {
        v: {
            **{f"{job}_per_s": statistics.median(wall[v][job]) for job in names},
            **{f"{job}_per_s_cpu": statistics.median(cpu[v][job]) for job in names},
        }
        for v in workloads
    }
    return med, digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=256, help="batched crops per round (multiple of 64)")
    parser.add_argument("--scenes", type=int, default=16, help="batched scenes per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None, help="checkout of the version to compare with")
    args = parser.parse_args()
    torch.set_num_threads(1)
    versions = {"current": facelit.synth}
    if args.baseline is not None:
        versions["baseline"] = load_baseline(args.baseline)
    workloads = {v: _Workload(m, args.crops, args.scenes) for v, m in versions.items()}
    med, digests = measure(workloads, args.rounds)
    result: dict[str, object] = {k: round(v, 2) for k, v in med["current"].items()}
    if "baseline" in med:
        result["baseline"] = {k: round(v, 2) for k, v in med["baseline"].items()}
        result["ratio_current_over_baseline"] = {
            k: round(med["current"][k] / med["baseline"][k], 3) for k in med["current"]
        }
        jobs = {key.split("/")[1] for key in digests}
        result["bit_identical_to_baseline"] = {
            job: digests[f"current/{job}"] == digests[f"baseline/{job}"] for job in sorted(jobs)
        }
    result.update(
        target_crops_per_s=TARGET_CROPS_PER_S,
        target_scenes_per_s=TARGET_SCENES_PER_S,
        crop_size=CROP_SIZE,
        scene_size=SCENE_SIZE,
        crop_batch=CROP_BATCH,
        rounds=args.rounds,
        threads=torch.get_num_threads(),
        load_average_1min=round(os.getloadavg()[0], 2),
        torch=torch.__version__,
        machine=platform.machine(),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
