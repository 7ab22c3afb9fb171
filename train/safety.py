"""Crash safety of a training run: what a run folder holds after a kill, what ``--resume`` continues from, and
how a run stops. The run's owners call in here: :class:`~train.spec.RunSpec` (the resume target, the save-dir
check) and :class:`~train.experiment.Experiment` (the run folder, evaluations, SIGTERM, non-finite stops).

* Files: every file a run writes goes through :mod:`fw_agents.atomic` (temporary name, then ``os.replace``), so
  a kill at any instant leaves the previous version whole; nothing with non-finite values is saved.
* :func:`resume_target`: ``--resume RUN`` continues from the newest intact saved state (``model.zip``, else the
  newest checkpoint, whichever has more steps) and says which. Resuming an older state of a run that has later
  ones is refused unless ``--archive-newer`` asks to move the later files into ``RUN/archive-<time>/``.
* :func:`never_saved`, :class:`Archive`: a folder left by a run that stopped before its first save can be run
  again (its leftovers are archived); ``--resume`` on it says to do that.
* :func:`sigterm_as_interrupt`: SIGTERM (a scheduler's stop) saves like Ctrl-C.
* :func:`stop_error`: a non-finite value stops the run with one line naming its source and the newest intact
  state to continue from.
* :func:`read_evaluations`: a damaged ``evaluations.npz`` (written in place by earlier versions) is set aside
  with a warning rather than blocking the resume.

Nothing a run saved is deleted here: files are only ever moved into an archive folder or set aside renamed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import sys
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from fw_agents import atomic
from fw_agents.nonfinite import NonFiniteError
from train import common
from train.argtypes import CLIError

CHECKPOINTS = "checkpoints"
EVALUATIONS_NAME = "evaluations.npz"
ARCHIVE_PREFIX = "archive-"
_CHECKPOINT = re.compile(r"model_(\d+)_steps\.zip")
_TEMPORARY = re.compile(r"\..*\.tmp-(\d+)(\.\w+)?")  # fw_agents.atomic.temporary_name


# ----------------------------------------------------------------------------------------------- saved states
@dataclass(frozen=True)
class SavedState:
    """A model file of a run: ``model.zip`` or a checkpoint; ``steps`` is None when it is damaged."""

    path: Path
    steps: int | None

    def describe(self, run_dir: Path) -> str:
        return f"{self.path.relative_to(run_dir)} (step {self.steps})"


def model_steps(path: Path) -> int | None:
    """The ``num_timesteps`` of an intact SB3 model file, or None if it is truncated or damaged (checked with the
    zip's CRCs, so without loading it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None or not {"data", "policy.pth"} <= set(archive.namelist()):
                return None
            return int(json.loads(archive.read("data"))["num_timesteps"])
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError):
        return None


def _statistics_intact(model_path: Path) -> bool:
    path = common.vecnormalize_path(model_path)
    try:
        with path.open("rb") as file:
            pickle.load(file)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, ImportError):
        return False
    return True


def saved_states(run_dir: Path, normalize: bool) -> list[SavedState]:
    """``model.zip`` (if there is one) and the checkpoints by steps, each checked (with its ``VecNormalize``
    statistics when the run normalises)."""
    paths = [run_dir / common.MODEL_NAME] if (run_dir / common.MODEL_NAME).exists() else []
    checkpoints = [
        path for path in (run_dir / CHECKPOINTS).glob("model_*_steps.zip") if _CHECKPOINT.fullmatch(path.name)
    ]
    paths += sorted(checkpoints, key=lambda path: int(_CHECKPOINT.fullmatch(path.name)[1]))
    states = []
    for path in paths:
        steps = model_steps(path)
        if steps is not None and normalize and not _statistics_intact(path):
            steps = None
        states.append(SavedState(path, steps))
    return states


def newest_state(states: list[SavedState]) -> SavedState | None:
    """The intact state with the most steps; ``model.zip`` (listed first) on a tie."""
    intact = [state for state in states if state.steps is not None]
    return max(intact, key=lambda state: state.steps, default=None)  # max keeps the first of equals


def _run_config(run_dir: Path) -> dict[str, Any]:
    return common.load_yaml(run_dir / common.CONFIG_NAME, "run config")


def _normalizes(config: dict[str, Any]) -> bool:
    return bool((config.get("hyperparams") or {}).get("normalize"))


# ----------------------------------------------------------------------------------------------- archives
def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _unused(path: Path) -> Path:
    """``path``, or ``path.2``, ``path.3``, … whichever does not exist yet: nothing is ever renamed over."""
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.{n}"), n + 1
    return candidate


def is_archive(folder: Path) -> bool:
    """Whether ``folder`` is a run's archive (``RUN/archive-<time>/``): not a run of its own."""
    return folder.name.startswith(ARCHIVE_PREFIX) and (folder.parent / common.CONFIG_NAME).is_file()


@dataclass
class Archive:
    """Files of a run folder to set aside in ``RUN/archive-<time>/`` before a run writes into the folder: moved,
    or copied where the run still reads them. Planned while the command's input is checked, applied (by
    :func:`prepare_run_dir`) only when training starts, so that a refused command changes nothing."""

    run_dir: Path
    what: str  # for the message: whose files these are
    move: list[Path]
    copy: list[Path] = field(default_factory=list)
    evaluations_up_to: int | None = None  # then evaluations.npz keeps only the evaluations up to this step

    def apply(self) -> Path:
        folder = _unused(self.run_dir / f"{ARCHIVE_PREFIX}{_timestamp()}")
        # Copies first: a kill part-way leaves each file in the run folder, the archive, or both.
        for path in self.copy:
            destination = folder / path.relative_to(self.run_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        for path in self.move:
            destination = folder / path.relative_to(self.run_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, destination)
        evaluations = self.run_dir / EVALUATIONS_NAME
        if self.evaluations_up_to is not None:
            arrays = read_evaluations(evaluations)
            if arrays is not None:
                atomic.save_npz(evaluations, **evaluations_up_to(arrays, self.evaluations_up_to))
        print(f"archived {self.what} in {folder} ({len(self.move)} moved, {len(self.copy)} copied)")
        return folder


def _later_results_archive(run_dir: Path, target: SavedState, states: list[SavedState]) -> Archive:
    """What continuing from ``target`` would overwrite or mix with: later model files are moved; the best model,
    evaluations and config (rewritten by the run) are copied, and the evaluations then cut at ``target``."""
    move = []
    for state in states:
        if state.path != target.path and (state.steps is None or state.steps > target.steps):
            statistics = common.vecnormalize_path(state.path)
            move += [state.path, *([statistics] if statistics.exists() else [])]
    best = run_dir / common.BEST_MODEL_NAME
    copy = [
        path
        for path in (best, common.vecnormalize_path(best), run_dir / EVALUATIONS_NAME, run_dir / common.CONFIG_NAME)
        if path.exists()
    ]
    return Archive(run_dir, f"the run's results after step {target.steps}", move, copy, target.steps)


# ----------------------------------------------------------------------------------------------- run folders
def never_saved(run_dir: Path) -> bool:
    """A run folder whose run stopped before its first save: a config without a result, no model, no checkpoint."""
    try:
        config = _run_config(run_dir)
    except CLIError:
        return False  # an unreadable config: not ours to judge; spec.check_save_dir's message applies
    return (
        "result" not in config
        and not (run_dir / common.MODEL_NAME).exists()
        and not any((run_dir / CHECKPOINTS).glob("*.zip"))
    )


def prepare_run_dir(save_dir: Path, archive: Archive | None) -> None:
    """Create the run folder when training starts, apply the archive planned for it, and remove temporary files
    left by killed processes (partial writes that nothing reads)."""
    save_dir.mkdir(parents=True, exist_ok=True)
    if archive is not None:
        archive.apply()
    for folder in (save_dir, save_dir / CHECKPOINTS):
        for path in folder.glob(".*.tmp-*") if folder.is_dir() else ():
            match = _TEMPORARY.fullmatch(path.name)
            if match and path.is_file() and not _process_alive(int(match[1])):
                path.unlink()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, another user's
    return True


# ----------------------------------------------------------------------------------------------- resume
@dataclass
class ResumeTarget:
    """What ``--resume`` continues from, what to archive first (``--archive-newer``), and the line that says so
    (printed by the caller once every other check has passed, so that a refusal stays one line)."""

    model_path: Path
    archive: Archive | None = None
    message: str = ""


def resume_target(resume: str | Path, archive_newer: bool) -> ResumeTarget:
    """``--resume PATH`` -> the model file to continue from, and the line that says which (``message``).

    A run folder: its newest intact state (``model.zip`` or a checkpoint, whichever has more steps; damaged files
    are skipped). A model file: that one; if the run has a later state, refused unless ``archive_newer``.
    """
    path = Path(resume)
    if path.is_dir() and (path / common.CONFIG_NAME).is_file():
        run_dir, explicit = path, None
    else:
        explicit = common.locate_model(path)
        config_path = common.find_run_config(explicit)
        if config_path is None:
            return ResumeTarget(explicit)  # not a run of these CLIs: the caller says so
        run_dir = config_path.parent
    config = _run_config(run_dir)
    states = saved_states(run_dir, _normalizes(config))
    if explicit is None:
        return _newest_for_resume(run_dir, states, config)

    steps = model_steps(explicit)
    if steps is None:
        raise CLIError(
            f"cannot load {explicit}: it is truncated or damaged; --resume {run_dir} continues from the run's "
            "newest intact state"
        )
    target = SavedState(explicit, steps)
    later = [state for state in states if state.steps is not None and state.steps > steps and state.path != explicit]
    if not later:
        message = f"resuming {run_dir} from {target.describe(run_dir)}"
        if archive_newer:
            message = f"--archive-newer: {run_dir} has nothing later than step {steps} to archive\n{message}"
        return ResumeTarget(explicit, message=message)
    found = ", ".join(state.describe(run_dir) for state in later)
    if not archive_newer:
        raise CLIError(
            f"{explicit} is at step {steps}, but {run_dir} has later results ({found}) that continuing from it "
            f"would overwrite or mix with; continue from the newest with --resume {run_dir}, or add "
            f"--archive-newer to move them into {run_dir}/{ARCHIVE_PREFIX}<time>/ and continue from step {steps}"
        )
    message = f"resuming {run_dir} from {target.describe(run_dir)}; archiving its later results ({found})"
    return ResumeTarget(explicit, _later_results_archive(run_dir, target, states), message)


def _newest_for_resume(run_dir: Path, states: list[SavedState], config: dict[str, Any]) -> ResumeTarget:
    newest = newest_state(states)
    if newest is None:
        if not states:
            raise CLIError(
                f"{run_dir} stopped before its first save (no {common.MODEL_NAME}, no checkpoint), so there is "
                f"nothing to resume; start it again with its command, which reuses the folder: "
                f"{config.get('command', f'python -m train.<algo> --save-dir {run_dir} ...')}"
            )
        damaged = ", ".join(str(state.path.relative_to(run_dir)) for state in states)
        raise CLIError(f"cannot resume {run_dir}: every saved model is truncated or damaged ({damaged})")
    model = states[0] if states[0].path.name == common.MODEL_NAME else None
    why = ""
    if newest is not model:
        why = (
            f" ({common.MODEL_NAME} is missing: the run stopped before its end)"
            if model is None
            else f" ({common.MODEL_NAME} is damaged)"
            if model.steps is None
            else f" ({common.MODEL_NAME} is older: step {model.steps})"
        )
    return ResumeTarget(newest.path, message=f"resuming {run_dir} from {newest.describe(run_dir)}{why}")


# ----------------------------------------------------------------------------------------------- evaluations
def read_evaluations(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``evaluations.npz``, or None if there is none. A damaged one (a kill while an earlier version
    wrote it in place) is renamed ``evaluations.npz.damaged-<time>`` with a one-line warning, and the history
    starts afresh: the model states are intact, and an error here would block the resume for a log."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        missing = {"timesteps", "results", "ep_lengths"} - set(arrays)
        if missing:
            raise ValueError(f"no {', '.join(sorted(missing))}")
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        aside = _unused(path.with_name(f"{path.name}.damaged-{_timestamp()}"))
        os.replace(path, aside)
        reason = " ".join(str(error).split()) or type(error).__name__
        print(
            f"warning: {path} is damaged ({reason}); kept as {aside.name}, and the evaluation history starts "
            "afresh (the next evaluation's model becomes best_model.zip)",
            file=sys.stderr,
        )
        return None
    return arrays


def evaluations_up_to(arrays: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
    keep = arrays["timesteps"] <= steps
    return {key: value[keep] if len(value) == len(keep) else value for key, value in arrays.items()}


# ----------------------------------------------------------------------------------------------- saving, stopping
def newest_note(save_dir: Path, algo: str, resumable: bool = True) -> str:
    """Where the run stands after a stop: its newest intact state, and (``resumable``) how to continue."""
    try:
        states = saved_states(save_dir, _normalizes(_run_config(save_dir)))
    except CLIError:
        states = []
    newest = newest_state(states)
    if newest is None:
        return "nothing was saved before it"
    note = f"nothing was saved after it: the newest saved state is {newest.describe(save_dir)}"
    return note + (f"; continue from it with python -m train.{algo} --resume {save_dir}" if resumable else "")


def stop_error(error: ValueError, model: BaseAlgorithm, save_dir: Path, algo: str) -> Exception:
    """The one-line :class:`CLIError` for a run stopped by a non-finite value (``error`` itself otherwise, a bug)."""
    message = " ".join(str(error).split()).rstrip(".")
    if isinstance(error, NonFiniteError) and not error.diverged:  # from the env: resume once it is fixed
        return CLIError(f"{message}. Training stopped at step {model.num_timesteps}; {newest_note(save_dir, algo)}")
    if not isinstance(error, NonFiniteError):
        if "nan" not in message.lower():
            return error  # a bug: keeps its traceback
        # torch.distributions rejects NaN logits: huge (finite) weights made the policy's outputs NaN.
        message = "the policy's outputs became NaN; lower the learning rate or max_grad_norm, or keep layer_norm on"
    # The same settings would diverge again: a new run with others, rather than a resume.
    stopped = f"Training stopped at step {model.num_timesteps}; {newest_note(save_dir, algo, resumable=False)}"
    return CLIError(f"training diverged: {message}. {stopped}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the signal arrives, so that the run stops and saves as for Ctrl-C; the command line
    exits with 128 + ``signum`` (143), as a shell reports a process ended by the signal."""

    signum = signal.SIGTERM


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``); only the main thread can
    take signals, elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored: a second one while the interrupted run saves would stop the save."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
