"""Grids through an Optuna study (:mod:`train.study`): workers in separate processes share one storage, each cell
is trained once, a dead worker's cell is retried, an interrupted grid resumes; bad storages are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from train import compare, runs, study

CATCH = "fw_agents/Catch-N16-M3-v0"
#: A run of a few seconds: evaluations at steps 60 and 120.
TINY = [
    "--n-envs", "2", "--total-timesteps", "120", "--hidden-size", "8", "--eval-episodes", "2",
    "--final-eval-episodes", "2", "--eval-freq", "60", "--checkpoint-freq", "0", "--verbose", "0",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


def grid_command(out_dir: Path, policies: tuple[str, ...] = ("fast-weights", "mlp")) -> list[str]:
    """``train.compare run`` of ``policies`` x seeds 0 and 1, with a heartbeat that goes stale in seconds."""
    return [
        sys.executable, "-m", "train.compare", "run", "--env", CATCH, "--policies", *policies, "--seeds", "0", "1",
        "--out-dir", str(out_dir), "--heartbeat-interval", "0.5", "--grace-period", "4", "--", *TINY,
    ]  # fmt: skip


def start(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def cell_trials(out_dir: Path, name: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = study.open_storage(None, out_dir / study.DEFAULT_STORAGE_NAME)
    found: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in optuna.load_study(study_name=name, storage=storage).get_trials():
        found.setdefault(trial.user_attrs[study.CELL], []).append(trial)
    return found


def test_two_workers_share_one_storage_and_train_each_cell_once(tmp_path: Path) -> None:
    workers = [start(grid_command(tmp_path)) for _ in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert sum(output.count("started ") for output in outputs) == 4  # each cell once, by one worker or the other
    trials = cell_trials(tmp_path, f"compare-{tmp_path.name}")
    assert sorted(trials) == ["fast-weights-s0", "fast-weights-s1", "mlp-s0", "mlp-s1"]
    for cell, group in trials.items():
        trained = [t for t in group if t.state == TrialState.COMPLETE]
        assert len(trained) == 1 and not trained[0].user_attrs[study.KEPT], cell
        assert (tmp_path / cell / "model.zip").is_file()
        # Any other trial of the cell is a duplicate claim that withdrew before training (no exit status).
        assert all(study.EXIT_STATUS not in t.user_attrs for t in group if t.state == TrialState.FAIL)


def test_a_killed_workers_cell_is_retried_and_the_grid_resumes(tmp_path: Path) -> None:
    first = start(grid_command(tmp_path, ("fast-weights",)))
    deadline = time.monotonic() + 120
    while not (tmp_path / "fast-weights-s0.log").exists():  # its first training process has started
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # no chance to tell the study anything; its training process dies with it
    first.wait()

    second = start(grid_command(tmp_path, ("fast-weights",)))
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    assert "sent no heartbeat" in output and "2 of 2 runs finished" in output
    group = cell_trials(tmp_path, f"compare-{tmp_path.name}")["fast-weights-s0"]
    assert [t.state for t in sorted(group, key=lambda t: t.number)] == [TrialState.FAIL, TrialState.COMPLETE]
    assert (tmp_path / "fast-weights-s0" / "model.zip").is_file()
    # Whatever the dead attempt left is kept under .retried, and the table does not read it.
    for kept in (tmp_path / study.RETRIED_DIR).glob("*"):
        assert kept.name.startswith("fast-weights-s0.before-trial")
    assert sorted(run.name for run in runs.find_runs([tmp_path])) == ["fast-weights-s0", "fast-weights-s1"]


def test_a_study_resumes_keeps_finished_cells_and_records_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--env", CATCH, "--policies", "mlp", "--seeds", "0", "--out-dir", str(tmp_path), "--", *TINY]
    assert compare.main(argv) == 0
    # Another worker (here: another study on the same folders) finds the finished run and records it as kept.
    capsys.readouterr()
    grown = ["run", "--env", CATCH, "--policies", "mlp", "--seeds", "0", "1", "--out-dir", str(tmp_path),
             "--study-name", "grown", "--", *TINY]  # fmt: skip
    assert compare.main(grown) == 0
    out = capsys.readouterr().out
    assert "mlp-s0: already finished, kept" in out and "1 of 1 runs finished; 1 kept from before" in out
    trials = cell_trials(tmp_path, "grown")
    assert trials["mlp-s0"][0].user_attrs[study.KEPT] and not trials["mlp-s1"][0].user_attrs[study.KEPT]

    # Other settings for a cell the study already holds are refused before any work.
    other = [*grown[: -len(TINY)], *TINY[:-1], "1"]
    assert compare.main(other) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_grid_on_a_database_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    argv = ["run", "--env", CATCH, "--policies", "mlp", "--seeds", "0", "--out-dir", str(tmp_path), "--storage", url,
            "--study-name", "db", "--", *TINY]  # fmt: skip
    assert compare.main(argv) == 0
    (trial,) = optuna.load_study(study_name="db", storage=url).trials
    assert trial.state == TrialState.COMPLETE and trial.user_attrs[study.CELL] == "mlp-s0"
    assert not (tmp_path / study.DEFAULT_STORAGE_NAME).exists()  # the database holds the study


def test_of_two_claims_on_one_cell_the_lower_trial_holds_it(tmp_path: Path) -> None:
    storage = study.open_storage(None, tmp_path / study.DEFAULT_STORAGE_NAME)
    grid = [study.GridRun(tmp_path / "a-s0", [sys.executable, "-m", "train.a2c", "--seed", "0"])]
    first, second = (study.GridWorker(grid, tmp_path, storage, "claims") for _ in range(2))
    held = first.claim("a-s0")
    assert held is not None and second.claim("a-s0") is None  # the second claim withdraws
    trials = sorted(cell_trials(tmp_path, "claims")["a-s0"], key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL]
    # Its heartbeat stops: after the grace period another worker fails the trial, freeing the cell.
    second.grace_period = 0.2
    second.retire_stale(second.trials_by_cell())  # first sight of the heartbeat
    time.sleep(0.3)
    second.retire_stale(second.trials_by_cell())
    assert study.owner(second.trials_by_cell()["a-s0"], set()) is None
    assert second.claim("a-s0") is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--storage", "nosuch.txt"], "--storage takes a database URL"),
        (["--storage", "nowhere/x.log"], "does not exist"),
        (["--storage", "sqlite:////no/such/folder/x.db"], "cannot open"),
        (["--storage", "postgresql://u:p@localhost:1/db"], "--storage"),
        (["--grace-period", "1", "--heartbeat-interval", "2"], "--grace-period"),
        (["--", "--seed", "7"], "--seed is set for each run"),
        (["--", "--se", "7"], "--seed is set for each run"),
        (["--", "--save-dir=elsewhere"], "--save-dir is set for each run"),
        (["--", "--policy", "lstm"], "--policies"),
    ],
)
def test_bad_storage_or_options_are_one_line_exit_2(
    tmp_path: Path, options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--env", CATCH, "--policies", "mlp", "--out-dir", str(tmp_path / "grid"), *options]
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not any((tmp_path / "grid").glob("mlp-s*"))  # nothing trained
