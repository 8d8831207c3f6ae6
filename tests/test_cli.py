"""The CLI's full-path links between datamodule and model arguments."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from cli import LINKS, _class_params, applicable_links, explicit_targets, main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name not in ("logger", "sweeps"))
AFLW_DEMO = REPO / "configs" / "demo" / "landmarks_aflw.yaml"
RETINAFACE_DEMO = REPO / "configs" / "demo" / "retinaface.yaml"


def _print_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err[-2000:]
    return yaml.safe_load(out.out)


def _classes(package: str, base: type) -> list[type]:
    found = []
    for info in pkgutil.iter_modules([str(REPO / package)]):
        module = importlib.import_module(f"{package}.{info.name}")
        found += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, base) and c.__module__ == module.__name__
        ]
    return found


def test_links_are_written_in_full():
    for source, target in LINKS:
        assert source.startswith("data.init_args.") and target.startswith("model.init_args."), (
            source,
            target,
        )
        assert source.rsplit(".", 1)[1] == target.rsplit(".", 1)[1]


def test_every_link_names_an_argument_a_datamodule_and_a_model_declare():
    data_params = set().union(
        *(
            _class_params(f"{c.__module__}.{c.__name__}")
            for c in _classes("datamodules", pl.LightningDataModule)
        )
    )
    model_params = set().union(
        *(
            _class_params(f"{c.__module__}.{c.__name__}")
            for c in _classes("lightning_modules", pl.LightningModule)
        )
    )
    for source, target in LINKS:
        name = source.rsplit(".", 1)[1]
        assert name in data_params, f"{source}: no datamodule declares {name!r}"
        assert name in model_params, f"{target}: no LightningModule declares {name!r}"


def test_class_params_follow_kwargs_to_the_base_class():
    params = _class_params("datamodules.aflw.AFLWDataModule")
    assert {"protocol", "scheme", "image_size", "batch_size"} <= params
    assert _class_params("no.such.Class") == set()


def test_links_apply_only_where_both_classes_declare_the_argument():
    rf = applicable_links(
        "lightning_modules.retinaface.RetinaFaceModule", "datamodules.wider_face.WiderFaceDataModule"
    )
    assert {t for _, t in rf} == {"model.init_args.image_size", "model.init_args.mesh"}
    lm = applicable_links("lightning_modules.landmarks.LandmarkModule", "datamodules.aflw.AFLWDataModule")
    assert {t for _, t in lm} == {"model.init_args.image_size", "model.init_args.scheme"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_print_config_prints_linked_model_values_equal_to_the_data_values(config: Path, capsys):
    printed = _print_config(["--config", str(config)], capsys)
    links = applicable_links(printed["model"]["class_path"], printed["data"]["class_path"])
    for source, target in links:
        name = source.rsplit(".", 1)[1]
        assert name in printed["model"]["init_args"], f"{config}: {target} missing from --print_config"
        assert printed["model"]["init_args"][name] == printed["data"]["init_args"][name], (config, name)


def test_print_config_shows_a_data_override_on_the_model(capsys):
    printed = _print_config(
        ["--config", str(RETINAFACE_DEMO), "--data.init_args.image_size=96", "--data.init_args.mesh=true"],
        capsys,
    )
    assert printed["model"]["init_args"]["image_size"] == 96 and printed["model"]["init_args"]["mesh"] is True
    assert "scheme" not in printed["model"]["init_args"]  # RetinaFaceModule declares no scheme


@pytest.mark.parametrize("value", ["64", "256"])  # 256 is LandmarkModule's own default
def test_a_user_value_on_a_linked_target_is_refused(value: str, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(AFLW_DEMO), f"--model.init_args.image_size={value}", "--print_config"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert f"model.init_args.image_size={value}" in err and "set data.init_args.image_size instead" in err


def test_a_linked_target_in_a_config_file_is_refused(tmp_path: Path, capsys):
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  init_args:\n    scheme: aflw19\n")  # equal to the data value: still refused
    assert explicit_targets(["fit", "--config", str(extra)]) == {"model.init_args.scheme"}
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(AFLW_DEMO), "--config", str(extra), "--print_config"])
    assert exit_info.value.code != 0
    assert "set data.init_args.scheme instead" in capsys.readouterr().err


def test_scheme_and_image_size_flow_from_data_to_the_built_model(tmp_path):
    cli = main(
        [
            "--config",
            str(AFLW_DEMO),
            "--data.init_args.image_size=96",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        run=False,
    )
    assert cli.model.scheme.name == "aflw19" and cli.model.image_size == 96
    assert cli.model.net.num_points == 19


def test_ckpt_path_hyperparameters_follow_the_data_links(tmp_path: Path):
    """``validate --ckpt_path``: LightningCLI re-parses the checkpoint's model hyperparameters; a
    linked value in them is not a user value: the datamodule's value replaces it, as for a fresh
    model (here a checkpoint trained at 64 px, validated at 96 px)."""
    from tests.test_training_infra import SMALL, small_demo

    trained = main(
        [
            "fit",
            "--config",
            str(small_demo()),
            *SMALL,
            "--trainer.max_steps=1",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    ckpt = tmp_path / "m.ckpt"
    trained.trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["image_size"] == 64
    validated = main(
        [
            "validate",
            "--config",
            str(small_demo()),
            *SMALL,
            "--data.init_args.image_size=96",
            f"--ckpt_path={ckpt}",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    assert validated.model.hparams.image_size == 96 and validated.datamodule.image_size == 96
