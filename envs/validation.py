"""Argument checks shared by the environments: every impossible setting is a ValueError that names the
argument and the allowed range, raised at construction time (not deep inside ``step``)."""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def check_int(name: str, value: int, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[low, high]`` (``high=None``: no upper bound), else raise ValueError."""
    # bool is an int subclass; True as a size is almost certainly a bug.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return int(value)


def check_choice(name: str, value: T, allowed: Collection[T]) -> T:
    """Return ``value`` if it is one of ``allowed``, else raise ValueError listing the choices."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(map(repr, allowed))}, got {value!r}")
    return value
