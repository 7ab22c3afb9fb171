"""Crash safety and non-finite values on the training command lines (issue 13).

Faults tried by the default run: a NaN reward (train.a2c) and an infinite observation (train.ppo) from an env;
kill -9 and SIGTERM at random moments of a real training process and of its resume; kill -9 before
the first save; a truncated and an empty ``evaluations.npz`` with a truncated ``model.zip``; a resume of an older
checkpoint, refused and then archived. The slow sweep adds 15 more kill -9 at random moments.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO

from fw_agents.a2c import RecurrentA2C
from tests.train.test_cli import CATCH, bad, run_config, tiny
from train import a2c, evaluate, ppo, runs
from train.cli import CLIError
from train.runs import ARCHIVE_PREFIX

REPO = Path(__file__).resolve().parents[2]
NONFINITE_ENV = "tests.train.nonfinite_env:NonFinite-v0"


def files(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` (relative path -> bytes), but the run's lock file."""
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != runs.LOCK_NAME}  # fmt: skip


def assert_all_load(run: Path, algo_class: type = RecurrentA2C) -> None:
    """Every model of the run loads with finite parameters; evaluations and config read; no temporary file left."""
    models = [run / "model.zip", *sorted((run / "checkpoints").glob("*.zip"))]
    models += [run / "best_model.zip"] if (run / "best_model.zip").exists() else []
    for path in models:
        model = algo_class.load(path, device="cpu")
        assert all(th.isfinite(p).all() for p in model.policy.parameters()), path
    with np.load(run / "evaluations.npz") as data:
        assert len(data["timesteps"]) == len(data["results"]) > 0
    assert run_config(run)["result"]["num_timesteps"] > 0
    assert not [path for path in run.rglob(".*.tmp-*")], "temporary files left behind"


# ----------------------------------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize(
    ("main", "where", "value", "hparams"),
    [(a2c.main, "reward", "nan", []), (ppo.main, "observation", "inf", ["n_steps=16", "batch_size=16", "n_epochs=1"])],
    ids=["a2c-nan-reward", "ppo-inf-observation"],
)
def test_nonfinite_value_from_the_env_stops_the_run(tmp_path, capsys, main, where, value, hparams) -> None:
    """Each env emits the value at its 40th step: timestep 80 with 2 envs, after the checkpoint of step 60. The
    run stops with one line naming it; nothing is saved after it, and the newest checkpoint is good."""
    env_kwargs = f"env_kwargs={{base: {CATCH}, where: {where}, at_step: 40, value: {value}}}"
    argv = [*tiny(tmp_path), "--env", NONFINITE_ENV, "--hparams", env_kwargs, *hparams]
    err = bad(main, argv, capsys, f"a non-finite {where} ({value}) from env 0 at timestep 80",
              "Training stopped at step", "the newest saved state is checkpoints/model_60_steps.zip (step 60)",
              f"--resume {tmp_path / 'run'}")  # fmt: skip
    assert "diverged" not in err
    run = tmp_path / "run"
    assert not (run / "model.zip").exists()
    assert sorted(path.name for path in (run / "checkpoints").glob("*.zip")) == ["model_60_steps.zip"]
    algo_class = RecurrentA2C if main is a2c.main else RecurrentPPO
    checkpoint = algo_class.load(run / "checkpoints" / "model_60_steps.zip", device="cpu")
    assert all(th.isfinite(p).all() for p in checkpoint.policy.parameters())
    assert "result" not in run_config(run)  # no final evaluation
    assert evaluate.main([str(run / "checkpoints" / "model_60_steps.zip"), "--episodes", "1"]) == 0
    # A NaN model.zip, as earlier versions saved one: neither evaluated nor resumed.
    with th.no_grad():
        next(checkpoint.policy.parameters())[0] = float("nan")
    checkpoint.save(run / "model.zip")
    bad(evaluate.main, [str(run), "--episodes", "1"], capsys, "holds non-finite parameters", "earlier checkpoint")
    bad(main, ["--resume", str(run / "model.zip")], capsys, "holds non-finite parameters")


# ----------------------------------------------------------------------------------------------- kills
def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "train.a2c", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def wait_for_training(process: subprocess.Popen, config: Path, after_ns: int) -> None:
    """Until the run's config.yml is (re)written, which the run does as training starts."""
    deadline = time.monotonic() + 120
    while not (config.exists() and config.stat().st_mtime_ns > after_ns):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)


def kill_and_resume(tmp_path: Path, faults: list[signal.Signals], max_delay: float, seed: int) -> int:
    """Train for long, stop the process with each of ``faults`` in turn at a random moment of its training,
    resuming after each; then resume once more to the end. Returns how many faults hit."""
    rng = random.Random(seed)
    run = tmp_path / "run"
    first = [*tiny(tmp_path, "run", 100_000), "--checkpoint-freq", "20", "--eval-freq", "40"]
    resume = ["--resume", str(run), "--no-progress-bar", "--verbose", "0", "--log-interval", "1",
              "--checkpoint-freq", "20", "--eval-freq", "40", "--final-eval-episodes", "2"]  # fmt: skip
    argv, resumed_from = first, 0
    for n, fault in enumerate(faults):
        mtime = (run / "config.yml").stat().st_mtime_ns if (run / "config.yml").exists() else 0
        process = start(argv, tmp_path)
        wait_for_training(process, run / "config.yml", mtime)
        delay = rng.uniform(0, max_delay)
        time.sleep(delay)
        process.send_signal(fault)
        out, err = process.communicate(timeout=120)
        where = f"fault {n} ({fault.name} after {delay:.2f} s, seed {seed})"
        if fault == signal.SIGTERM:
            assert process.returncode == 128 + signal.SIGTERM, (where, err)
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (where, err)
            step = int(re.search(r"terminated \(SIGTERM\) at step (\d+); saved", err)[1])
            assert RecurrentA2C.load(run / "model.zip", device="cpu").num_timesteps == step, where
        else:
            assert process.returncode == -fault, (where, out, err)
        # What --resume will continue from is at least as far as the last resume.
        argv = [*resume, "--total-timesteps", "100000"]
        said = what_resume_continues_from(run)
        if "nothing to resume" in said:  # killed before the first save: run again, as the error says
            assert resumed_from == 0, (where, said)
            argv = first
            continue
        step = int(re.search(r"\(step (\d+)\)", said)[1])
        assert step >= resumed_from, (where, said, resumed_from)
        resumed_from = step

    # The last resume runs to its end, in this process (no second start-up).
    if argv is first:  # the last fault came before the first save
        assert a2c.main(tiny(tmp_path, "run", 40)) == 0
    else:
        assert a2c.main([*resume, "--total-timesteps", "40"]) == 0
    assert_all_load(run)
    return len(faults)


def what_resume_continues_from(run: Path) -> str:
    """What ``--resume RUN`` says it continues from (or its error), without training: its checks alone."""
    try:
        return runs.resume_target(str(run), archive_newer=False).message
    except CLIError as error:
        return str(error)


def test_kill_9_and_sigterm_at_random_moments_then_resume(tmp_path: Path) -> None:
    assert kill_and_resume(tmp_path, [signal.SIGKILL, signal.SIGTERM], 1.5, seed=13) == 2


@pytest.mark.slow
def test_kill_9_sweep(tmp_path: Path) -> None:
    assert kill_and_resume(tmp_path, [signal.SIGKILL] * 15, 3.0, seed=int(time.time())) == 15


def test_run_killed_before_its_first_save(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """No checkpoint or evaluation: a kill once training started leaves only config.yml. --resume says to run it
    again; running it again archives the leftovers (nothing deleted) and trains."""
    run = tmp_path / "run"
    argv = [*tiny(tmp_path, "run", 100_000), "--checkpoint-freq", "0", "--eval-freq", "0"]
    process = start(argv, tmp_path)
    wait_for_training(process, run / "config.yml", 0)
    process.kill()
    process.communicate(timeout=60)
    before = files(run)
    assert list(before) == [Path("config.yml")]
    bad(a2c.main, ["--resume", str(run)], capsys, "stopped before its first save", "nothing to resume",
        "start it again with its command", "--total-timesteps 100000")  # fmt: skip
    assert files(run) == before
    assert a2c.main(tiny(tmp_path)) == 0
    assert "archived the leftovers of a run that stopped before its first save" in capsys.readouterr().out
    (archive,) = run.glob(f"{ARCHIVE_PREFIX}*")
    assert files(archive) == before
    assert runs.find_runs([tmp_path]) == [run]  # an archive is not a run of its own
    assert_all_load(run)


# ----------------------------------------------------------------------------------------------- resume
def test_resuming_an_older_checkpoint_is_refused_unless_archived(tmp_path, capsys) -> None:
    assert a2c.main(tiny(tmp_path)) == 0
    run, checkpoint = tmp_path / "run", tmp_path / "run" / "checkpoints" / "model_60_steps.zip"
    before = files(run)
    resume = ["--resume", str(checkpoint), "--total-timesteps", "60", "--no-progress-bar", "--verbose", "0",
              "--eval-freq", "60", "--checkpoint-freq", "60", "--final-eval-episodes", "2"]  # fmt: skip
    bad(a2c.main, resume, capsys, "is at step 60", "model.zip (step 120)", "checkpoints/model_120_steps.zip",
        "--archive-newer", f"--resume {run}")  # fmt: skip
    assert files(run) == before
    bad(a2c.main, [*tiny(tmp_path, "other"), "--archive-newer"], capsys, "--archive-newer only applies with --resume")

    capsys.readouterr()
    assert a2c.main([*resume, "--archive-newer"]) == 0
    assert "archived the run's results after step 60" in capsys.readouterr().out
    (archive,) = run.glob(f"{ARCHIVE_PREFIX}*")
    archived, now = files(archive), files(run)
    # Nothing was lost: every file of the first run is in the archive or unchanged in the run.
    for path, content in before.items():
        assert archived.get(path) == content or now.get(path) == content, path
    assert {Path("model.zip"), Path("checkpoints/model_120_steps.zip"), Path("evaluations.npz")} <= set(archived)
    assert RecurrentA2C.load(run / "model.zip", device="cpu").num_timesteps == 120  # 60 + 60, the new branch
    with np.load(run / "evaluations.npz") as data:
        assert list(data["timesteps"]) == [60, 120]
    assert run_config(run)["resumed"][-1]["at_step"] == 60
    assert_all_load(run)


def test_damaged_evaluations_and_model_do_not_block_resume(tmp_path, capsys) -> None:
    """As a kill during a write by an earlier version leaves them: evaluations.npz truncated (then empty), model.zip
    truncated. --resume RUN continues from the newest intact checkpoint, and warns in one line about the history."""
    assert a2c.main(tiny(tmp_path)) == 0
    run = tmp_path / "run"
    resume = ["--resume", str(run), "--total-timesteps", "60", "--no-progress-bar", "--verbose", "0",
              "--eval-freq", "60", "--checkpoint-freq", "60", "--final-eval-episodes", "0"]  # fmt: skip
    evaluations, model = run / "evaluations.npz", run / "model.zip"
    for n, damage in enumerate((lambda data: data[: len(data) // 2], lambda data: b"")):
        original = evaluations.read_bytes()
        evaluations.write_bytes(damage(original))
        if n == 0:
            model.write_bytes(model.read_bytes()[:1000])
        capsys.readouterr()
        assert a2c.main(resume) == 0
        out, err = capsys.readouterr()
        if n == 0:
            assert "from checkpoints/model_120_steps.zip (step 120) (model.zip is damaged)" in out
        warning = [line for line in err.splitlines() if "evaluations.npz is damaged" in line]
        assert len(warning) == 1 and "Traceback" not in err, err
        kept = sorted(run.glob("evaluations.npz.damaged-*"), key=lambda path: path.stat().st_mtime_ns)
        assert len(kept) == n + 1 and kept[-1].read_bytes() == damage(original)  # set aside, not deleted
        with np.load(evaluations) as data:
            assert list(data["timesteps"]) == [180 + 60 * n]  # a fresh history
    assert_all_load(run)
