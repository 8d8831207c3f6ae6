"""facelit command line: a thin LightningCLI over ``lightning_modules`` and ``datamodules``.

    python cli.py fit --config configs/demo/retinaface.yaml
    python cli.py fit --config configs/retinaface.yaml --config configs/logger/wandb.yaml
    python cli.py validate|test|predict --config ... --ckpt_path last.ckpt
    python cli.py fit --config ... --print_config

Any LightningModule subclass may be named as ``model.class_path`` and any LightningDataModule as
``data.class_path`` (subclass mode). Arguments shared by a datamodule and a model are linked in
full (see ``LINKS``): the model value is taken from the datamodule whenever both classes declare
the argument, so a config cannot silently disagree with itself.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

__all__ = ["LINKS", "FaceLitCLI", "LoggerSaveConfigCallback", "main"]

# (source, target) in full: data.init_args.<name> -> model.init_args.<name>.
LINKS: tuple[tuple[str, str], ...] = (
    ("data.init_args.scheme", "model.init_args.scheme"),
    ("data.init_args.image_size", "model.init_args.image_size"),
    ("data.init_args.num_mesh_vertices", "model.init_args.num_mesh_vertices"),
    ("data.init_args.num_identities", "model.init_args.num_identities"),
)


def _class_params(class_path: str | None) -> set[str]:
    """Names of the ``__init__`` parameters of the class at ``class_path`` (empty if unknown)."""
    if not class_path:
        return set()
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(__import__(module_name, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return set()
    names: set[str] = set()
    for klass in cls.__mro__:  # follow **kwargs forwarded to base classes, as jsonargparse does
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names - {"self"}


def apply_links(config: Namespace) -> list[tuple[str, str]]:
    """Copy each linked value from the datamodule's init_args to the model's, where both declare it.

    Args:
        config: a parsed (sub)command namespace holding ``model`` and ``data``.

    Returns:
        The links that were applied (for logging and tests).
    """
    model, data = config.get("model"), config.get("data")
    if not isinstance(model, Namespace) or not isinstance(data, Namespace):
        return []
    model_params = _class_params(model.get("class_path"))
    data_params = _class_params(data.get("class_path"))
    applied = []
    for source, target in LINKS:
        src_name, dst_name = source.rsplit(".", 1)[1], target.rsplit(".", 1)[1]
        if src_name in data_params and dst_name in model_params and config.get(source) is not None:
            config[target] = config[source]
            applied.append((source, target))
    return applied


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config to the log dir and hands it to every active logger.

    With W&B the whole resolved CLI config lands in the run config (so sweeps and dashboards can
    filter on any argument); other loggers receive it as hyperparameters.
    """

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        import yaml

        as_dict: dict[str, Any] = yaml.safe_load(config)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.experiment.config.update(as_dict, allow_val_change=True)
            else:
                logger.log_hyperparams({"config": as_dict})


class FaceLitCLI(LightningCLI):
    """LightningCLI with facelit's links applied before the classes are instantiated."""

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        apply_links(self.config[sub] if sub else self.config)


def main(args: list[str] | None = None, run: bool = True) -> FaceLitCLI:
    """Entry point; ``args``/``run`` make it callable from tests."""
    return FaceLitCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
