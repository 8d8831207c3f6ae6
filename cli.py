"""facelit command line: a thin LightningCLI over ``lightning_modules`` and ``datamodules``.

    python cli.py fit --config configs/demo/retinaface.yaml
    python cli.py fit --config configs/retinaface.yaml --config configs/logger/wandb.yaml
    python cli.py validate|test|predict --config ... --ckpt_path last.ckpt
    python cli.py fit --config ... --print_config

Any LightningModule subclass may be named as ``model.class_path`` and any LightningDataModule as
``data.class_path`` (subclass mode).

Links
-----
Arguments shared by a datamodule and a model are linked in full (see ``LINKS``): whenever both
chosen classes declare the argument, the model value is the datamodule value. A user value on a
linked target (``--model.init_args.image_size``, or ``model: init_args: image_size:`` in a config)
is refused with an error naming the source to set instead, and ``--print_config`` prints the
resolved model values.

Why not jsonargparse's own ``parser.link_arguments("data.init_args.X", "model.init_args.X")``: with
jsonargparse 4.53 in subclass mode it (a) skips links when ``--print_config`` is given, so the
printed config omits the linked model values, and (b) silently overwrites a user value on the
target (measured: ``--model.init_args.image_size=64`` ran with the datamodule's 128). The
hand-written step below runs inside parsing, before the config is printed or validated.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

__all__ = [
    "LINKS",
    "FaceLitArgumentParser",
    "FaceLitCLI",
    "LinkError",
    "LoggerSaveConfigCallback",
    "main",
    "pin_slurm_log_version",
]

# (source, target) in full: data.init_args.<name> -> model.init_args.<name>. A link applies when the
# chosen datamodule class and the chosen model class both declare <name>.
LINKS: tuple[tuple[str, str], ...] = (
    ("data.init_args.scheme", "model.init_args.scheme"),
    ("data.init_args.image_size", "model.init_args.image_size"),
    ("data.init_args.mesh", "model.init_args.mesh"),
    ("data.init_args.num_identities", "model.init_args.num_identities"),
    ("data.init_args.stage", "model.init_args.stage"),  # MTCNN: the cascade stage a run trains
    ("data.init_args.scale", "model.init_args.scale"),  # tiny-face GAN: the super-resolution factor
    ("data.init_args.num_pseudo_identities", "model.init_args.num_pseudo_identities"),  # CDP retraining
    ("data.init_args.structure", "model.init_args.structure"),  # CDP mediator input layout
)
_MISSING = inspect.Parameter.empty


class LinkError(ValueError):
    """A value was given on a linked target."""


def _import_class(class_path: str | None) -> type | None:
    if not class_path:
        return None
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(__import__(module_name, fromlist=[name]), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _class_defaults(class_path: str | None) -> dict[str, Any]:
    """``__init__`` parameters of the class at ``class_path`` -> default (``inspect.Parameter.empty``
    when required); follows ``**kwargs`` forwarded to base classes, as jsonargparse does. Empty when
    the class cannot be imported."""
    cls = _import_class(class_path)
    if cls is None:
        return {}
    params: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(klass.__init__).parameters.values()
        for p in signature:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self":
                params.setdefault(p.name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in signature):
            break
    return params


def _class_params(class_path: str | None) -> set[str]:
    """Names of the ``__init__`` parameters of the class at ``class_path`` (empty if unknown)."""
    return set(_class_defaults(class_path))


def applicable_links(model_class: str | None, data_class: str | None) -> list[tuple[str, str]]:
    """The ``LINKS`` whose argument both the datamodule and the model class declare."""
    model_params, data_params = _class_params(model_class), _class_params(data_class)
    return [
        (source, target)
        for source, target in LINKS
        if source.rsplit(".", 1)[1] in data_params and target.rsplit(".", 1)[1] in model_params
    ]


def apply_links(
    config: Namespace, explicit: Iterable[str] = (), refuse: bool = True
) -> list[tuple[str, str]]:
    """Set each applicable linked model value to the datamodule value, refusing user values.

    Args:
        config: a parsed (sub)command namespace holding ``model`` and ``data``.
        explicit: target keys (``model.init_args.X``) the user set explicitly (command line or config
            file), refused even when they equal the model's default.
        refuse: raise on a user value; ``False`` where the model values come from a checkpoint's
            hyperparameters (``--ckpt_path``): the datamodule's values then replace them.

    Returns:
        The links that were applied.

    Raises:
        LinkError: a linked target holds a user value (explicit, or different from both the model's
            default and the datamodule's value).
    """
    model, data = config.get("model"), config.get("data")
    if not isinstance(model, Namespace) or not isinstance(data, Namespace):
        return []
    model_class, data_class = model.get("class_path"), data.get("class_path")
    model_defaults, data_defaults = _class_defaults(model_class), _class_defaults(data_class)
    explicit = set(explicit)
    links = applicable_links(model_class, data_class)
    for source, target in links:
        name = target.rsplit(".", 1)[1]
        value = config.get(source, data_defaults[source.rsplit(".", 1)[1]])
        given = config.get(target, _MISSING)
        user_value = target in explicit or (
            given is not _MISSING and given != model_defaults[name] and given != value
        )
        if user_value and refuse:
            raise LinkError(
                f"{target}={given!r} is linked from {source} ({model_class} and {data_class} both declare "
                f"{name!r}): set {source} instead (it is {value!r}) and remove the model value"
            )
        if value is not _MISSING:
            config[target] = value
    return links


def explicit_targets(args: Sequence[str]) -> set[str]:
    """The ``LINKS`` targets that ``args`` set by hand: ``--model.init_args.X[=v]`` on the command
    line, or ``model: init_args: X:`` in a ``--config``/``-c`` file."""
    targets = {target for _, target in LINKS}
    found: set[str] = set()
    for i, arg in enumerate(args):
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if key in targets:
            found.add(key)
        if arg in ("--config", "-c") and i + 1 < len(args) or arg.startswith("--config="):
            path = Path(arg.split("=", 1)[1] if "=" in arg else args[i + 1])
            if not path.is_file():
                continue
            content = yaml.safe_load(path.read_text()) or {}
            init_args = (content.get("model") or {}) if isinstance(content, dict) else {}
            init_args = init_args.get("init_args") if isinstance(init_args, dict) else None
            for name in init_args or {}:
                if f"model.init_args.{name}" in targets:
                    found.add(f"model.init_args.{name}")
    return found


class FaceLitArgumentParser(LightningArgumentParser):
    """LightningArgumentParser that applies ``LINKS`` at the end of parsing, before the config is
    printed (``--print_config``) or validated."""

    explicit_link_targets: set[str] = set()
    parsing_checkpoint_hparams = False

    def _parse_common(self, cfg: Namespace, *args: Any, **kwargs: Any) -> Namespace:
        skip_validation = kwargs.get("skip_validation", args[2] if len(args) > 2 else False)
        if not skip_validation and not kwargs.get("nested_parse", False):  # the final, complete parse
            subcommand = cfg.get("subcommand")
            section = cfg.get(subcommand) if subcommand else cfg
            if isinstance(section, Namespace):
                try:
                    apply_links(section, self.explicit_link_targets, not self.parsing_checkpoint_hparams)
                except LinkError as err:
                    self.error(str(err))
        return super()._parse_common(cfg, *args, **kwargs)


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config to the log dir and hands it to every active logger.

    With W&B the whole resolved CLI config lands in the run config (so sweeps and dashboards can
    filter on any argument); other loggers receive it as hyperparameters.
    """

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="yaml")
        as_dict: dict[str, Any] = yaml.safe_load(config)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.experiment.config.update(as_dict, allow_val_change=True)
            else:
                logger.log_hyperparams({"config": as_dict})


def pin_slurm_log_version(trainer_config: Namespace) -> str | None:
    """Under a SLURM batch job (when Lightning's ``SLURMEnvironment`` auto-requeues), give every
    logger without an explicit ``version`` the version ``slurm-<job id>``, so that a requeued job
    (same job id) logs and checkpoints into the same run directory instead of a new ``version_N``.

    Returns:
        The version set, or ``None`` outside a SLURM batch job.
    """
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect() or SLURMEnvironment.job_id() is None:
        return None
    version = f"slurm-{SLURMEnvironment.job_id()}"
    loggers = trainer_config.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace):
            continue
        if "version" in _class_params(logger.get("class_path")) and logger.get("init_args.version") is None:
            logger["init_args.version"] = version
    return version


class FaceLitCLI(LightningCLI):
    """LightningCLI whose parser applies facelit's ``LINKS`` (see the module docstring) and whose
    loggers keep one run directory across SLURM requeues (:func:`pin_slurm_log_version`)."""

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        section = self.config.get(subcommand) if subcommand else self.config
        if isinstance(section, Namespace) and isinstance(section.get("trainer"), Namespace):
            pin_slurm_log_version(section.trainer)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if isinstance(parser, FaceLitArgumentParser):
            raw = sys.argv[1:] if args is None else args
            parser.explicit_link_targets = explicit_targets(raw) if isinstance(raw, (list, tuple)) else set()
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI re-parses the model with the ``--ckpt_path`` checkpoint's hyperparameters; the
        links then take the datamodule's values over the checkpoint's (as for a fresh model)."""
        parser = self.parser
        if not isinstance(parser, FaceLitArgumentParser):
            super()._parse_ckpt_path()
            return
        parser.parsing_checkpoint_hparams = True
        try:
            super()._parse_ckpt_path()
        finally:
            parser.parsing_checkpoint_hparams = False


def main(args: list[str] | None = None, run: bool = True) -> FaceLitCLI:
    """Entry point; ``args``/``run`` make it callable from tests."""
    return FaceLitCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=FaceLitArgumentParser,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
