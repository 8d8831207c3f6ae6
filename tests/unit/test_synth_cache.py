"""Cached synth functions hand out copies (an in-place edit by one caller never reaches a later
caller), and importing facelit.synth builds no tensor."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import facelit.synth
from facelit.synth import accessories, background, compose, features, head
from facelit.synth.cache import copy_tensors, tensor_cache

SYNTH = Path(facelit.synth.__file__).parent

CACHED: dict[str, Callable[[], Any]] = {
    "head_model": lambda: head.head_model("human"),
    "head_model_horse": lambda: head.head_model("horse"),
    "_scheme_weights": lambda: head._scheme_weights("human", "ibug68"),
    "_identity_assets": lambda: compose._identity_assets(0, 1, "human", (0, 1, 2)),
    "_human_chart_features": features._human_chart_features,
    "_eye_weights": lambda: features._eye_weights("human"),
    "_tube_faces": lambda: accessories._tube_faces(3, 14, True),
    "_grid": lambda: background._grid(8, 12),
    "noise_tile": background.noise_tile,
}


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor reachable in ``value`` (dicts, lists, tuples, dataclasses)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in _tensors(getattr(value, f.name))]
    return []


def _vandalise(t: torch.Tensor) -> None:
    if t.dtype == torch.bool:
        t.logical_not_()
    else:
        t.add_(1)


@pytest.mark.parametrize("name", sorted(CACHED))
def test_an_in_place_edit_of_a_cached_result_does_not_reach_a_later_call(name: str):
    first = CACHED[name]()
    snapshot = [t.clone() for t in _tensors(first)]
    assert snapshot, f"{name} returned no tensor"
    for t in _tensors(first):
        _vandalise(t)
    later = _tensors(CACHED[name]())
    assert len(later) == len(snapshot)
    assert all(torch.equal(a, b) for a, b in zip(later, snapshot, strict=True))


def test_every_cache_in_facelit_synth_is_a_tensor_cache():
    for path in SYNTH.glob("*.py"):
        if path.name == "cache.py":
            continue
        text = path.read_text()
        assert "functools.cache" not in text and "lru_cache" not in text, f"{path}: use cache.tensor_cache"


def test_copy_tensors_copies_through_containers_and_shares_frozen_dataclasses():
    @dataclasses.dataclass
    class Box:
        a: torch.Tensor
        items: list

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        a: torch.Tensor

    Pair = namedtuple("Pair", "x y")
    frozen = Frozen(torch.zeros(1))
    value = {
        "box": Box(torch.zeros(2), [torch.ones(1), (torch.ones(1), 3)]),
        "pair": Pair(torch.zeros(1), "s"),
        "frozen": frozen,
    }
    copy = copy_tensors(value)
    assert isinstance(copy["pair"], Pair) and copy["pair"].y == "s" and copy["frozen"] is frozen
    original, copied = _tensors(value), _tensors(copy)
    assert all(torch.equal(a, b) for a, b in zip(original, copied, strict=True))
    assert all(a is not b for a, b in zip(original[:-1], copied[:-1], strict=True))  # all but the frozen one


def test_tensor_cache_computes_once():
    calls = []

    @tensor_cache()
    def build(n: int) -> torch.Tensor:
        calls.append(n)
        return torch.arange(n)

    build(3).add_(5)
    assert torch.equal(build(3), torch.arange(3)) and calls == [3]
    assert build.cache_info().hits == 1


def test_importing_facelit_synth_builds_no_module_level_tensor():
    for info in pkgutil.iter_modules([str(SYNTH)]):
        module = importlib.import_module(f"facelit.synth.{info.name}")
        bad = [k for k, v in vars(module).items() if not isinstance(v, type) and _tensors(v)]
        assert not bad, f"facelit.synth.{info.name} holds tensors built at import time: {bad}"
