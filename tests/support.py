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
