"""Run folders, as ``train.a2c`` / ``train.ppo`` write them: their layout, what a kill leaves in them, what
``--resume`` continues from, and reading finished runs (configs, labels, TensorBoard scalars) for ``train.plot``,
``train.compare`` and the suite, rl-zoo3's log folders included.

A run folder holds ``config.yml`` (the :class:`~train.spec.RunSpec` as recorded, with the run's facts and result),
``model.zip``, ``best_model.zip``, ``evaluations.npz``, ``checkpoints/model_<steps>_steps.zip`` and, when the run
normalises, ``*_vecnormalize*.pkl`` beside each model. Every file a run writes goes through :mod:`fw_agents.atomic`
(a temporary name, then ``os.replace``), so a kill at any instant leaves the previous version whole.

* :func:`resume_target`: ``--resume RUN`` continues from the newest intact saved state (``model.zip``, else the
  newest checkpoint, whichever has more steps) and says which; an older state of a run that has later ones is
  refused unless ``--archive-newer`` asks to move the later files into ``RUN/archive-<time>/``.
* :func:`check_new_run_dir`, :func:`never_saved_archive`: a new run never overwrites a folder, except the leftovers
  of a run that stopped before its first save, which are archived when training starts.
* :func:`read_evaluations`: a damaged ``evaluations.npz`` is set aside with a warning rather than blocking a resume.

Nothing a run saved is deleted here: files are only ever moved into an archive folder or set aside renamed.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import re
import shutil
import socket
import sys
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from fw_agents import atomic
from fw_agents.callbacks import flatten
from fw_agents.nonfinite import first_non_finite_parameter
from train.cli import CLIError, load_yaml

CONFIG_NAME = "config.yml"
MODEL_NAME = "model.zip"
BEST_MODEL_NAME = "best_model.zip"
CHECKPOINTS = "checkpoints"
EVALUATIONS_NAME = "evaluations.npz"
ARCHIVE_PREFIX = "archive-"
#: Keys of a run's config.yml that resuming or evaluating it needs.
RECORD_KEYS = ("algorithm", "env_id", "policy", "seed", "hyperparams")
#: Hyperparameters that do not make two runs different variants (the budget only).
NOT_A_VARIANT = ("n_timesteps",)
_CHECKPOINT = re.compile(r"model_(\d+)_steps\.zip")
_TEMPORARY = re.compile(r"\..*\.tmp-(\d+)(\.\w+)?")  # fw_agents.atomic.temporary_name


# ----------------------------------------------------------------------------------------------- files of a run
def vecnormalize_path(model_path: str | Path) -> Path:
    """Where the ``VecNormalize`` statistics of a model live: ``model.zip`` -> ``model_vecnormalize.pkl``; SB3's
    checkpoints ``model_1000_steps.zip`` -> ``model_vecnormalize_1000_steps.pkl``."""
    path = Path(model_path)
    checkpoint = re.fullmatch(r"(.*)_(\d+)_steps\.zip", path.name)
    if checkpoint:
        return path.with_name(f"{checkpoint[1]}_vecnormalize_{checkpoint[2]}_steps.pkl")
    return path.with_name(f"{path.name.removesuffix('.zip')}_vecnormalize.pkl")


def locate_model(path: str | Path, default_name: str = MODEL_NAME) -> Path:
    """A model file, or a run folder (-> its ``default_name``)."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    elif not path.exists() and path.suffix != ".zip" and path.with_suffix(".zip").exists():
        path = path.with_suffix(".zip")  # SB3 accepts names without .zip
    if not path.is_file():
        raise CLIError(f"model file {path} does not exist")
    return path


def find_run_config(model_path: Path) -> Path | None:
    """The run's ``config.yml``: next to the model, or one folder up (checkpoints live in a sub-folder)."""
    for folder in (model_path.parent, model_path.parent.parent):
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    return None


def run_record(model_path: Path) -> dict[str, Any]:
    """The ``config.yml`` of the run a model belongs to, with what resuming it needs; a :class:`CLIError` otherwise."""
    config_path = find_run_config(model_path)
    if config_path is None:
        raise CLIError(f"no {CONFIG_NAME} next to {model_path}: only runs made by these CLIs can be resumed")
    record = load_yaml(config_path, "run config")
    missing = [key for key in RECORD_KEYS if key not in record]
    hyperparams = record.get("hyperparams") or {}
    missing += [f"hyperparams.{key}" for key in ("n_envs", "n_timesteps") if key not in hyperparams]
    if missing:
        raise CLIError(f"{config_path} has no {missing[0]!r}: an incomplete run config cannot be resumed")
    return record


# ----------------------------------------------------------------------------------------------- untrusted files
# A run folder may come from anyone (a shared disk, a download). Its pickles are read without running code: the
# statistics by an unpickler that builds only the classes they hold, a model's pickled items (spaces, schedules, the
# policy class, buffers) replaced by what the run's config and env give; what neither covers asks for --trust-pickle.
class SafeUnpickler(pickle.Unpickler):
    """Builds only what ``VecNormalize`` statistics hold: numpy arrays and random generators, Gymnasium spaces, SB3's
    ``RunningMeanStd`` and ``VecNormalize``; any other global (``os.system``, a payload's function) is refused."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pcg64", "PCG64"),
        ("numpy.random.bit_generator", "SeedSequence"), ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
        ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"), ("collections", "OrderedDict"),
    }  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name) if (module, name) in self.ALLOWED or module.startswith(
            "gymnasium.spaces.") else None  # fmt: skip
        if found is None or (module.startswith("gymnasium.spaces.") and not isinstance(found, type)):
            raise pickle.UnpicklingError(f"it holds {module}.{name}, which is not normalisation statistics")
        return found


def read_statistics(path: str | Path) -> VecNormalize:
    """``VecNormalize`` statistics from a file, read by :class:`SafeUnpickler` (no code in it runs)."""
    with Path(path).open("rb") as file:
        statistics = SafeUnpickler(file).load()
    if not isinstance(statistics, VecNormalize):
        raise pickle.UnpicklingError(f"it holds a {type(statistics).__name__}, not VecNormalize statistics")
    return statistics


def load_vecnormalize(path: str | Path, venv: VecEnv) -> VecNormalize:
    """Saved ``VecNormalize`` statistics around ``venv`` (:func:`read_statistics`); a missing, damaged or foreign file
    is a :class:`CLIError`."""
    try:
        statistics = read_statistics(path)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, TypeError, ImportError) as error:
        raise CLIError(f"cannot load normalisation statistics {path}: {error}") from None
    statistics.set_venv(venv)
    return statistics


def safe_objects(model_path: Path, venv: VecEnv, algo_class: type[BaseAlgorithm], policy: str | None,
                 hyperparams: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """SB3's ``custom_objects`` for ``load``: a stand-in, from the run's config and env, for every pickled item of the
    model file, so that none is unpickled (its weights are read by ``torch.load(weights_only=True)``); ``policy``: the
    run's ``--policy`` choice, or a policy class rl-zoo3 names. A pickled item they cannot stand in for is a
    :class:`CLIError` that names it and ``--trust-pickle``."""
    from train.spec import algorithm_arguments, policy_class_for, policy_kwargs_for, to_schedule

    taken = algorithm_arguments(algo_class)
    arguments = {key: to_schedule(value) for key, value in hyperparams.items() if key in taken}
    policy_class = policy_kwargs = None
    if policy is not None:  # its keyword arguments completed by the algorithm as in the run (A2C adds its RMSprop)
        policy_class = policy_class_for(policy, venv, algo_class)
        kwargs = policy_kwargs_for(policy_class, hyperparams.get("policy_kwargs"))
        policy_kwargs = algo_class(policy_class, venv, policy_kwargs=kwargs, _init_setup_model=False,
                                   **arguments).policy_kwargs  # fmt: skip

    with zipfile.ZipFile(model_path) as archive:
        data = json.loads(archive.read("data"))
    pickled = sorted(key for key, value in data.items() if isinstance(value, dict) and ":serialized:" in value)
    schedules = {key: arguments[key] for key in ("learning_rate", "clip_range", "clip_range_vf")
                 if arguments.get(key) is not None}  # fmt: skip
    known = {
        "observation_space": venv.observation_space, "action_space": venv.action_space, "policy_class": policy_class,
        "policy_kwargs": policy_kwargs, "lr_schedule": lambda _: 0.0, "learning_rate": 7e-4, "clip_range": 0.2,
        **schedules, **dict.fromkeys(("_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer",
                                      "ep_success_buffer", "rollout_buffer_class")),
    }  # fmt: skip
    unknown = [key for key in pickled if known.get(key, ...) is ... or (key in ("policy_class", "policy_kwargs")
                                                                        and known[key] is None)]  # fmt: skip
    if unknown:
        raise CLIError(
            f"{model_path} holds pickled objects ({', '.join(unknown)}) that its run's config cannot stand "
            "in for; loading them runs code the file contains: pass --trust-pickle if you trust it"
        )
    return {key: known[key] for key in pickled}


def load_run_model(
    model_path: Path, algo_class: type[BaseAlgorithm], env_id: str, hyperparams: dict[str, Any], n_envs: int,
    seed: int, device: str, training: bool, stats_path: Path | None = None, policy: str | None = None,
    trust_pickle: bool = False, **load_kwargs: Any,
) -> tuple[BaseAlgorithm, VecEnv]:  # fmt: skip
    """A saved model of a run and an env for it, with the run's ``VecNormalize`` statistics if it normalised (beside
    the model, or at ``stats_path``): the one loading of a model, to resume (``training=True``: the statistics keep
    updating) or to evaluate (frozen, raw rewards). No code in the files runs (:func:`safe_objects`; ``policy``: the
    run's ``--policy`` choice, or a policy class rl-zoo3 names) unless ``trust_pickle``. A missing, corrupt,
    mismatched or untrusted file is a :class:`CLIError`."""
    from train.spec import make_env

    normalize = hyperparams.get("normalize") or False
    stats = (stats_path or vecnormalize_path(model_path)) if normalize else None
    if stats is not None and not stats.exists():
        raise CLIError(f"the run normalises observations but {stats} is missing")
    venv = make_env(env_id, n_envs, seed, hyperparams.get("env_kwargs"), normalize, stats, training)
    try:
        objects = {} if trust_pickle else safe_objects(model_path, venv, algo_class, policy, hyperparams)
        model = algo_class.load(str(model_path), env=venv, device=device, custom_objects=objects, **load_kwargs)
    except CLIError:
        venv.close()
        raise
    # SB3 raises AssertionError for "No data found in the saved file", ValueError for spaces that do not fit.
    except (OSError, EOFError, AssertionError, KeyError, ValueError, RuntimeError, TypeError, AttributeError,
            zipfile.BadZipFile, pickle.UnpicklingError) as error:  # fmt: skip
        venv.close()
        message = " ".join(str(error).split()) or type(error).__name__
        raise CLIError(f"cannot load {algo_class.__name__} model {model_path}: {message}") from None
    name = first_non_finite_parameter(model.policy)
    if name is not None:  # earlier versions could save a model after training diverged
        venv.close()
        problem = f"{model_path} holds non-finite parameters ({name})"
        raise CLIError(f"{problem}: its training diverged; use an earlier checkpoint")
    return model, venv


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
    try:
        read_statistics(vecnormalize_path(model_path))
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, TypeError, ImportError):
        return False
    return True


def saved_states(run_dir: Path, normalize: bool) -> list[SavedState]:
    """``model.zip`` (if there is one) and the checkpoints by steps, each checked (with its ``VecNormalize``
    statistics when the run normalises)."""
    paths = [run_dir / MODEL_NAME] if (run_dir / MODEL_NAME).exists() else []
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


def newest_steps(run_dir: Path) -> int | None:
    """The steps of a run folder's newest intact state (None: none)."""
    newest = newest_state(saved_states(run_dir, _normalizes(_run_config(run_dir))))
    return None if newest is None else newest.steps


def newest_state(states: list[SavedState]) -> SavedState | None:
    """The intact state with the most steps; ``model.zip`` (listed first) on a tie."""
    intact = [state for state in states if state.steps is not None]
    return max(intact, key=lambda state: state.steps, default=None)  # max keeps the first of equals


def _run_config(run_dir: Path) -> dict[str, Any]:
    return load_yaml(run_dir / CONFIG_NAME, "run config")


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
    return folder.name.startswith(ARCHIVE_PREFIX) and (folder.parent / CONFIG_NAME).is_file()


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
            statistics = vecnormalize_path(state.path)
            move += [state.path, *([statistics] if statistics.exists() else [])]
    best = run_dir / BEST_MODEL_NAME
    copy = [
        path
        for path in (best, vecnormalize_path(best), run_dir / EVALUATIONS_NAME, run_dir / CONFIG_NAME)
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
        and not (run_dir / MODEL_NAME).exists()
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
            if match and path.is_file() and not process_alive(int(match[1])):
                path.unlink()


LOCK_NAME = ".lock"


def lock_run_dir(save_dir: Path) -> Any:
    """Make the run folder and take its lock (``fcntl.flock`` on ``RUN/.lock``), held while the returned file is open
    (for the run's life; the kernel drops it when the process dies, ``kill -9`` included): one writer per run folder.
    A folder another process holds is a :class:`CLIError` naming it."""
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        handle = (save_dir / LOCK_NAME).open("a+")
    except OSError as error:  # a read-only file system, no permission, a full disk
        reason = error.strerror or error
        raise CLIError(f"cannot write in {save_dir}: {reason}; a run needs a writable folder") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise CLIError(f"{save_dir} is in use by another run ({holder}); wait for it to end, or use another") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle


def check_new_run_dir(save_dir: Path) -> None:
    """A new run never overwrites anything: its folder must be new, empty (but for its lock file), hold only archives,
    or hold the leftovers of a run that stopped before its first save (archived when the new run starts:
    :func:`never_saved_archive`)."""
    entries = [p for p in save_dir.iterdir() if not is_archive(p) and p.name != LOCK_NAME] if save_dir.is_dir() else []
    if save_dir.is_dir() and (never_saved(save_dir) or not entries):
        return
    if save_dir.exists():
        ours = (save_dir / CONFIG_NAME).exists()
        hint = f"continue it with --resume {save_dir}" if ours else "it is not a run folder"
        raise CLIError(f"{save_dir} is not empty ({hint}); choose another --save-dir or remove it first")


def never_saved_archive(save_dir: Path) -> Archive | None:
    """The leftovers of a run that stopped before its first save in ``save_dir``, to archive before a new run."""
    if save_dir.is_dir() and never_saved(save_dir):
        entries = sorted(path for path in save_dir.iterdir() if not is_archive(path) and path.name != LOCK_NAME)
        return Archive(save_dir, "the leftovers of a run that stopped before its first save", entries)
    return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (someone else's counts)."""
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

    @property
    def run_dir(self) -> Path:
        """The run folder, where the run is now (wherever it was made)."""
        config = find_run_config(self.model_path)
        return self.model_path.parent if config is None else config.parent


def resume_target(resume: str | Path, archive_newer: bool) -> ResumeTarget:
    """``--resume PATH`` -> the model file to continue from, and the line that says which (``message``).

    A run folder: its newest intact state (``model.zip`` or a checkpoint, whichever has more steps; damaged files
    are skipped). A model file: that one; if the run has a later state, refused unless ``archive_newer``.
    """
    path = Path(resume)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        run_dir, explicit = path, None
    else:
        explicit = locate_model(path)
        config_path = find_run_config(explicit)
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
                f"{run_dir} stopped before its first save (no {MODEL_NAME}, no checkpoint), so there is "
                f"nothing to resume; start it again with its command, which reuses the folder: "
                f"{config.get('command', f'python -m train.<algo> --save-dir {run_dir} ...')}"
            )
        damaged = ", ".join(str(state.path.relative_to(run_dir)) for state in states)
        raise CLIError(f"cannot resume {run_dir}: every saved model is truncated or damaged ({damaged})")
    model = states[0] if states[0].path.name == MODEL_NAME else None
    why = ""
    if newest is not model:
        why = (
            f" ({MODEL_NAME} is missing: the run stopped before its end)"
            if model is None
            else f" ({MODEL_NAME} is damaged)"
            if model.steps is None
            else f" ({MODEL_NAME} is older: step {model.steps})"
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


# ----------------------------------------------------------------------------------------------- reading runs
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


@dataclass
class Scalars:
    """One scalar tag of a run, sorted by step: ``steps``, ``values`` and the ``wall_times`` (Unix seconds)."""

    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray


# rl-zoo3's log folders (``logs/<algo>/<env>_<n>/``: the model ``<env>.zip``, ``evaluations.npz``, and ``<env>/`` with
# ``args.yml``, ``config.yml`` and ``vecnormalize.pkl``), read as runs of ours: plot, compare and evaluate take them.
#: rl-zoo3's algorithm names -> ``module:Class`` (the recurrent one and SB3's and sb3-contrib's on-policy ones).
ZOO_ALGORITHMS = {
    "ppo_lstm": "sb3_contrib:RecurrentPPO", "ppo": "stable_baselines3:PPO", "a2c": "stable_baselines3:A2C",
    "trpo": "sb3_contrib:TRPO", "dqn": "stable_baselines3:DQN", "qrdqn": "sb3_contrib:QRDQN",
    "sac": "stable_baselines3:SAC", "td3": "stable_baselines3:TD3", "tqc": "sb3_contrib:TQC",
}  # fmt: skip


class _ZooLoader(yaml.SafeLoader):
    """The safe loader, plus the one Python tag rl-zoo3's files carry: an ``OrderedDict``, read as a plain dict."""


_ZooLoader.add_constructor(
    "tag:yaml.org,2002:python/object/apply:collections.OrderedDict",
    lambda loader, node: dict(loader.construct_sequence(node.value[0], deep=True)),
)


def zoo_run(folder: Path) -> dict[str, Any] | None:
    """An rl-zoo3 log folder as a run config of ours (``algorithm``, ``env_id``, ``policy``, ``seed``, ``hyperparams``,
    ``tensorboard_dir``, and ``zoo``: the model and statistics paths); None if ``folder`` is not one."""
    found = list(folder.glob("*/args.yml")) if folder.is_dir() else []
    if len(found) != 1 or not (found[0].parent / "config.yml").is_file():
        return None
    params = found[0].parent
    try:
        args = yaml.load(found[0].read_text(), Loader=_ZooLoader) or {}
        hyperparams = yaml.load((params / "config.yml").read_text(), Loader=_ZooLoader) or {}
    except (OSError, yaml.YAMLError) as error:
        raise CLIError(f"cannot read rl-zoo3 run {folder}: {' '.join(str(error).split())}") from None
    from train.spec import canonical_source  # (rl-zoo3 writes policy_kwargs and normalize as Python expressions)

    hyperparams = canonical_source(hyperparams, f"rl-zoo3 run {folder}")
    # SB3 logs TensorBoard to <tensorboard_log>/<env>/<Algorithm>_<n>, relative to where rl-zoo3 ran.
    root = folder.parents[len(Path(args.get("log_folder", "logs")).parts) + 1]
    run_id = folder.name.rpartition("_")[2]
    boards = sorted((root / (args.get("tensorboard_log") or "-") / params.name).glob(f"*_{run_id}"))
    return {
        "algorithm": args.get("algo"), "env_id": args.get("env"), "policy": hyperparams.pop("policy", None),
        "seed": args.get("seed"), "hyperparams": hyperparams, "save_dir": str(folder),
        "tensorboard_dir": str(boards[0]) if boards else None, "gym_packages": args.get("gym_packages") or [],
        "zoo": {"model": str(folder / f"{params.name}.zip"), "vecnormalize": str(params / "vecnormalize.pkl")},
    }  # fmt: skip


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders at or under each path (ours, with ``config.yml``, and rl-zoo3's), hidden folders and archives
    under it left out."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise CLIError(f"{path} does not exist")
        candidates = [path, *sorted(p for p in path.rglob("*") if p.is_dir())] if path.is_dir() else []
        found = [
            folder for folder in candidates
            if not any(part.startswith(".") for part in folder.relative_to(path).parts)
            and not is_archive(folder) and ((folder / CONFIG_NAME).is_file() or zoo_run(folder) is not None)
            and not (folder.parent / "args.yml").is_file()  # rl-zoo3's parameter folder inside its run
        ]  # fmt: skip
        if not found:
            raise CLIError(f"no runs ({CONFIG_NAME}, or rl-zoo3 log folders) in {path}")
        runs.extend(run for run in found if run not in runs and not any(p in found for p in run.parents))
    return runs


def load_configs(runs: Sequence[Path]) -> dict[Path, dict[str, Any]]:
    """Each run's config: ours, or an rl-zoo3 folder's read as one (:func:`zoo_run`)."""
    return {run: zoo_run(run) or load_yaml(run / CONFIG_NAME, "run config") for run in runs}


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
    """``tag`` of a run from its TensorBoard log, else (``eval/mean_reward``, ``eval/success_rate``) from its
    ``evaluations.npz``; None if the run never logged it."""
    directory = tensorboard_dir(run, config)
    scalars = load_scalars(directory, tag) if directory else None
    if (scalars is None or not len(scalars.steps)) and tag in ("eval/mean_reward", "eval/success_rate"):
        scalars = evaluation_scalars(run / EVALUATIONS_NAME, tag)
    return scalars if scalars is not None and len(scalars.steps) else None


def evaluation_scalars(path: Path, tag: str) -> Scalars | None:
    """An ``EvalCallback``'s ``evaluations.npz`` as the scalars it logs (each with the file's time as wall time); None
    while it holds none (or is being replaced)."""
    try:
        with np.load(path) as data:
            key = "results" if tag == "eval/mean_reward" else "successes"
            if key not in data.files or not len(data[key]):
                return None
            steps, values = data["timesteps"].astype(float), data[key].mean(axis=1).astype(float)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return None
    return Scalars(steps, values, np.full_like(steps, path.stat().st_mtime))


def run_labels(configs: dict[Path, dict[str, Any]]) -> dict[Path, str]:
    """A label per run for plots and tables: the policy, prefixed by the algorithm when the runs use several,
    followed by the hyperparameters that differ between runs of the same env and policy (``fast-weights
    fast_learning_rate=0.5``), so that two variants of one memory are told apart and seeds are grouped."""
    several_algos = len({config.get("algorithm") for config in configs.values()}) > 1
    settings = {
        run: {
            key.removeprefix("policy_kwargs."): value
            for key, value in flatten(config.get("hyperparams") or {}).items()
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
