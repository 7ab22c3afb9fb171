"""Grids of training runs shared through an Optuna study, and the storages that hold the studies.

A grid (``train.compare run``, ``bench.suite run``) is a list of *cells*: one ``python -m train.<algo> …``
command each, with its run folder. Every worker that runs the grid (the same command started several times, on
one machine or on several) works through one Optuna study, the grid's ledger: each attempt at a cell is a trial
whose ``cell`` user attribute names the cell (its folder, relative to the grid's output folder). A worker

* claims a cell that nobody holds by creating a RUNNING trial for it, in one storage write;
* keeps it only if its trial is the cell's lowest-numbered live trial (two workers that claimed the same cell at
  the same moment both see both trials, and the higher one withdraws): so each cell is trained once;
* writes a heartbeat into its running trials every ``heartbeat_interval`` seconds while their training processes
  run, and, once they end, tells the trial COMPLETE (value: the run's final deterministic mean return) or FAIL
  with the process's exit status;
* fails another worker's running trial whose heartbeat has not changed for ``grace_period`` seconds by its own
  clock (so machines' clocks need not agree), and claims the cell again: the dead attempt's folder is moved to
  ``OUT_DIR/.retried/`` (kept, never deleted) and the cell trained afresh;
* returns when every cell is done (finished, or failed in this session), so that a grid is complete when the
  command returns.

Optuna's own heartbeat (``RDBStorage(heartbeat_interval=…)`` with ``RetryHeartbeatStaleTrialCallback``) is not
used here: in Optuna 5 only the RDB storages have it (``JournalStorage``, the embedded default, does not), and it
runs only inside ``Study.optimize``, which samples trials where a grid needs each cell claimed exactly once.
``train.tune`` does use it (see there).

The same folder-based resume as before holds: a cell whose run folder holds a finished run is kept (and recorded
in the study, so that workers elsewhere skip it too), a folder with an unfinished run that no live trial is
training is refused, never overwritten, unless that run stopped before its first save (nothing to resume, as
``--resume`` on it says): then its folder is moved to ``OUT_DIR/.retried/`` and the cell trained again.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from train import common, safety
from train.argtypes import CLIError, positive_float

#: The embedded storage, in the grid's (or tuner's) output folder: Optuna's journal file, safe for several
#: processes on one machine (and on a shared disk: NFSv3 or later).
DEFAULT_STORAGE_NAME = "optuna-journal.log"
#: Suffixes of a ``--storage`` that names a journal file rather than a database URL (rl-zoo3 takes ``.log``).
JOURNAL_SUFFIXES = (".log", ".journal")
#: Seconds between a worker's heartbeats, and without one before another worker retries the cell.
HEARTBEAT_INTERVAL = 10.0
GRACE_PERIOD = 60.0
#: Seconds between polls of the training processes and the study.
POLL_INTERVAL = 0.5
#: Where the folder of an attempt whose worker died goes, under the grid's output folder (hidden: run readers
#: such as ``train.compare table`` and ``train.plot`` skip it).
RETRIED_DIR = ".retried"

# Trial user attributes.
CELL = "cell"  # the cell's name: its run folder relative to the grid's output folder
SPEC = "spec"  # the cell's command without interpreter and output paths: two grids with one name must agree
HEARTBEAT = "heartbeat"  # the owner's wall-clock time at its last beat (compared for change only)
EXIT_STATUS = "exit_status"  # set by the owner before it tells FAIL: the training failed (not the worker)
KEPT = "kept"  # a run found finished in its folder and recorded, not trained by this study


# ----------------------------------------------------------------------------------------------- storages
def add_storage_arguments(parser, default_study: str) -> None:  # noqa: ANN001  (an argparse parser or group)
    """``--storage`` and ``--study-name``, rl-zoo3's names."""
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage shared by every worker: a database URL (sqlite:///study.db, "
        "postgresql://user:pw@host/db, mysql+pymysql://…) or a journal file (*.log) on a shared disk "
        f"(default: OUT_DIR/{DEFAULT_STORAGE_NAME})",
    )
    parser.add_argument("--study-name", metavar="NAME", help=f"the study in that storage (default: {default_study})")


def add_grid_arguments(parser, default_study: str) -> None:  # noqa: ANN001
    """The storage arguments, and the heartbeat's timing (Optuna's ``RDBStorage`` names)."""
    add_storage_arguments(parser, default_study)
    parser.add_argument(
        "--heartbeat-interval",
        type=positive_float,
        default=HEARTBEAT_INTERVAL,
        metavar="S",
        help=f"seconds between a worker's heartbeats (default: {HEARTBEAT_INTERVAL:g})",
    )
    parser.add_argument(
        "--grace-period",
        type=positive_float,
        default=GRACE_PERIOD,
        metavar="S",
        help=f"seconds without a heartbeat before another worker retries a cell (default: {GRACE_PERIOD:g})",
    )


def run_grid(grid: Sequence[GridRun], out_dir: Path, args: argparse.Namespace, default_study: str) -> int:
    """Run ``grid`` as one worker of its study (``args``: :func:`add_grid_arguments`' and ``--jobs``)."""
    if args.grace_period <= args.heartbeat_interval:
        raise CLIError(
            f"--grace-period ({args.grace_period:g} s) must be longer than --heartbeat-interval "
            f"({args.heartbeat_interval:g} s)"
        )
    storage = open_storage(args.storage, out_dir / DEFAULT_STORAGE_NAME)
    worker = GridWorker(
        grid,
        out_dir,
        storage,
        args.study_name or default_study,
        args.jobs,
        args.heartbeat_interval,
        args.grace_period,
    )
    return worker.run()


def open_storage(url: str | None, default_path: Path, **rdb_kwargs: object) -> BaseStorage:
    """The Optuna storage ``--storage`` names: a journal file (``None``: ``default_path``; a path ending in
    ``.log``), or a database URL (``sqlite:///…``, ``postgresql://…``, ``mysql+pymysql://…``) opened as
    :class:`~optuna.storages.RDBStorage` with ``rdb_kwargs``. A storage that cannot be opened is a
    :class:`CLIError`, raised before any work."""
    if url is None or ("://" not in url and url.endswith(JOURNAL_SUFFIXES)):
        path = default_path if url is None else Path(url)
        if url is not None and not path.parent.is_dir():
            raise CLIError(f"--storage: folder {str(path.parent)!r} of the journal file does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as error:
            raise CLIError(f"--storage: cannot open journal file {path}: {error.strerror or error}") from None
    if "://" not in url:
        raise CLIError(
            f"--storage takes a database URL (sqlite:///study.db, postgresql://user:pw@host/db, "
            f"mysql+pymysql://user:pw@host/db) or a journal file ending in {' or '.join(JOURNAL_SUFFIXES)}; got {url!r}"
        )
    import sqlalchemy.exc

    try:
        with warnings.catch_warnings():  # Optuna marks its heartbeat's arguments experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, **rdb_kwargs)
    except ImportError as error:  # the database's driver
        raise CLIError(
            f"--storage {url}: its database driver is not installed ({error}); PostgreSQL needs psycopg2 "
            "(pip install psycopg2-binary), MySQL PyMySQL (pip install PyMySQL, URL mysql+pymysql://…)"
        ) from None
    except (ValueError, RuntimeError, sqlalchemy.exc.SQLAlchemyError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CLIError(f"--storage: cannot open {url}: {message}") from None


def load_study(storage: BaseStorage, name: str, direction: str = "maximize", **kwargs: object) -> optuna.Study:
    """The study ``name`` in ``storage``, created if it does not exist (by whichever worker comes first)."""
    # Our own lines say what happens; Optuna's would repeat them, with a traceback for each failed trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True, **kwargs)
    except ValueError as error:  # e.g. an existing study with other directions
        raise CLIError(f"--study-name {name}: {error}") from None


def die_with_parent() -> None:
    """``preexec_fn`` of a training process (Linux): SIGTERM when its worker dies, so that no orphan keeps
    training a cell that another worker retries. Elsewhere a killed worker's training runs on by itself."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_process(command: Sequence[str], log: Path) -> subprocess.Popen:
    """Start ``command`` with its output in ``log`` (the child keeps its own descriptor)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        return subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )


# ----------------------------------------------------------------------------------------------- grid
@dataclass
class GridRun:
    """One training run of a grid: its folder and the ``python -m train.<algo> …`` command that makes it."""

    save_dir: Path
    command: list[str]

    @property
    def log(self) -> Path:
        return self.save_dir.with_suffix(".log")

    @property
    def algo(self) -> str:
        return self.command[2].removeprefix("train.")

    @property
    def spec(self) -> str:
        """The command without the interpreter and the output paths, which may differ between machines."""
        words, skip = [], False
        for word in self.command[1:]:
            if not skip and word not in ("--save-dir", "--tensorboard-log"):
                words.append(word)
            skip = word in ("--save-dir", "--tensorboard-log")
        return " ".join(words)


def finished(save_dir: Path) -> bool:
    """Whether a run folder holds a finished run (its config has a final result)."""
    config_path = save_dir / common.CONFIG_NAME
    return config_path.is_file() and "result" in (common.load_yaml(config_path, "run config") or {})


def run_value(save_dir: Path) -> float:
    """A finished run's score for its trial: the final deterministic mean return, else the last periodic
    evaluation's mean, else -inf (the run measured nothing)."""
    config = common.load_yaml(save_dir / common.CONFIG_NAME, "run config")
    final = ((config.get("result") or {}).get("final_eval_deterministic") or {}).get("mean_return")
    if final is not None:
        return float(final)
    evaluations = read_evaluations(save_dir / "evaluations.npz")
    return float(evaluations[1][-1]) if evaluations is not None and len(evaluations[1]) else -float("inf")


def read_evaluations(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``evaluations.npz`` as SB3's ``EvalCallback`` writes it: the steps ``(n,)`` and mean returns ``(n,)`` of
    the periodic evaluations; None if absent or being written (read again at the next poll)."""
    try:
        with np.load(path) as data:
            return data["timesteps"].astype(int), data["results"].mean(axis=1)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):  # absent, or caught mid-write
        return None


def cell_name(run: GridRun, out_dir: Path) -> str:
    return run.save_dir.relative_to(out_dir).as_posix()


def owner(trials: Sequence[FrozenTrial], ignored: set[int]) -> FrozenTrial | None:
    """The trial that holds a cell, from the cell's trials: the lowest-numbered one that is COMPLETE, RUNNING,
    or FAIL with an exit status (the training failed) and not in ``ignored``; None if the cell is free.

    A FAIL without an exit status is a withdrawn duplicate or an attempt whose worker died: it holds nothing.
    """
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state in (TrialState.COMPLETE, TrialState.RUNNING):
            return trial
        if trial.state == TrialState.FAIL and EXIT_STATUS in trial.user_attrs and trial.number not in ignored:
            return trial
    return None


@dataclass
class _Active:
    """A cell this worker is training."""

    run: GridRun
    cell: str
    trial_id: int
    number: int
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    last_beat: float = field(default_factory=time.monotonic)


class GridWorker:
    """One worker of a grid study: claims free cells, ``jobs`` at a time, trains each in its own process, and
    retries the cells of workers that died (see the module docstring)."""

    def __init__(
        self,
        grid: Sequence[GridRun],
        out_dir: Path,
        storage: BaseStorage,
        study_name: str,
        jobs: int = 1,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        grace_period: float = GRACE_PERIOD,
    ) -> None:
        self.grid, self.out_dir, self.storage, self.jobs = list(grid), out_dir, storage, jobs
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.study = load_study(storage, study_name)
        self.study_id = storage.get_study_id_from_name(study_name)
        self.cells = {cell_name(run, out_dir): run for run in self.grid}
        self.host = socket.gethostname()
        # (heartbeat value, when it last changed by our monotonic clock) of other workers' running trials.
        self.beats: dict[int, tuple[object, float]] = {}
        self.active: list[_Active] = []
        self.started, self.failed, self.kept, self.elsewhere = 0, 0, 0, 0
        trials = self.trials_by_cell()
        self.check(trials)
        # Failures from before this session do not hold their cells: running the command again retries them
        # (their folders, refused by check() unless moved away, are the user's to resume).
        self.ignored = {t.number for group in trials.values() for t in group if t.state == TrialState.FAIL}

    def trials_by_cell(self) -> dict[str, list[FrozenTrial]]:
        found: dict[str, list[FrozenTrial]] = {cell: [] for cell in self.cells}
        for trial in self.study.get_trials(deepcopy=False):
            if trial.user_attrs.get(CELL) in found:
                found[trial.user_attrs[CELL]].append(trial)
        return found

    def check(self, trials: dict[str, list[FrozenTrial]]) -> None:
        """Before any work: the study's cells have these settings, and no unfinished run folder is overwritten."""
        for cell, run in self.cells.items():
            other = next((t for t in trials[cell] if t.user_attrs.get(SPEC) != run.spec), None)
            if other is not None:
                raise CLIError(
                    f"study {self.study.study_name!r} already has cell {cell} with other settings "
                    f"({other.user_attrs.get(SPEC)}); use another --study-name or --out-dir"
                )
            running = any(t.state == TrialState.RUNNING for t in trials[cell])
            folder = run.save_dir
            # A run that stopped before its first save has nothing to resume: its cell is trained again (start()
            # moves the folder to .retried/); one with a saved state is the user's to resume.
            unfinished = folder.exists() and any(folder.iterdir()) and not finished(folder)
            if not running and unfinished and not safety.never_saved(folder):
                raise CLIError(
                    f"{folder} holds an unfinished run; resume it with python -m train.{run.algo} --resume "
                    f"{folder}, or move it away"
                )

    # ------------------------------------------------------------------------------------------- trials
    def claim(self, cell: str, kept_value: float | None = None) -> int | None:
        """Create a RUNNING trial for ``cell`` (one storage write); its id if it holds the cell, else it is
        withdrawn (told FAIL without an exit status) and None is returned. With ``kept_value``: record a run found
        finished in its folder as a COMPLETE trial instead."""
        state = TrialState.RUNNING if kept_value is None else TrialState.COMPLETE
        run = self.cells[cell]
        template = optuna.trial.create_trial(
            state=state,
            value=kept_value,
            user_attrs={
                CELL: cell,
                SPEC: run.spec,
                "host": self.host,
                "pid": os.getpid(),
                KEPT: kept_value is not None,
            },
        )
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        if state != TrialState.RUNNING:
            return trial_id
        number = self.storage.get_trial_number_from_id(trial_id)
        holder = owner(self.trials_by_cell()[cell], self.ignored)
        if holder is not None and holder.number != number:
            self.finish_trial(trial_id, TrialState.FAIL)  # a duplicate: the lower trial holds the cell
            return None
        return trial_id

    def finish_trial(
        self, trial_id: int, state: TrialState, value: float | None = None, exit_status: int | None = None
    ) -> bool:
        """Tell a trial's outcome; False if another worker finished it first (it took us for dead)."""
        try:
            if exit_status is not None:
                self.storage.set_trial_user_attr(trial_id, EXIT_STATUS, exit_status)
            self.storage.set_trial_state_values(trial_id, state, None if value is None else [value])
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            return False
        return True

    def beat(self, entry: _Active) -> bool:
        """Record a heartbeat; False if the trial was failed by another worker meanwhile."""
        entry.last_beat = time.monotonic()
        try:
            self.storage.set_trial_user_attr(entry.trial_id, HEARTBEAT, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            return False
        return True

    def stale(self, trial: FrozenTrial) -> bool:
        """Whether another worker's running trial has shown no new heartbeat for the grace period."""
        value = trial.user_attrs.get(HEARTBEAT)
        seen = self.beats.get(trial.number)
        now = time.monotonic()
        if seen is None or seen[0] != value:
            self.beats[trial.number] = (value, now)
            return False
        return now - seen[1] > self.grace_period

    # ------------------------------------------------------------------------------------------- cells
    def keep_finished(self, trials: dict[str, list[FrozenTrial]]) -> set[str]:
        """Cells already done: a finished run in its folder (recorded in the study if it is not there yet), or
        a COMPLETE trial of another worker."""
        done = set()
        for cell, run in self.cells.items():
            complete = [t for t in trials[cell] if t.state == TrialState.COMPLETE]
            if finished(run.save_dir):
                if not complete:
                    self.claim(cell, kept_value=run_value(run.save_dir))
                print(f"{run.save_dir}: already finished, kept")
            elif complete:
                trial = complete[0]
                print(
                    f"{run.save_dir}: already finished (trial {trial.number}, on {trial.user_attrs.get('host')}), kept"
                )
            else:
                continue
            done.add(cell)
        self.kept = len(done)
        return done

    def start(self, cell: str) -> None:
        trial_id = self.claim(cell)
        if trial_id is None:
            return
        run = self.cells[cell]
        number = self.storage.get_trial_number_from_id(trial_id)
        if run.save_dir.exists() and any(run.save_dir.iterdir()) and not finished(run.save_dir):
            # check() let through only a dead worker's attempt or a run that stopped before its first save.
            never_saved = safety.never_saved(run.save_dir)
            self.archive(run, number, "stopped before its first save" if never_saved else "lost its worker")
        run.save_dir.parent.mkdir(parents=True, exist_ok=True)
        process = start_process(run.command, run.log)
        self.active.append(_Active(run, cell, trial_id, number, process))
        self.beat(self.active[-1])
        self.started += 1
        print(f"started  {run.save_dir}  (log: {run.log})", flush=True)

    def archive(self, run: GridRun, number: int, why: str = "lost its worker") -> None:
        """Move an earlier attempt's folder and log under ``OUT_DIR/.retried/`` (never deleted)."""
        target = self.out_dir / RETRIED_DIR / f"{cell_name(run, self.out_dir)}.before-trial{number}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run.save_dir), str(target))
        if run.log.exists():
            shutil.move(str(run.log), str(target.with_name(target.name + ".log")))
        print(f"{run.save_dir}: an earlier attempt {why}; its folder moved to {target}", flush=True)

    def reap(self) -> None:
        """Tell the outcome of the training processes that ended; beat for the others."""
        for entry in list(self.active):
            returncode = entry.process.poll()
            if returncode is None:
                if time.monotonic() - entry.last_beat >= self.heartbeat_interval and not self.beat(entry):
                    # Another worker retries the cell: this attempt must stop, and without the save a run makes on
                    # SIGTERM, which would land in the folder that is now the other attempt's.
                    entry.process.kill()
                    entry.process.wait()
                    self.active.remove(entry)
                    print(f"{entry.run.save_dir}: taken over by another worker (no heartbeat came through)")
                continue
            self.active.remove(entry)
            seconds = time.monotonic() - entry.started
            if returncode == 0 and finished(entry.run.save_dir):
                self.finish_trial(entry.trial_id, TrialState.COMPLETE, run_value(entry.run.save_dir), 0)
                print(f"finished {entry.run.save_dir}  ({seconds:.0f} s)", flush=True)
            else:
                self.finish_trial(entry.trial_id, TrialState.FAIL, exit_status=returncode)
                self.failed += 1
                print(
                    f"FAILED (exit {returncode}, see {entry.run.log}) {entry.run.save_dir}  ({seconds:.0f} s)",
                    flush=True,
                )

    def retire_stale(self, trials: dict[str, list[FrozenTrial]]) -> None:
        """Fail other workers' running trials whose heartbeat stopped, so that their cells are free again."""
        mine = {entry.number for entry in self.active}
        for cell, group in trials.items():
            holder = owner(group, self.ignored)
            if holder is None or holder.state != TrialState.RUNNING or holder.number in mine:
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, holder.number)
            if self.stale(holder) and self.finish_trial(trial_id, TrialState.FAIL):
                print(
                    f"{self.cells[cell].save_dir}: trial {holder.number} (on {holder.user_attrs.get('host')}) sent no "
                    f"heartbeat for {self.grace_period:g} s; its cell is retried",
                    flush=True,
                )

    def run(self) -> int:
        """Work until every cell is done; exit status 0 if all finished, 1 if some failed, 130 on Ctrl-C (after
        the runs going have saved)."""
        done = self.keep_finished(self.trials_by_cell())
        waiting = False  # said so once
        try:
            while True:
                self.reap()
                trials = self.trials_by_cell()
                self.retire_stale(trials)
                trials = self.trials_by_cell()
                holders = {cell: owner(group, self.ignored) for cell, group in trials.items()}
                free = [cell for cell in self.cells if cell not in done and holders[cell] is None]
                for cell in free[: self.jobs - len(self.active)]:
                    self.start(cell)
                elsewhere = [c for c, h in holders.items() if h is not None and h.state == TrialState.RUNNING]
                if not self.active and all(cell in done or holders[cell] is not None for cell in self.cells):
                    if not elsewhere:
                        break
                    if not waiting:
                        print(
                            f"waiting for {len(elsewhere)} run(s) of other workers ({', '.join(elsewhere)}); each is "
                            f"retried here if its heartbeat stops for {self.grace_period:g} s",
                            flush=True,
                        )
                    waiting = True
                time.sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            # Ctrl-C reached the runs too (same process group): each saves its model; wait for them to finish.
            for entry in self.active:
                entry.process.wait()
                self.finish_trial(entry.trial_id, TrialState.FAIL, exit_status=130)
            stopped = " ".join(f"python -m train.{e.run.algo} --resume {e.run.save_dir};" for e in self.active)
            print(
                f"interrupted; resume the runs that were going ({stopped or 'none'}), then run this command again "
                "for the rest",
                file=sys.stderr,
            )
            return 130
        return self.summary()

    def summary(self) -> int:
        holders = {cell: owner(group, self.ignored) for cell, group in self.trials_by_cell().items()}
        failed = [cell for cell, h in holders.items() if h is not None and h.state == TrialState.FAIL]
        elsewhere = len(self.cells) - self.kept - self.started
        line = f"{self.started - self.failed} of {self.started} runs finished; {self.kept} kept from before"
        if elsewhere > 0:
            line += f"; {elsewhere} run by other workers"
        if len(failed) > self.failed:
            line += f"; {len(failed) - self.failed} failed on other workers ({', '.join(failed)})"
        print(line)
        return 1 if failed else 0
