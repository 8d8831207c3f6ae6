"""Every YAML under configs/ is parsed, instantiated and run (fast_dev_run, tiny synthetic data).

Paper configs that point at real data run here on the synthetic world (data_dir=null) with a tiny
batch and image size; the model, optimizer and trainer settings are exactly the config's.
configs/logger/*.yaml are composed onto a demo config; configs/sweeps/*.yaml are checked in
tests/test_sweeps.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli import main

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = sorted(
    p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name not in ("logger", "sweeps")
)
# Per datamodule (its module under datamodules/): the overrides that make its configs tiny. A new
# datamodule adds one entry here; its configs are then run by the two tests below.
# FACE_DATA fits every subclass of datamodules.base.FaceDataModule.
FACE_DATA = [
    "--data.init_args.batch_size=2",
    "--data.init_args.val_batch_size=2",
    "--data.init_args.num_workers=0",
    "--data.init_args.synth_cache=false",
]
TINY: dict[str, list[str]] = {
    "wider_face": [
        *FACE_DATA,
        "--data.init_args.image_size=64",
        "--data.init_args.synth_max_faces=3",
        "--model.init_args.weights_file=null",  # the paper config names ImageNet weights nobody downloads here
    ],
    "w300lp": [*FACE_DATA, "--data.init_args.image_size=64"],
    "aflw": [*FACE_DATA, "--data.init_args.image_size=64"],
    "animal_faces": [*FACE_DATA, "--data.init_args.image_size=32", "--data.init_args.synth_train_size=4",
                     "--data.init_args.synth_val_size=2", "--data.init_args.synth_human_size=8",
                     "--data.init_args.match_cache_dir=null"],
    "padaco": [*FACE_DATA, "--data.init_args.image_size=32", "--data.init_args.synth_source_size=8",
               "--data.init_args.synth_target_size=4", "--data.init_args.synth_val_size=2",
               "--data.init_args.synth_test_size=2", "--data.init_args.target_batch_size=2"],
    "face_recognition": [*FACE_DATA, "--data.init_args.image_size=[32,32]", "--data.init_args.synth_eval_size=150",
                         "--data.init_args.synth_eval_identities=30", "--data.init_args.synth_pairs_per_fold=1"],
    "tinyface": [*FACE_DATA, "--data.init_args.hr_size=32", "--data.init_args.synth_scene_size=64",
                 "--data.init_args.crops_per_image=2", "--data.init_args.min_crop_size=8"],
    "mtcnn": [*FACE_DATA, "--data.init_args.image_size=64", "--data.init_args.synth_render_size=64",
              "--data.init_args.synth_train_size=2", "--data.init_args.synth_val_size=2",
              "--data.init_args.synth_max_faces=3", "--data.init_args.samples_per_image=8",
              "--data.init_args.cache_dir=null"],
    "cdp": [*FACE_DATA, "--data.init_args.image_size=[32,32]", "--data.init_args.synth_identities=40",
            "--data.init_args.synth_world_size=80", "--data.init_args.held_out_fraction=0.5",
            "--data.init_args.num_identities=2",
            "--data.init_args.synth_eval_size=150", "--data.init_args.synth_eval_identities=30",
            "--data.init_args.synth_pairs_per_fold=1", "--data.init_args.cache_dir=null"],
    "cdp_mediator": [*FACE_DATA, "--data.init_args.synth_labelled_nodes=80",
                     "--data.init_args.synth_unlabelled_nodes=80", "--data.init_args.synth_identities=8"],
    "w300vw": [*FACE_DATA, "--data.init_args.image_size=32", "--data.init_args.clip_length=2",
               "--data.init_args.num_train_clips=2", "--data.init_args.num_val_clips=2"],
}


def datamodule_key(config: Path) -> str:
    """The module name (under ``datamodules/``) of the datamodule a config names."""
    class_path = yaml.safe_load(config.read_text())["data"]["class_path"]
    parts = class_path.split(".")
    if len(parts) < 3 or parts[0] != "datamodules":
        raise ValueError(f"{config}: data.class_path {class_path!r} is not a datamodules.<module>.<Class>")
    return parts[1]


def tiny_overrides(config: Path, tmp_path: Path) -> list[str]:
    key = datamodule_key(config)
    if key not in TINY:
        raise KeyError(f"{config}: add the tiny overrides of datamodules.{key} to TINY in {__file__}")
    return [
        "--trainer.fast_dev_run=1",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32-true",
        "--trainer.strategy=auto",
        "--trainer.num_nodes=1",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.init_args.data_dir=null",
        *TINY[key],
    ]


def test_there_are_configs_for_every_paper():
    names = {p.stem for p in PAPER_CONFIGS}
    assert {"retinaface"} <= names


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_config_fast_dev_run(config: Path, tmp_path: Path):
    cli = main(["fit", "--config", str(config), *tiny_overrides(config, tmp_path)])
    assert cli.trainer.state.finished, cli.trainer.state
    assert cli.trainer.global_step == 1


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_config_print_config_resolves(config: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("lightning_modules.")
    assert printed["data"]["class_path"].startswith("datamodules.")
