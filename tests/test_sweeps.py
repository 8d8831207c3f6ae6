"""Each W&B sweep file builds a command that our CLI parses (with W&B's own ${args} expansion)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from cli import main

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


def _sample(spec: dict, rng: random.Random):
    if "values" in spec:
        return rng.choice(spec["values"])
    if spec.get("distribution") == "log_uniform_values":
        return spec["min"] * (spec["max"] / spec["min"]) ** rng.random()
    if "min" in spec:
        return rng.uniform(spec["min"], spec["max"])
    raise ValueError(f"unsupported parameter spec {spec}")


def expand_command(sweep: dict, rng: random.Random) -> list[str]:
    """The argv W&B's agent would run (``${args}`` is ``--name=value`` per parameter)."""
    args = [f"--{name}={_sample(spec, rng)}" for name, spec in sweep["parameters"].items()]
    argv: list[str] = []
    for word in sweep["command"]:
        if word == "${env}":
            continue
        if word == "${program}":
            argv.append(sweep["program"])
        elif word == "${args}":
            argv.extend(args)
        else:
            argv.append(word)
    return argv


def test_there_is_a_sweep_per_paper_module():
    assert {p.stem for p in SWEEPS} >= {"retinaface", "landmarks"}


@pytest.mark.parametrize("sweep_path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_command_parses_with_our_cli(sweep_path: Path, capsys, monkeypatch):
    sweep = yaml.safe_load(sweep_path.read_text())
    assert sweep["program"] == "cli.py" and "${args}" in sweep["command"]
    for name in sweep["parameters"]:
        assert name.startswith(("model.init_args.", "data.init_args.")), name
    argv = expand_command(sweep, random.Random(0))
    assert argv[:2] == ["python", "cli.py"]
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[2:], "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    for name in sweep["parameters"]:
        section, _, key = name.split(".", 2)
        assert key.split(".")[-1] in printed[section]["init_args"], name
