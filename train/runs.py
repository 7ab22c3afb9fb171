"""Reading finished run folders (as ``train.a2c`` / ``train.ppo`` write them): their configs, labels and
TensorBoard scalars. Shared by ``train.plot`` (curves) and ``train.compare`` (steps to a threshold).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from train import common, safety
from train.argtypes import CLIError

#: Hyperparameters that do not make two runs different variants (the budget only).
NOT_A_VARIANT = ("n_timesteps",)


@dataclass
class Scalars:
    """One scalar tag of a run, sorted by step: ``steps``, ``values`` and the ``wall_times`` (Unix seconds)."""

    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders (holding ``config.yml``) at or under each path, hidden folders under it left out."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise CLIError(f"{path} does not exist")
        # Hidden folders are skipped: a grid keeps a dead attempt's run under .retried/ (train.study).
        found = (
            [path]
            if (path / common.CONFIG_NAME).is_file()
            else sorted(
                config.parent
                for config in path.rglob(common.CONFIG_NAME)
                if not any(part.startswith(".") for part in config.relative_to(path).parts)
                and not safety.is_archive(config.parent)  # a run's archived files are not a run of their own
            )
        )
        if not found:
            raise CLIError(f"no runs ({common.CONFIG_NAME}) in {path}")
        runs.extend(run for run in found if run not in runs)
    return runs


def load_configs(runs: Sequence[Path]) -> dict[Path, dict[str, Any]]:
    return {run: common.load_yaml(run / common.CONFIG_NAME, "run config") for run in runs}


def tensorboard_dir(run: Path, config: dict[str, Any]) -> Path | None:
    """The run's TensorBoard folder as recorded, or at the same place relative to the run folder (if the
    runs were moved or are read from another working directory)."""
    recorded = config.get("tensorboard_dir")
    if not recorded:
        return None
    if Path(recorded).is_dir():
        return Path(recorded)
    relative = Path(os.path.relpath(recorded, config.get("save_dir") or run))
    candidate = (run / relative).resolve()
    return candidate if candidate.is_dir() else None


def load_scalars(directory: Path, tag: str) -> Scalars | None:
    """One scalar tag of a TensorBoard folder, sorted by step (a resumed run appends to the same folder)."""
    accumulator = EventAccumulator(str(directory), size_guidance={SCALARS: 0})  # 0: keep every point
    accumulator.Reload()
    if tag not in accumulator.Tags().get("scalars", []):
        return None
    events = accumulator.Scalars(tag)
    steps = np.array([event.step for event in events], dtype=float)
    order = np.argsort(steps, kind="stable")
    values = np.array([event.value for event in events], dtype=float)
    wall_times = np.array([event.wall_time for event in events], dtype=float)
    return Scalars(steps[order], values[order], wall_times[order])


def run_scalars(run: Path, config: dict[str, Any], tag: str) -> Scalars | None:
    """``tag`` of a run, or None if it has no TensorBoard log or never logged the tag."""
    directory = tensorboard_dir(run, config)
    scalars = load_scalars(directory, tag) if directory else None
    return scalars if scalars is not None and len(scalars.steps) else None


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_labels(configs: dict[Path, dict[str, Any]]) -> dict[Path, str]:
    """A label per run for plots and tables: the policy, prefixed by the algorithm when the runs use several,
    followed by the hyperparameters that differ between runs of the same env and policy (``fast-weights
    fast_learning_rate=0.5``), so that two variants of one memory are told apart and seeds are grouped."""
    several_algos = len({config.get("algorithm") for config in configs.values()}) > 1
    settings = {
        run: {
            key.removeprefix("policy_kwargs."): value
            for key, value in _flatten(config.get("hyperparams") or {}).items()
            if key not in NOT_A_VARIANT
        }
        for run, config in configs.items()
    }
    # Runs of the same env, policy and algorithm; within each group, the settings that are not all equal.
    groups: dict[tuple[Any, Any, Any], list[Path]] = defaultdict(list)
    for run, config in configs.items():
        groups[(config.get("env_id"), config.get("policy"), config.get("algorithm"))].append(run)
    labels = {}
    for (_, policy, algorithm), group in groups.items():
        keys = sorted({key for run in group for key in settings[run]})
        differing = [key for key in keys if len({repr(settings[run].get(key)) for run in group}) > 1]
        name = "?" if policy is None else str(policy)
        for run in group:
            label = f"{algorithm} {name}" if several_algos else name
            if differing:
                label += " " + " ".join(f"{key}={settings[run].get(key, 'default')}" for key in differing)
            labels[run] = label
    return labels
