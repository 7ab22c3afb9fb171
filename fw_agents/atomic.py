"""Saving a run's files whole or not at all, and never with non-finite values.

Each file is written to a temporary name in its own folder (``.model.tmp-<pid>.zip``), flushed to disk, and
renamed over the old version with ``os.replace``, which is atomic within a file system: a process killed at any
instant (``kill -9``, a scheduler's time limit, a power cut once the rename is on disk) leaves either the old
file or the new one, never a truncated one. A left-over temporary file is only ever a dotfile that nothing reads.

* :func:`atomic_path`: the pattern, for any writer that takes a path.
* :func:`write_text`, :func:`save_npz`, :func:`save_model`, :func:`save_vecnormalize`: the files of a run.
  The last two refuse non-finite parameters or statistics (:class:`~fw_agents.nonfinite.NonFiniteError`), so a
  diverged model never replaces a good one.
* :class:`AtomicCheckpointCallback`, :class:`AtomicEvalCallback`: SB3's ``CheckpointCallback`` and
  ``EvalCallback``, whose own writes are plain ``open(..., "w")``, with every file saved as above.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.vec_env import VecNormalize

from fw_agents.nonfinite import NonFiniteError, first_non_finite_parameter


def temporary_name(path: Path) -> Path:
    """``dir/name.ext`` -> ``dir/.name.tmp-<pid>.ext``: same folder (so the rename is atomic), hidden, and with the
    same extension (SB3 and numpy add theirs to a name without it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def _fsync(path: Path, directory: bool = False) -> None:
    descriptor = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def commit(temporary: Path, path: Path) -> None:
    """Flush ``temporary`` to disk and rename it to ``path`` (then flush the folder, so that the rename is too)."""
    _fsync(temporary)
    os.replace(temporary, path)
    if os.name == "posix":
        _fsync(path.parent, directory=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write ``path``'s new version to; on success it replaces ``path``, on an
    exception it is removed and ``path`` is untouched."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        yield temporary
        commit(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """``path.write_text(text)`` (UTF-8), atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """``np.savez(path, **arrays)``, atomically; ``path`` should end in ``.npz``."""
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


def save_model(model: BaseAlgorithm, path: str | os.PathLike) -> None:
    """``model.save(path)``, atomically; a :class:`NonFiniteError` (nothing written) if a parameter is not finite."""
    name = first_non_finite_parameter(model.policy)
    if name is not None:
        raise NonFiniteError(f"not saving {path}: the policy's parameter {name!r} is not finite", diverged=True)
    with atomic_path(path) as temporary:
        model.save(temporary)


def save_vecnormalize(vec_normalize: VecNormalize, path: str | os.PathLike) -> None:
    """``vec_normalize.save(path)``, atomically; a :class:`NonFiniteError` (nothing written) if a running statistic
    is not finite."""
    rms = [vec_normalize.ret_rms] + (
        list(vec_normalize.obs_rms.values()) if isinstance(vec_normalize.obs_rms, dict) else [vec_normalize.obs_rms]
    )
    if not all(np.isfinite(r.mean).all() and np.isfinite(r.var).all() for r in rms):
        raise NonFiniteError(f"not saving {path}: the observation or return statistics are not finite")
    with atomic_path(path) as temporary:
        vec_normalize.save(str(temporary))


def save_with_statistics(model: BaseAlgorithm, path: Path, statistics_path: Path | None) -> None:
    """The model and, if its env is normalised and ``statistics_path`` is given, its ``VecNormalize`` statistics.

    The statistics go first: a model file then always has its statistics next to it, whenever the process stops.
    """
    vec_normalize = model.get_vec_normalize_env()
    if statistics_path is not None and vec_normalize is not None:
        save_vecnormalize(vec_normalize, statistics_path)
    save_model(model, path)


class AtomicCheckpointCallback(CheckpointCallback):
    """SB3's ``CheckpointCallback`` (same arguments, same file names: ``<prefix>_<steps>_steps.zip`` and
    ``<prefix>_vecnormalize_<steps>_steps.pkl``), each file written atomically, the statistics before the model.
    A non-finite parameter raises :class:`NonFiniteError`: the last good checkpoint stays the newest.
    Replay buffers (off-policy algorithms) are not supported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.save_replay_buffer:
            raise ValueError("AtomicCheckpointCallback does not save replay buffers; use save_replay_buffer=False")

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            statistics = (
                Path(self._checkpoint_path("vecnormalize_", extension="pkl")) if self.save_vecnormalize else None
            )
            path = Path(self._checkpoint_path(extension="zip"))
            save_with_statistics(self.model, path, statistics)
            if self.verbose >= 2:
                print(f"Saving model checkpoint to {path}")
        return True


class AtomicEvalCallback(EvalCallback):
    """SB3's ``EvalCallback`` whose ``evaluations.npz`` and ``best_model.zip`` are written atomically; with
    ``save_vecnormalize``, the best model's ``VecNormalize`` statistics go to ``best_model_vecnormalize.pkl``.

    SB3 writes ``evaluations.npz`` with ``np.savez`` in place; here it writes a temporary file that replaces
    ``evaluations.npz`` once complete. The best model is saved here, after SB3 has found it better, rather than
    by SB3 (``best_model_save_path`` is kept from it).
    """

    def __init__(
        self, *args: Any, best_model_save_path: str | None = None, save_vecnormalize: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, best_model_save_path=None, **kwargs)
        self.best_model_path = None if best_model_save_path is None else Path(best_model_save_path) / "best_model.zip"
        self.save_vecnormalize = save_vecnormalize
        self.evaluations_path: Path | None = None
        if self.log_path is not None:  # SB3 made it <log_path>/evaluations and lets np.savez add ".npz"
            self.evaluations_path = Path(self.log_path + ".npz")
            self.log_path = str(temporary_name(self.evaluations_path).with_suffix(""))

    def _init_callback(self) -> None:
        super()._init_callback()
        if self.best_model_path is not None:
            self.best_model_path.parent.mkdir(parents=True, exist_ok=True)

    def _on_step(self) -> bool:
        best_before, evaluations_before = self.best_mean_reward, len(self.evaluations_timesteps)
        continue_training = super()._on_step()
        if self.evaluations_path is not None and len(self.evaluations_timesteps) > evaluations_before:
            commit(Path(self.log_path + ".npz"), self.evaluations_path)  # SB3 wrote it (no file check at every step)
        if self.best_model_path is not None and self.best_mean_reward > best_before:
            statistics = self.best_model_path.with_name("best_model_vecnormalize.pkl")
            save_with_statistics(self.model, self.best_model_path, statistics if self.save_vecnormalize else None)
        return continue_training
