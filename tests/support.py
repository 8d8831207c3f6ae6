"""Shared test and benchmark support: callbacks used by the training-infrastructure tests (importable
from CLI subprocesses) and the command-line overrides of a fixed-step-budget run."""

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


def budget_args(steps: int, root: Path | str, quiet: bool = True) -> list[str]:
    """CLI overrides that train a demo config for exactly ``steps`` optimiser steps, validating
    only when the caller asks (``trainer.validate``), with logs and checkpoints under ``root``.

    The learning tests and the ablation benchmarks budget their runs in steps so that a result
    does not depend on how loaded the machine is. ``quiet`` also turns off the progress bar,
    checkpointing and the config's callbacks (plots, overlays)."""
    args = [
        f"--trainer.max_steps={steps}", "--trainer.max_time=null", "--trainer.val_check_interval=null",
        "--trainer.check_val_every_n_epoch=1000", "--trainer.max_epochs=1000",
        f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    if quiet:
        args += ["--trainer.enable_checkpointing=false", "--trainer.callbacks=[]"]
    return args
