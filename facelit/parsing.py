"""Shared checks for the whitespace-separated numeric annotation and prediction files."""

from __future__ import annotations

import math

__all__ = ["check_number_tokens"]


def check_number_tokens(tokens: list[str], where: str) -> None:
    """Raise ``ValueError`` naming ``where`` (file and line) and the first token that is not a
    finite number."""
    for tok in tokens:
        try:
            value = float(tok)
        except ValueError:
            raise ValueError(f"{where}: not a number: {tok!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite value {tok!r}")
