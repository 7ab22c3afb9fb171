"""Small argparse helpers for the experiment command lines (``train.assoc``, ``train.bench``'s model subcommands).

Every usage mistake is one line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``prog: error: …``) instead of usage text plus the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]`` (``high`` None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def float_in(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float in the interval from ``low`` to ``high`` (ends open or closed)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if value != value or too_low or too_high:  # value != value: NaN
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


positive_int = int_at_least(1)
positive_float = float_in(0.0, float("inf"), low_open=True, high_open=True)


def check_json_path(path: Path | None) -> str | None:
    """An error message if ``--json`` names a file in a folder that does not exist (checked before any work)."""
    if path is not None and not path.parent.is_dir():
        return f"--json: folder {str(path.parent)!r} does not exist"
    return None
