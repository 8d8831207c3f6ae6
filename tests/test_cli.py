"""The CLI's full-path links between datamodule and model arguments."""

from pathlib import Path

import yaml

from cli import LINKS, _class_params, main

REPO = Path(__file__).resolve().parents[1]


def test_links_are_written_in_full():
    for source, target in LINKS:
        assert source.startswith("data.init_args.") and target.startswith("model.init_args."), (source, target)


def test_class_params_follow_kwargs_to_the_base_class():
    params = _class_params("datamodules.aflw.AFLWDataModule")
    assert {"protocol", "scheme", "image_size", "batch_size"} <= params
    assert _class_params("no.such.Class") == set()


def test_scheme_and_image_size_flow_from_data_to_model(capsys, tmp_path):
    config = REPO / "configs" / "demo" / "landmarks_aflw.yaml"
    try:
        main(["fit", "--config", str(config), "--data.init_args.image_size=96", "--print_config"])
    except SystemExit as exit_info:
        assert exit_info.code == 0
    cli = main(["--config", str(config), "--data.init_args.image_size=96",
                f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False)
    assert cli.model.scheme.name == "aflw19" and cli.model.image_size == 96
    assert cli.model.net.num_points == 19
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["init_args"]["scheme"] == "aflw19"
