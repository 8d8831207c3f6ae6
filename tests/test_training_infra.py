"""Training infrastructure: checkpoint reload, resume, SLURM requeue, the sbatch template, CPU DDP,
W&B offline, sweeps. All on the RetinaFace demo config shrunk to seconds."""

from __future__ import annotations

import functools
import json
import os
import shlex
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo" / "retinaface.yaml"
SMALL_SIZE = 64
SMALL = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.precision=32-true",
    "--trainer.limit_val_batches=1",
    "--trainer.val_check_interval=null",
    "--trainer.check_val_every_n_epoch=1",
    f"--data.init_args.image_size={SMALL_SIZE}",
    "--data.init_args.batch_size=2",
    "--data.init_args.val_batch_size=2",
    "--data.init_args.num_workers=0",
    "--data.init_args.synth_train_size=8",
    "--data.init_args.synth_val_size=2",
    "--data.init_args.synth_max_faces=3",
]


@functools.cache
def small_demo() -> Path:
    """The RetinaFace demo config whose checkpoint monitor names the AP at ``SMALL_SIZE`` px (the demo
    monitors the letterboxed AP at its own size, e.g. ``val/ap_easy@192``; SMALL runs validate at 64)."""
    config = yaml.safe_load(DEMO.read_text())
    for callback in config["trainer"].get("callbacks", []):
        monitor = (callback.get("init_args") or {}).get("monitor")
        if monitor and "@" in monitor:
            callback["init_args"]["monitor"] = f"{monitor.split('@')[0]}@{SMALL_SIZE}"
    path = Path(tempfile.mkdtemp(prefix="facelit-small-demo-")) / "retinaface.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run_cli(
    args: list[str], env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def _fit_one_step(tmp_path: Path):
    """The demo config, shrunk by SMALL, fitted for one step with logs and checkpoints under tmp_path."""
    return main(
        [
            "fit",
            "--config",
            str(small_demo()),
            *SMALL,
            "--trainer.max_steps=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )


def test_load_from_checkpoint_rebuilds_the_right_module(tmp_path: Path):
    cli = _fit_one_step(tmp_path)
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    import pytorch_lightning as pl

    import lightning_modules.retinaface  # noqa: F401  (the class must be imported to be trusted)

    loaded = pl.LightningModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert type(loaded) is type(cli.model)
    images = torch.rand(1, 3, 64, 64)
    cli.model.eval()
    loaded.eval()
    with torch.no_grad():
        a, b = cli.model.net(images), loaded.net(images)
    assert torch.allclose(a["cls"], b["cls"])


def test_resume_from_last_ckpt_continues_at_the_right_step(tmp_path: Path):
    record = tmp_path / "steps.json"
    common = [
        "--config",
        str(small_demo()),
        *SMALL,
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    first = main([*common, "--trainer.max_steps=3"], run=False)
    first.trainer.fit(first.model, first.datamodule)
    last = Path(first.trainer.checkpoint_callback.last_model_path)
    assert last.name == "last.ckpt" and torch.load(last, weights_only=False)["global_step"] == 3

    from tests.support import RecordSteps

    second = main([*common, "--trainer.max_steps=5"], run=False)
    second.trainer.callbacks.append(RecordSteps(str(record)))
    second.trainer.fit(second.model, second.datamodule, ckpt_path=str(last))
    assert json.loads(record.read_text()) == [3, 4]
    assert second.trainer.global_step == 5


def test_resumed_run_continues_the_epoch_order_of_an_uninterrupted_run(tmp_path: Path):
    """A checkpoint saved in the middle of epoch 0 (step 2 of 4 per epoch): the run resumed from it
    trains on the batches of the uninterrupted run (same samples, same order, into epoch 1)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from tests.support import RecordBatches

    def fit(name: str, ckpt: Path | None = None) -> list:
        record = tmp_path / f"{name}.json"
        cli = main(
            [
                "--config",
                str(small_demo()),
                *SMALL,
                "--data.init_args.augment=none",
                "--trainer.max_steps=6",
                f"--trainer.logger.init_args.save_dir={tmp_path / name}",
                f"--trainer.default_root_dir={tmp_path / name}",
            ],
            run=False,
        )
        cli.trainer.callbacks.append(RecordBatches(str(record)))
        if ckpt is None:
            every = ModelCheckpoint(tmp_path / "every", "{step}", every_n_train_steps=2, save_top_k=-1)
            cli.trainer.callbacks.append(every)
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(ckpt) if ckpt else None)
        return json.loads(record.read_text())

    straight = fit("straight")
    mid_epoch = tmp_path / "every" / "step=2.ckpt"
    state = torch.load(mid_epoch, weights_only=False)
    assert state["global_step"] == 2 and state["epoch"] == 0
    assert state["datamodule_hyper_parameters"]["synth_train_size"] == 8  # the datamodule's init args
    resumed = fit("resumed", mid_epoch)
    assert [s for s, _ in straight] == [0, 1, 2, 3, 4, 5] and [s for s, _ in resumed] == [2, 3, 4, 5]
    assert resumed == straight[2:]
    assert sorted(straight[0][1] + straight[1][1]) != sorted(straight[4][1] + straight[5][1])  # reshuffled


def test_epoch_shuffle_sampler_depends_on_seed_and_epoch_only_and_shards_evenly():
    from datamodules.base import EpochShuffleSampler

    data = list(range(10))
    fresh, used = EpochShuffleSampler(data, 2, seed=3), EpochShuffleSampler(data, 2, seed=3)
    for epoch in range(3):  # a sampler that has run epochs 0..2 and a fresh one agree on epoch 2
        used.set_epoch(epoch)
        list(used)
    fresh.set_epoch(2)
    assert list(fresh) == list(used) and sorted(fresh) == data
    fresh.set_epoch(1)
    assert list(fresh) != list(used)
    fresh.set_epoch(2)
    fresh.resume(epoch=2, batches=2)
    assert list(fresh) == list(used)[4:] and list(fresh) == list(used)  # the skip applies once
    fresh.resume(epoch=1, batches=2)  # a position in another epoch is ignored
    assert list(fresh) == list(used)
    shards = [EpochShuffleSampler(data, 1, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    assert sorted(list(shards[0]) + list(shards[1])) == data


def _fake_slurm_env(tmp_path: Path, job_id: str = "4242") -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol_calls.txt\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NAME": "facelit-test",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "SLURM_JOB_NUM_NODES": "1",
    }


@pytest.mark.slow
def test_slurm_sigusr1_saves_hpc_checkpoint_requeues_and_resumes(tmp_path: Path):
    env = _fake_slurm_env(tmp_path)
    record = tmp_path / "steps.json"
    root = tmp_path / "run"
    args = [
        "fit",
        "--config",
        str(small_demo()),
        *SMALL,
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=5",
    ]
    record_args = ["--trainer.callbacks+=tests.support.RecordSteps", f"--trainer.callbacks.path={record}"]
    # SignalThenDie runs before RecordSteps, so the batch it kills is not recorded.
    killed = _run_cli(
        [
            *args,
            "--trainer.callbacks+=tests.support.SignalThenDie",
            "--trainer.callbacks.step=2",
            *record_args,
        ],
        env,
    )
    assert killed.returncode == 143, killed.stderr[-3000:]
    assert (tmp_path / "scontrol_calls.txt").read_text().split() == ["requeue", "4242"]
    hpc = sorted(root.glob("hpc_ckpt_*.ckpt"))
    assert [p.name for p in hpc] == ["hpc_ckpt_1.ckpt"]
    assert torch.load(hpc[0], weights_only=False)["global_step"] == 2
    # The requeued job: same job id, same root dir -> Lightning restores hpc_ckpt_1 by itself.
    resumed = _run_cli([*args, *record_args], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(record.read_text()) == [0, 1, 2, 2, 3, 4]
    # Both attempts logged and checkpointed into one run directory, named after the job.
    runs = sorted(p.name for p in (tmp_path / "retinaface_demo").iterdir())
    assert runs == ["slurm-4242"], runs
    run_dir = tmp_path / "retinaface_demo" / "slurm-4242"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] >= 4
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "hparams.yaml").is_file()


def test_slurm_batch_job_pins_the_logger_version_to_the_job(tmp_path: Path, monkeypatch):
    for key, value in _fake_slurm_env(tmp_path, "5151").items():
        monkeypatch.setenv(key, value)
    cli = main(
        ["--config", str(small_demo()), *SMALL, f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False
    )
    assert cli.trainer.logger.version == "slurm-5151"
    assert Path(cli.trainer.logger.log_dir) == tmp_path / "retinaface_demo" / "slurm-5151"
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # Lightning's opt-out: no SLURM environment
    cli = main(
        ["--config", str(small_demo()), *SMALL, f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False
    )
    assert cli.trainer.logger.version == 0


def test_sbatch_template_runs_srun_with_stable_root_and_wandb_id(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(
        f'#!/bin/sh\necho "WANDB_RUN_ID=$WANDB_RUN_ID WANDB_RESUME=$WANDB_RESUME" > {tmp_path}/srun.txt\n'
        f'echo "$@" >> {tmp_path}/srun.txt\n'
    )
    srun.chmod(0o755)
    sbatch = REPO / "scripts" / "slurm" / "train.sbatch"
    text = sbatch.read_text()
    assert "#SBATCH --signal=SIGUSR1@90" in text and "#SBATCH --requeue" in text
    # One task per GPU, in the header and in the usage line.
    assert "#SBATCH --ntasks-per-node=1\n#SBATCH --gpus-per-node=1" in text
    usage = next(line for line in text.splitlines() if line.startswith("#   sbatch "))
    assert "--gpus-per-node=4 --ntasks-per-node=4" in usage
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "777",
        "SLURM_JOB_NAME": "rf",
        "SLURM_GPUS_PER_NODE": "4",
        "SLURM_JOB_NUM_NODES": "2",
        "FACELIT_RUN_ROOT": str(tmp_path / "runs"),
    }
    proc = subprocess.run(
        ["bash", str(sbatch), "configs/retinaface.yaml", "--trainer.max_epochs=3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    first, command = (tmp_path / "srun.txt").read_text().splitlines()
    assert first == "WANDB_RUN_ID=slurm-777 WANDB_RESUME=allow"
    words = shlex.split(command)
    assert (
        "--ntasks-per-node=4" in words and "--trainer.devices=4" in words and "--trainer.num_nodes=2" in words
    )
    assert (
        f"--trainer.default_root_dir={tmp_path}/runs/rf-777" in words
        and words[-1] == "--trainer.max_epochs=3"
    )
    # An allocation with fewer tasks than GPUs per node is refused.
    bad = subprocess.run(
        ["bash", str(sbatch), "configs/retinaface.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**env, "SLURM_NTASKS_PER_NODE": "1(x2)"},
        timeout=60,
    )
    assert bad.returncode == 2 and "one task per GPU" in bad.stderr
    # The arguments sbatch passes parse with our CLI.
    cli_args = words[words.index("cli.py") + 1 :]
    cli_args = [a for a in cli_args if not a.startswith(("--trainer.accelerator", "--trainer.strategy"))]
    with pytest.raises(SystemExit) as exit_info:
        main([*cli_args, "--print_config"])
    assert exit_info.value.code == 0


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_cpu_ddp_fit(tmp_path: Path):
    proc = _run_cli(
        [
            "fit",
            "--config",
            str(small_demo()),
            *SMALL,
            "--trainer.devices=2",
            "--trainer.strategy=ddp_spawn",
            "--trainer.max_steps=2",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpts = list(tmp_path.rglob("last.ckpt"))
    assert len(ckpts) == 1 and torch.load(ckpts[0], weights_only=False)["global_step"] == 2


def test_wandb_offline_logs_config_scalars_and_images(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_RUN_ID", "facelit-test-run")
    cli = main(
        [
            "fit",
            "--config",
            str(small_demo()),
            "--config",
            str(REPO / "configs" / "logger" / "wandb.yaml"),
            *SMALL,
            "--trainer.max_steps=4",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )  # one epoch: validation runs
    assert cli.trainer.state.finished
    run = cli.trainer.loggers[0].experiment
    assert run.id == "facelit-test-run"
    assert run.config["model"]["class_path"] == "lightning_modules.retinaface.RetinaFaceModule"
    import wandb

    wandb.finish()
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*-facelit-test-run"))
    assert len(runs) == 1, list((tmp_path / "logs").rglob("*"))[:20]
    # What `wandb sync` uploads later; W&B's service process writes it asynchronously: wait for it.
    expected = (
        b"lightning_modules.retinaface.RetinaFaceModule",
        b"val/ap_easy",
        b"train/loss",
        b"val/predictions",
    )
    record_path = runs[0] / "run-facelit-test-run.wandb"
    deadline = time.monotonic() + 60
    while True:
        record = record_path.read_bytes() if record_path.exists() else b""
        missing = [e for e in expected if e not in record]  # config, scalars and the overlay images
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, missing
    assert list((runs[0] / "files" / "media" / "images" / "val").glob("predictions_*.png"))


@pytest.mark.slow
def test_export_script_writes_onnx_matching_eager(tmp_path: Path):
    cli = _fit_one_step(tmp_path)
    ckpt = tmp_path / "m.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from export_onnx import main as export_main
    finally:
        sys.path.pop(0)
    report = export_main(["--ckpt", str(ckpt), "--out", str(tmp_path / "rf.onnx"), "--legacy-exporter"])
    assert (tmp_path / "rf.onnx").is_file() and report["max_abs_diff_vs_eager"] < 1e-4


def _toy_fit(nonfinite: str, bad_step: int, max_steps: int = 4):
    """A FaceModule on random images whose loss is NaN at training batch ``bad_step``; returns the
    module (with its weights at every batch) and the trainer."""
    from torch.utils.data import DataLoader

    from lightning_modules.base import FaceModule

    class Toy(FaceModule):
        def __init__(self, **kwargs):
            super().__init__(optimizer="sgd", lr=0.1, scheduler="none", **kwargs)
            self.net = torch.nn.Linear(3, 1)
            self.weights: list[torch.Tensor] = []

        def model_step(self, batch, stage):
            self.weights.append(self.net.weight.detach().clone())
            fit = self.net(batch["image"].mean((2, 3))).pow(2).mean()
            bad = stage == "train" and len(self.weights) - 1 == bad_step
            reg = torch.tensor(float("nan")) if bad else fit * 0
            return {"loss": fit + reg, "fit": fit, "reg": reg}

    images = [{"image": torch.rand(3, 4, 4)} for _ in range(8)]
    module = Toy(nonfinite=nonfinite)
    trainer = pl.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(images, batch_size=2))
    return module, trainer


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_the_loss_parts():
    from lightning_modules.base import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*fit=[0-9.e-]+, reg=nan"):
        _toy_fit("stop", bad_step=2)


def test_a_non_finite_loss_can_be_skipped_and_counted():
    module, _ = _toy_fit("skip", bad_step=1, max_steps=4)
    assert module.nonfinite_skipped == 1
    # The skipped batch (no gradients) leaves the weights as they were; the others change them.
    w = module.weights
    assert (
        len(w) == 4
        and torch.equal(w[1], w[2])
        and not torch.equal(w[0], w[1])
        and not torch.equal(w[2], w[3])
    )
