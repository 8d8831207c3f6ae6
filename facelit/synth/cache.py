"""Memoisation that never hands out shared mutable tensors.

``functools.cache`` on a function returning tensors gives every caller the same tensor objects: one
caller's in-place edit (``t += 1``, ``t[0] = ...``) silently changes what every later caller gets.
:func:`tensor_cache` memoises the computation but returns a copy of every tensor of the result
(recursively through dicts, lists, tuples and non-frozen dataclasses), so the cached value stays
as computed. Copies are cheap next to the rendering that uses them, except for large results that
a hot path reads on every call (the sensor-noise tile, the identity assets of a batch): the
renderer reads those through ``fn.shared``, the cached value itself, which its callers never edit
in place (tested: rendering leaves every shared value as computed).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["copy_tensors", "tensor_cache"]

T = TypeVar("T")


def copy_tensors(value: T) -> T:
    """``value`` with every tensor replaced by a clone, through dicts, lists, tuples (named tuples
    included) and non-frozen dataclasses; other objects (numbers, strings, frozen dataclasses) are
    shared."""
    if isinstance(value, torch.Tensor):
        return value.clone()  # type: ignore[return-value]
    if isinstance(value, dict):
        return type(value)((k, copy_tensors(v)) for k, v in value.items())  # type: ignore[return-value]
    if isinstance(value, list):
        return [copy_tensors(v) for v in value]  # type: ignore[return-value]
    if isinstance(value, tuple):
        items = [copy_tensors(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        params = getattr(type(value), "__dataclass_params__", None)
        if params is not None and params.frozen:
            return value
        copied = {f.name: copy_tensors(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **copied)
    return value


def tensor_cache(maxsize: int | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Like ``functools.lru_cache(maxsize)`` (unbounded for ``None``), but every call returns
    :func:`copy_tensors` of the cached result. ``cache_clear`` / ``cache_info`` are kept, and
    ``shared`` returns the cached result itself (same cache, no copy): read-only, for internal
    callers that never modify it."""

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return copy_tensors(cached(*args, **kwargs))

        wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
        wrapper.shared = cached  # type: ignore[attr-defined]
        return wrapper

    return decorate
