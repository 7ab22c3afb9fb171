"""Grids of training runs on Optuna's own queue, shared by every worker: ``train.compare run``, ``bench.suite run``.

A grid is a list of *cells*: one :class:`~train.spec.RunSpec` each, with its run folder. The grid's ledger is an
Optuna study: each cell is enqueued once (``enqueue_trial(skip_if_exists=True)``, param ``cell``); a worker takes a
WAITING trial by moving it to RUNNING (one storage write, which only one worker wins), trains the cell in its own
process (``python -m train.<algo> --spec CELL.yml``, forked from a server that imported torch once: see
:data:`PRELOAD`) and tells the trial COMPLETE (value: the run's final mean return) or FAIL with the process's exit
status. Every worker started with the same command and storage works through the same queue, so each cell is
trained once; it returns when the queue holds nothing for its cells.

A worker that dies leaves its trial RUNNING. On a database storage, Optuna's heartbeat finds it: each worker records
heartbeats of its trials (``RDBStorage(heartbeat_interval=...)``), fails the stale ones of others
(``fail_stale_trials``) and Optuna's ``RetryHeartbeatStaleTrialCallback`` enqueues the cell again. A journal file has
no heartbeat in Optuna 5: there a worker fails the RUNNING trials of dead processes on its own machine (host and pid
are trial attributes), and re-enqueues their cells. Either way the retry *resumes* the cell from its newest saved
state (``--resume``), so a kill loses at most one checkpoint interval; a run that stopped before its first save is
trained anew (its leftovers archived by the run). Ctrl-C or SIGTERM to a worker reaches its training processes,
which save; a rerun of the command resumes them.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import multiprocessing.util  # before the atexit hook below (hooks run last in, first out)
import os
import random
import signal
import socket
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from fw_agents.registry import load_plugins
from train import runs
from train.cli import (
    ArgumentParser,
    CLIError,
    build_train_parser,
    load_yaml,
    positive_float,
    positive_int,
    signals,
    spec_from_args,
    terminate,
)
from train.spec import RunSpec

#: The embedded storage in the grid's output folder: Optuna's journal file (several processes on one machine, or a
#: shared disk, NFSv3 or later).
DEFAULT_STORAGE_NAME = "optuna-journal.log"
JOURNAL_SUFFIXES = (".log", ".journal")
#: Database storages: seconds between a worker's heartbeats, and without one before a cell is retried.
HEARTBEAT_INTERVAL, GRACE_PERIOD = 10.0, 60.0
POLL_INTERVAL = 0.5
#: Where each cell's spec file goes, under the grid's output folder (hidden: run readers skip it); its log is beside
#: its run folder (``OUT_DIR/<cell>.log``).
CELLS_DIR = ".cells"
# Trial user attributes.
CELL, SPEC, HOST, PID, EXIT_STATUS = "cell", "spec", "host", "pid", "exit_status"
STORAGE_ATTEMPTS = 8  # opening a new database: tries while other workers create it
STUDY_KIND = "kind"  # the study's user attribute: "grid" or "tune"


# ----------------------------------------------------------------------------------------------- storages
def add_storage_arguments(parser, default_study: str) -> None:  # noqa: ANN001  (a parser or an argument group)
    """``--storage`` and ``--study-name``, rl-zoo3's names."""
    parser.add_argument("--storage", metavar="URL", help="Optuna storage shared by every worker: a database URL "
                        "(sqlite:///study.db, postgresql://user:pw@host/db, mysql+pymysql://...) or a journal file "
                        f"(*.log) on a shared disk (default: OUT_DIR/{DEFAULT_STORAGE_NAME})")
    parser.add_argument("--study-name", metavar="NAME", help=f"the study in that storage (default: {default_study})")


def add_grid_arguments(parser, default_study: str) -> None:  # noqa: ANN001
    """The storage arguments, ``--jobs`` and the heartbeat's timing (``RDBStorage``'s names; database storages)."""
    add_storage_arguments(parser, default_study)
    add = parser.add_argument
    add("--jobs", type=positive_int, default=1, metavar="N", help="runs at a time (default: 1)")
    add("--heartbeat-interval", type=positive_float, default=HEARTBEAT_INTERVAL, metavar="S",
        help=f"database storages: seconds between heartbeats (default: {HEARTBEAT_INTERVAL:g})")
    add("--grace-period", type=positive_float, default=GRACE_PERIOD, metavar="S",
        help=f"database storages: seconds without a heartbeat before a cell is retried (default: {GRACE_PERIOD:g})")


def open_storage(url: str | None, default_path: Path, **rdb_kwargs: object) -> BaseStorage:
    """The storage ``--storage`` names: a journal file (``None``: ``default_path``; a path ending in ``.log``), or a
    database URL opened as :class:`~optuna.storages.RDBStorage` with ``rdb_kwargs``; a :class:`CLIError` if it
    cannot be opened, before any work."""
    if url is None or ("://" not in url and url.endswith(JOURNAL_SUFFIXES)):
        path = default_path if url is None else Path(url)
        if url is not None and not path.parent.is_dir():
            raise CLIError(f"--storage: folder {str(path.parent)!r} of the journal file does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            storage = JournalStorage(JournalFileBackend(str(path)))
            storage.get_all_studies()  # replays the journal now: a damaged one is said here, before any work
        except OSError as error:
            raise CLIError(f"--storage: cannot open journal file {path}: {error.strerror or error}") from None
        except ValueError as error:  # a line that is not JSON (a truncated last line is Optuna's to skip)
            raise CLIError(f"--storage: journal file {path} is damaged ({error}); move it aside to start the study "
                           "anew (finished runs are kept, cells with checkpoints continue)") from None  # fmt: skip
        return storage
    if "://" not in url:
        raise CLIError(f"--storage takes a database URL (sqlite:///study.db, postgresql://user:pw@host/db, "
                       f"mysql+pymysql://user:pw@host/db) or a journal file ending in "
                       f"{' or '.join(JOURNAL_SUFFIXES)}; got {url!r}")
    import sqlalchemy.exc

    try:
        for attempt in range(STORAGE_ATTEMPTS):
            try:
                with warnings.catch_warnings():  # Optuna marks its heartbeat's arguments experimental
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(url, **rdb_kwargs)
            # Workers started together on a new database race to create its tables and stamp its schema version
            # (SQLite: "UNIQUE constraint failed: alembic_version", "database is locked"; PostgreSQL: 'type
            # "studydirection" already exists', a ProgrammingError): the loser tries again.
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                    sqlalchemy.exc.ProgrammingError) as error:  # fmt: skip
                lost_race = not isinstance(error, sqlalchemy.exc.ProgrammingError) or "already exists" in str(error)
                if attempt == STORAGE_ATTEMPTS - 1 or not lost_race:
                    raise
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    except ImportError as error:  # the database's driver
        raise CLIError(f"--storage {url}: its database driver is not installed ({error}); PostgreSQL needs "
                       "psycopg (pip install 'psycopg[binary]'; before SQLAlchemy 2.1: psycopg2-binary), MySQL PyMySQL "
                       "(URL mysql+pymysql://...)") from None
    except (ValueError, RuntimeError, sqlalchemy.exc.SQLAlchemyError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CLIError(f"--storage: cannot open {url}: {message}") from None


def load_study(
    storage: BaseStorage, name: str, kind: str, direction: str = "maximize", **kwargs: object
) -> optuna.Study:
    """The study ``name`` in ``storage``, created if it does not exist (by whichever worker comes first), for ``kind``
    of work (``"grid"``: train.compare and bench.suite, ``"tune"``: train.tune); a study of the other kind is a
    :class:`CLIError` (their trials mean different things)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happens
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, load_if_exists=True, **kwargs
        )
    except ValueError as error:
        raise CLIError(f"--study-name {name}: {error}") from None
    recorded = study.user_attrs.get(STUDY_KIND)
    if recorded is None and any((CELL in t.user_attrs) != (kind == "grid") for t in study.get_trials(deepcopy=False)):
        recorded = "tune" if kind == "grid" else "grid"  # a study from before the kind was recorded
    if recorded not in (None, kind):
        made_by = {"grid": "train.compare or bench.suite", "tune": "train.tune"}[recorded]
        raise CLIError(f"study {name!r} in that storage is {made_by}'s, not a {kind} study; use another --study-name")
    if recorded is None:
        study.set_user_attr(STUDY_KIND, kind)
    return study


def _retry() -> RetryHeartbeatStaleTrialCallback:
    """Optuna's: a stale trial's cell is enqueued again (made quietly: Optuna marks it experimental)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback()


#: Training processes are forked from a server that imported these once (multiprocessing's ``forkserver``): torch,
#: SB3 and ``torch._dynamo`` (which torch's optimizers import on first use) take ~3 s to import, paid once per
#: worker instead of once per cell. The server reads the code as it was when the worker started.
PRELOAD = ["torch._dynamo", "train.experiment", "envs"]
if "forkserver" in multiprocessing.get_all_start_methods():
    _CONTEXT = multiprocessing.get_context("forkserver")
    _CONTEXT.set_forkserver_preload(PRELOAD)
else:  # (Windows)
    _CONTEXT = multiprocessing.get_context("spawn")


def _stop_with_worker() -> None:
    """SIGTERM to this training process when the worker that started it dies, even by SIGKILL: the run saves, and
    no orphan trains a cell that another worker retries."""
    multiprocessing.parent_process().join()  # (its sentinel: a pipe that closes with the worker)
    os.kill(os.getpid(), signal.SIGTERM)


def _train(algo: str, argv: list[str], log: Path, path: list[str], environ: dict[str, str]) -> None:
    """The training process: ``python -m train.<algo> ARGV`` with its output in ``log``, in a session of its own."""
    if hasattr(os, "setsid"):
        os.setsid()  # a Ctrl-C at the terminal reaches the worker only, which forwards it and waits for the save
    threading.Thread(target=_stop_with_worker, daemon=True).start()
    with log.open("w") as out:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            os.dup2(out.fileno(), stream.fileno())
    # The worker's import path and environment as they are now (the server's are from when it started), and the
    # memories of packages installed since.
    sys.path[:] = path
    os.environ.clear()
    os.environ.update(environ)
    importlib.invalidate_caches()
    load_plugins()
    sys.exit(importlib.import_module(f"train.{algo}").main(argv))


class TrainingProcess:
    """``python -m train.<algo> ARGV`` running for a grid or a tuning trial, with its output in ``log``; polled and
    signalled like a :class:`subprocess.Popen` (``returncode``: the exit status, ``-N`` if killed by signal N).

    As with SB3's ``SubprocVecEnv``, a script that starts one (a grid, a tuning run) from Python needs multiprocessing's
    ``if __name__ == "__main__":`` guard: the training process imports the script's main module."""

    def __init__(self, algo: str, argv: Sequence[str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        args = (algo, list(argv), log, sys.path, dict(os.environ))
        self._process = _CONTEXT.Process(target=_train, args=args, name=f"train.{algo}")
        self._process.start()
        _STARTED.add(self._process)  # (held by multiprocessing while it runs)

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status once the process ends (None if it still runs after ``timeout`` seconds)."""
        self._process.join(timeout)
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self._process.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


_STARTED: weakref.WeakSet[multiprocessing.process.BaseProcess] = weakref.WeakSet()


@atexit.register
def _stop_training() -> None:
    """A worker exiting with training processes still running (an error): they get SIGTERM and save, and
    multiprocessing waits for them before the worker exits."""
    for process in list(_STARTED):
        process.terminate()  # (nothing if it ended)


# ----------------------------------------------------------------------------------------------- cells
class _RaisingParser(ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"after --: {message}")


def base_spec(algo: str, train_args: Sequence[str], owned: dict[str, str], out_dir: Path, **fields: object) -> RunSpec:
    """The spec a grid's cells start from (checked once): the training command line's options given after ``--``,
    read by that command line's own parser, with the grid's ``fields`` (env, policy, budget, ...); an option the
    grid sets for each cell (``owned``: field -> the grid command's option for it) is refused there."""
    args = _RaisingParser(parents=[build_train_parser(algo)], add_help=False).parse_args(list(train_args))
    for name, instead in owned.items():
        if getattr(args, name, None) is not None:
            flag = f"--{name.replace('_', '-')}"
            raise CLIError(f"{flag} after --: {flag} is set for each run by this command; use its {instead} instead")
    for name, value in fields.items():
        setattr(args, name, value)
    # A folder that does not exist, so that the check of a new run's folder passes; each cell's is its own.
    args.save_dir = str(out_dir / CELLS_DIR / "checked")
    return spec_from_args(args, algo, []).model_copy(update={"command": None, "progress_bar": False})


@dataclass
class Cell:
    """One run of a grid: its name (its folder relative to the grid's output folder) and its spec."""

    name: str
    spec: RunSpec

    @property
    def save_dir(self) -> Path:
        return self.spec.save_dir

    @property
    def key(self) -> str:
        """The settings, without the paths, which may differ between machines: two grids with one name must agree."""
        record = self.spec.record()
        return json.dumps({k: v for k, v in record.items() if k not in ("save_dir", "tensorboard_log", "command")},
                          sort_keys=True)


def finished(save_dir: Path) -> bool:
    """Whether a run folder holds a finished run (its config has a final result)."""
    config_path = save_dir / runs.CONFIG_NAME
    return config_path.is_file() and "result" in load_yaml(config_path, "run config")


def run_value(save_dir: Path) -> float:
    """A finished run's score for its trial: the final deterministic mean return, else the last periodic evaluation's
    mean, else -inf (the run measured nothing)."""
    result = load_yaml(save_dir / runs.CONFIG_NAME, "run config").get("result") or {}
    final = (result.get("final_eval_deterministic") or {}).get("mean_return")
    if final is not None:
        return float(final)
    arrays = runs.read_evaluations(save_dir / runs.EVALUATIONS_NAME)
    return float(arrays["results"][-1].mean()) if arrays is not None and len(arrays["results"]) else -float("inf")


def _resumable(folder: Path) -> bool:
    """Whether ``folder`` holds an unfinished run with a saved state to continue from."""
    return (folder / runs.CONFIG_NAME).is_file() and not runs.never_saved(folder) and not finished(folder)


@dataclass
class _Active:
    cell: Cell
    trial_id: int
    process: TrainingProcess
    started: float = field(default_factory=time.monotonic)
    last_beat: float = 0.0


class GridWorker:
    """One worker of a grid study: takes cells from the study's queue, ``jobs`` at a time (module docstring)."""

    def __init__(self, cells: Sequence[Cell], out_dir: Path, args: argparse.Namespace, default_study: str) -> None:
        if args.grace_period <= args.heartbeat_interval:
            raise CLIError(f"--grace-period ({args.grace_period:g} s) must be longer than --heartbeat-interval "
                           f"({args.heartbeat_interval:g} s)")
        self.cells = {cell.name: cell for cell in cells}
        self.out_dir, self.jobs, self.heartbeat_interval = out_dir, args.jobs, args.heartbeat_interval
        retry = _retry()
        self.storage = open_storage(args.storage, out_dir / DEFAULT_STORAGE_NAME, heartbeat_stale_trial_callback=retry,
                                    heartbeat_interval=int(max(1, self.heartbeat_interval)),
                                    grace_period=int(max(2, args.grace_period)))
        self.study = load_study(self.storage, args.study_name or default_study, "grid")
        self.host, self.active, self.counts = socket.gethostname(), [], {"started": 0, "failed": 0, "kept": 0}
        for cell in cells:  # before any work: a folder that is not a run of ours is never written into
            folder = cell.save_dir
            held = [p for p in folder.iterdir() if p.name != runs.LOCK_NAME] if folder.is_dir() else [folder]
            if folder.exists() and held and not (folder / runs.CONFIG_NAME).is_file():
                raise CLIError(f"{folder} holds files but no run ({runs.CONFIG_NAME}); move them away")
        for trial in self.study.get_trials(deepcopy=False):
            cell = self.cells.get(trial.user_attrs.get(CELL))
            if cell is not None and trial.user_attrs.get(SPEC) != cell.key:
                raise CLIError(f"study {self.study.study_name!r} already has cell {cell.name} with other settings; "
                               "use another --study-name or --out-dir")

    def _trials(self, *states: TrialState) -> list[FrozenTrial]:
        trials = self.study.get_trials(deepcopy=False, states=states or None)
        return [t for t in trials if t.user_attrs.get(CELL) in self.cells]

    def _tell(self, trial_id: int, state: TrialState, value: float | None = None, exit_status: int | None = None):
        try:
            if exit_status is not None:
                self.storage.set_trial_user_attr(trial_id, EXIT_STATUS, exit_status)
            self.storage.set_trial_state_values(trial_id, state, None if value is None else [value])
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass  # another worker took this attempt for dead and finished it

    def enqueue(self) -> None:
        """Each cell not done into the queue once: a finished run in its folder is recorded COMPLETE instead (kept)."""
        trials = self._trials()
        complete = {t.user_attrs[CELL] for t in trials if t.state == TrialState.COMPLETE}
        pending = {t.user_attrs[CELL] for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
        for name, cell in self.cells.items():
            if finished(cell.save_dir) or name in complete:
                if name not in complete:
                    self.study.add_trial(optuna.trial.create_trial(
                        state=TrialState.COMPLETE, value=run_value(cell.save_dir), params={CELL: name},
                        distributions={CELL: optuna.distributions.CategoricalDistribution([name])},
                        user_attrs={CELL: name, SPEC: cell.key, "kept": True}))  # fmt: skip
                print(f"{cell.save_dir}: already finished, kept")
                self.counts["kept"] += 1
            elif name not in pending:  # (a cell that failed before is queued again: skip_if_exists would skip it)
                tried = any(t.user_attrs[CELL] == name for t in trials)
                attrs = {CELL: name, SPEC: cell.key}
                self.study.enqueue_trial({CELL: name}, user_attrs=attrs, skip_if_exists=not tried)

    def retry_dead(self) -> None:
        """Fail the RUNNING trials whose worker died (database storages: Optuna's heartbeat, which re-enqueues them;
        a journal file: dead processes of this machine, re-enqueued here)."""
        if isinstance(self.storage, RDBStorage):
            with warnings.catch_warnings():  # Optuna marks it experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            return
        mine = {entry.trial_id for entry in self.active}
        for trial in self._trials(TrialState.RUNNING):
            attrs = trial.user_attrs
            if trial._trial_id in mine or attrs.get(HOST) != self.host or runs.process_alive(int(attrs.get(PID, 0))):
                continue
            self._tell(trial._trial_id, TrialState.FAIL)
            self.study.enqueue_trial({CELL: attrs[CELL]}, user_attrs={CELL: attrs[CELL], SPEC: attrs[SPEC]})
            print(f"{self.cells[attrs[CELL]].save_dir}: its worker (pid {attrs.get(PID)}) died; the cell is retried")

    def take(self) -> FrozenTrial | None:
        """A WAITING trial of our cells, now RUNNING for this worker (Optuna's own pop: one state write wins).

        Two workers enqueueing at once can queue a cell twice. Of a cell's trials not failed, the first queued is
        the one that runs: read after our state write, so that of two workers taking two copies at once, the one
        holding the later copy sees the earlier one (whatever its state) and fails its own."""
        for trial in self._trials(TrialState.WAITING):
            try:
                if not self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            cell = trial.user_attrs[CELL]
            live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
            if min(t._trial_id for t in self._trials(*live) if t.user_attrs[CELL] == cell) != trial._trial_id:
                self._tell(trial._trial_id, TrialState.FAIL)
                continue
            for key, value in ((HOST, self.host), (PID, os.getpid())):
                self.storage.set_trial_user_attr(trial._trial_id, key, value)
            return trial
        return None

    def start(self, trial: FrozenTrial) -> None:
        """Train the trial's cell: resumed from its newest saved state if an earlier attempt left one, else anew."""
        cell = self.cells[trial.user_attrs[CELL]]
        algo, folder = cell.spec.algo, cell.save_dir
        if _resumable(folder):
            # The steps left of the cell's budget (--total-timesteps counts the steps to add when resuming).
            saved = runs.model_steps(runs.resume_target(folder, archive_newer=False).model_path) or 0
            left = str(max(cell.spec.n_timesteps - saved, 1))
            argv = ["--resume", str(folder), "--total-timesteps", left]
            print(f"{folder}: an earlier attempt stopped at step {saved}; resuming it", flush=True)
        else:
            if folder.is_dir() and runs.never_saved(folder):
                print(f"{folder}: an earlier attempt stopped before its first save; training it anew", flush=True)
            spec_file = self.out_dir / CELLS_DIR / f"{cell.name}.yml"
            spec_file.parent.mkdir(parents=True, exist_ok=True)
            spec_file.write_text(yaml.safe_dump(cell.spec.record(), sort_keys=False))
            argv = ["--spec", str(spec_file), "--no-progress-bar"]
        log = folder.with_suffix(".log")
        self.active.append(_Active(cell, trial._trial_id, TrainingProcess(algo, argv, log)))
        self.counts["started"] += 1
        print(f"started  {folder}  (log: {log})", flush=True)

    def reap(self, stopped: bool = False) -> None:
        """Tell the outcome of the training processes that ended; beat for the others (database storages).
        ``stopped``: this worker stopped them; a run that did not finish is told failed (to be retried, resuming its
        saved state) but not reported as a failure."""
        for entry in list(self.active):
            returncode = entry.process.poll()
            if returncode is None:
                beat_due = time.monotonic() - entry.last_beat >= self.heartbeat_interval
                if isinstance(self.storage, RDBStorage) and beat_due:
                    self.storage.record_heartbeat(entry.trial_id)
                    entry.last_beat = time.monotonic()
                continue
            self.active.remove(entry)
            seconds = time.monotonic() - entry.started
            if returncode == 0 and finished(entry.cell.save_dir):
                self._tell(entry.trial_id, TrialState.COMPLETE, run_value(entry.cell.save_dir), 0)
                print(f"finished {entry.cell.save_dir}  ({seconds:.0f} s)", flush=True)
            else:
                self._tell(entry.trial_id, TrialState.FAIL, exit_status=returncode)
                if stopped:
                    continue
                self.counts["failed"] += 1
                log = entry.cell.save_dir.with_suffix(".log")
                print(f"FAILED (exit {returncode}, see {log}) {entry.cell.save_dir}  ({seconds:.0f} s)", flush=True)

    def run(self) -> int:
        """Work until the queue holds nothing for this grid's cells; 0 if every cell finished, 1 if some failed,
        130 / 143 on Ctrl-C / SIGTERM (after the runs going have saved: a rerun resumes them)."""
        self.enqueue()
        try:
            with signals(terminate, signal.SIGTERM):
                while True:
                    self.reap()
                    self.retry_dead()
                    while len(self.active) < self.jobs and (trial := self.take()) is not None:
                        self.start(trial)
                    if not self.active and not self._trials(TrialState.WAITING, TrialState.RUNNING):
                        break
                    time.sleep(POLL_INTERVAL)
        except KeyboardInterrupt as interrupt:
            return self.stop(getattr(interrupt, "signum", signal.SIGINT))
        complete = {t.user_attrs[CELL] for t in self._trials(TrialState.COMPLETE)}
        failed = {t.user_attrs[CELL] for t in self._trials(TrialState.FAIL)} - complete
        started, lost, kept = self.counts["started"], self.counts["failed"], self.counts["kept"]
        line = f"{started - lost} of {started} runs finished; {kept} kept from before"
        print(line + (f"; failed: {', '.join(sorted(failed))}" if failed else ""))
        return 1 if failed else 0

    def stop(self, signum: int) -> int:
        """Ctrl-C or SIGTERM to this worker: its runs get the signal (each saves, as for its own Ctrl-C) and are
        told failed, to be resumed by a rerun; one that ended before keeps its outcome. Returns ``128 + signum``."""
        self.reap()  # a run that finished just before the signal is told complete, not failed
        for entry in self.active:
            entry.process.send_signal(signum)
        stopping = len(self.active)
        for entry in self.active:
            entry.process.wait()
        self.reap(stopped=True)
        print(f"interrupted; {stopping} run(s) saved; run this command again to resume them and the rest",
              file=sys.stderr)  # fmt: skip
        return 128 + signum
