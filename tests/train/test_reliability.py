"""Shared folders, untrusted files and broken environments (issue 23): one writer per run folder, no code run on
load, no hang, and every fault one line with the state saved where there is one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train import a2c, runs

ROOT = Path(__file__).resolve().parents[2]
CATCH = "fw_agents/Catch-N16-M3-v0"


def tiny(save_dir: Path, steps: int = 60, *extra: str) -> list[str]:
    return ["--env", CATCH, "--n-envs", "2", "--total-timesteps", str(steps), "--hidden-size", "4", "--eval-freq", "0",
            "--final-eval-episodes", "0", "--checkpoint-freq", "0", "--verbose", "0", "--tensorboard-log", "none",
            "--no-progress-bar", "--save-dir", str(save_dir), *extra]  # fmt: skip


def start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "train.a2c", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)


def test_one_writer_per_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second run on a folder a run holds is refused in one line, new or resumed, and writes nothing there."""
    run = tmp_path / "run"
    first = start([*tiny(run, 200_000), "--checkpoint-freq", "60"])
    wait_for(run / "checkpoints" / "model_60_steps.zip", first)
    before = sorted(p.name for p in run.iterdir())
    assert a2c.main(["--resume", str(run)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"{run} is in use by another run (pid {first.pid}" in err, err
    assert sorted(p.name for p in run.iterdir()) == before
    first.terminate()  # it saves and says how to continue
    assert first.wait(timeout=60) == 143
    # The lock went with it: the run can be resumed now, by one process.
    assert a2c.main(["--resume", str(run), "--total-timesteps", "30", "--tensorboard-log", "none"]) == 0
    assert runs.LOCK_NAME not in {p.name for p in runs.find_runs([tmp_path])}


def test_two_runs_started_together_on_one_new_folder(tmp_path: Path) -> None:
    """Both pass their checks on the empty folder; the lock lets one train, the other is refused in one line."""
    run = tmp_path / "run"
    processes = [start(tiny(run, 600)) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in processes)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    err = outcomes[1][1]
    assert err.count("\n") == 1 and ("is in use by another run" in err or "is not empty" in err), err
    assert runs.newest_steps(run) == 600
