"""Callbacks used by the training-infrastructure tests (importable from CLI subprocesses)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytorch_lightning as pl


class RecordSteps(pl.Callback):
    """Append the global step at every training batch start to ``path`` (one JSON list)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        steps = json.loads(self.path.read_text()) if self.path.exists() else []
        steps.append(trainer.global_step)
        self.path.write_text(json.dumps(steps))


class SignalThenDie(pl.Callback):
    """Send SIGUSR1 to this process after ``step`` optimizer steps (what SLURM does before the time
    limit), then exit hard at the next batch, as SLURM's kill would."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.signalled = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.signalled:
            os._exit(143)
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)
            self.signalled = True


class RecordBatches(pl.Callback):
    """Append ``[global_step, fingerprint of each image]`` at every training batch start to ``path``
    (one JSON list); the fingerprint is the image sum rounded to 3 decimals."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        rows = json.loads(self.path.read_text()) if self.path.exists() else []
        sums = batch["image"].flatten(1).sum(1).tolist()
        rows.append([trainer.global_step, [round(s, 3) for s in sums]])
        self.path.write_text(json.dumps(rows))
