"""Shared folders, untrusted files and broken environments (issue 23): one writer per run folder, no code run on
load, no hang, and every fault one line with the state saved where there is one."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch as th

from tests.train.faulty_env import FaultAt
from train import a2c, cli, evaluate, runs

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


def test_an_interrupt_while_torch_writes_a_file_is_still_that_interrupt() -> None:
    """A SIGTERM that arrives while torch.save writes a checkpoint comes out of its zip writer as a RuntimeError (the
    interrupt its context): the run must stop as for the signal (143, saved), not with a traceback and status 1, as it
    once did in CI."""

    class InterruptedFile(io.BytesIO):
        def write(self, data: bytes) -> int:
            if self.tell() > 1000:
                raise cli.Terminated()
            return super().write(data)

    with pytest.raises(RuntimeError) as raised:
        th.save({"weights": th.zeros(10_000)}, InterruptedFile())
    assert isinstance(cli.interruption(raised.value), cli.Terminated)
    assert cli.interruption(RuntimeError("not an interrupt")) is None
    assert cli.interruption(ValueError("nor this")) is None


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


class Payload:
    """What a hostile file carries: unpickling it runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def plant_in_model(model: Path, marker: Path, key: str = "learning_rate") -> None:
    """Replace the pickled ``key`` of a model file's data with :class:`Payload`."""
    with zipfile.ZipFile(model) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    data[key] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(Payload(marker))).decode()}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(model, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def test_no_code_runs_when_a_run_is_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Payloads in model.zip, in a checkpoint and in the VecNormalize statistics never run: a model is loaded with
    its config standing in for every pickled item; statistics are read by a safe unpickler, and a foreign one is
    refused in one line; a file only --trust-pickle could load says so."""
    run, marker = tmp_path / "run", tmp_path / "ran"
    assert a2c.main([*tiny(run, 120), "--checkpoint-freq", "60", "--hparams", "normalize=true"]) == 0
    plant_in_model(run / "model.zip", marker)
    plant_in_model(run / "checkpoints" / "model_60_steps.zip", marker, "observation_space")
    assert evaluate.main([str(run), "--episodes", "2"]) == 0  # the config stands in for the planted item
    assert a2c.main(["--resume", str(run), "--total-timesteps", "30", "--tensorboard-log", "none"]) == 0
    assert not marker.exists()

    (run / "model_vecnormalize.pkl").write_bytes(pickle.dumps(Payload(marker)))
    assert evaluate.main([str(run), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot load normalisation statistics" in err and "posix.system" in err and err.count("\n") == 1
    assert not marker.exists()

    bare = tmp_path / "bare.zip"  # a model without its run's config: nothing stands in for its policy class
    shutil.copy(run / "checkpoints" / "model_60_steps.zip", bare)
    argv = [str(bare), "--episodes", "2", "--algo", "a2c", "--env", CATCH]
    assert evaluate.main(argv) == 2
    assert "--trust-pickle" in capsys.readouterr().err and not marker.exists()
    assert evaluate.main([*argv, "--trust-pickle"]) == 2  # the user's call: the payload runs, then the load fails
    assert marker.exists()


FAULTY = "tests.train.faulty_env:Faulty-v0"


@pytest.mark.parametrize("fault", ["raise", "shape", "reward_none"])
def test_a_failing_env_stops_the_run_in_one_line_with_its_state_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """An env that raises, returns a wrongly shaped observation or a reward of None mid-rollout: one line that says
    which env failed, where and why; the model as it was is saved, and the run resumes once the env is fixed."""
    run = tmp_path / "run"
    argv = [*tiny(run, 400), "--env", FAULTY, "--hparams", f"env_kwargs={{fault: {fault}, at_step: 100}}"]
    assert a2c.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "env failed in step at timestep 200" in err, err
    assert f"saved {run / 'model.zip'}" in err and f"--resume {run}" in err, err
    assert runs.newest_steps(run) is not None and runs.newest_steps(run) <= 200
    monkeypatch.setattr(FaultAt, "broken", False)
    assert a2c.main(["--resume", str(run), "--tensorboard-log", "none"]) == 0 and runs.newest_steps(run) > 200


def test_an_episode_that_never_ends_is_reported_not_waited_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation waits for whole episodes: one that never ends is a one-line error (the model saved), not a hang."""
    from train import experiment

    monkeypatch.setattr(experiment, "EVAL_EPISODE_STEPS", 50)
    run = tmp_path / "run"
    argv = [*tiny(run, 400), "--env", "tests.train.faulty_env:Endless-v0", "--eval-freq", "40"]
    assert a2c.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ran 50 steps without ending" in err and "TimeLimit" in err, err
    assert (run / "model.zip").exists()


def test_a_full_disk_is_one_line_and_keeps_what_was_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No space left when the run saves: one line naming the file and the reason; the checkpoint saved before it
    is whole and the run continues from it."""
    import errno

    from fw_agents import atomic

    save = atomic.save_with_statistics

    def full(model: object, path: Path, *rest: object) -> None:  # the disk fills up after the checkpoint
        if path.name == runs.MODEL_NAME:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        save(model, path, *rest)

    run = tmp_path / "run"
    monkeypatch.setattr(atomic, "save_with_statistics", full)
    assert a2c.main([*tiny(run, 120), "--checkpoint-freq", "60"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {run / 'model.zip'}: No space left on device" in err, err
    assert "model_120_steps.zip" in err and f"--resume {run}" in err, err
    monkeypatch.undo()
    assert a2c.main(["--resume", str(run), "--total-timesteps", "60", "--tensorboard-log", "none"]) == 0
