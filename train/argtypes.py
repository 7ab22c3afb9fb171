"""Checks of single values for every command line and the run specification: counts, numbers, output paths,
and the argparse types and parser built on them.

Every check raises :class:`CLIError` (a ``ValueError``) naming the value and what is allowed; the command lines
print it as one line on stderr and exit with status 2 (:func:`train.common.run_cli`), with no traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np

from fw_agents.memory.base import check_number as _library_check_number


class CLIError(ValueError):
    """A user error: reported as one line on stderr, exit status 2. A ``ValueError`` for Python callers."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``prog: error: …``) instead of usage text plus the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ----------------------------------------------------------------------------------------------- values
def check_int(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (``high`` None: unbounded), else :class:`CLIError`.

    An integral float counts (YAML reads ``1e6`` as a float); a bool does not.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < low
        or (high is not None and value > high)
    ):
        if high is not None:
            allowed = f"an integer in [{low}, {high}]"
        else:
            allowed = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise CLIError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_number(
    name: str, value: Any, low: float | None = None, high: float | None = None, low_inclusive: bool = True
) -> float:
    """A finite real number (not a bool or a string) within the bounds, else :class:`CLIError`: the library's
    check (:func:`fw_agents.memory.base.check_number`), with the command lines' error type."""
    try:
        return _library_check_number(name, value, low=low, high=high, low_inclusive=low_inclusive)
    except ValueError as error:
        raise CLIError(str(error)) from None


def check_output_path(path: str | Path, name: str, kind: Literal["file", "folder"]) -> Path:
    """``path`` can be written as a ``kind``: if it exists, it is one (a file is not a folder) and is writable;
    otherwise the nearest folder above it that exists is writable (missing folders are made on writing).
    Checked before any work, so that a run never fails at its end for want of a place to write."""
    path = Path(path)
    if path.exists():
        if kind == "file" and path.is_dir():
            raise CLIError(f"{name}: {path} is a folder, expected a file name")
        if kind == "folder" and not path.is_dir():
            raise CLIError(f"{name}: {path} is a file, expected a folder")
        if not os.access(path, os.W_OK) or (kind == "folder" and _unwritable_folder(path)):
            raise CLIError(f"{name}: {path} is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if _unwritable_folder(parent):
        raise CLIError(f"{name}: cannot create {path}: nothing can be written in {parent}")
    return path


def _unwritable_folder(folder: Path) -> bool:
    """Whether a file cannot be made in ``folder``: a real probe, as permission bits do not tell (root, read-only
    mounts, /proc). The probe file is anonymous and gone when closed."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return False
    except OSError:
        return True


def check_json_path(path: Path | None) -> str | None:
    """An error message if ``--json`` cannot be written: a folder that does not exist, a folder given as the
    file, or no permission (checked before any work); None if it can."""
    if path is None:
        return None
    if not path.parent.is_dir():
        return f"--json: folder {str(path.parent)!r} does not exist"
    try:
        check_output_path(path, "--json", "file")
    except CLIError as error:
        return str(error)
    return None


# ----------------------------------------------------------------------------------------------- argparse types
def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]`` (``high`` None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            return check_int("the value", int(text), low, high)
        except (ValueError, CLIError) as error:
            message = str(error) if isinstance(error, CLIError) else f"expected an integer, got {text!r}"
            raise argparse.ArgumentTypeError(message.removeprefix("the value ")) from None

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def float_in(low: float, high: float = math.inf, low_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float in the interval from ``low`` (open or closed) to ``high`` (closed)."""

    def parse(text: str) -> float:
        try:
            return check_number("the value", float(text), low, None if math.isinf(high) else high, not low_open)
        except ValueError as error:
            message = str(error) if isinstance(error, CLIError) else f"expected a number, got {text!r}"
            raise argparse.ArgumentTypeError(message.removeprefix("the value ")) from None

    parse.__name__ = "float"
    return parse


#: Seeds numpy accepts.
MAX_SEED = 2**32 - 1
positive_int = int_at_least(1)
seed_int = int_at_least(0, MAX_SEED)
positive_float = float_in(0.0, low_open=True)
