"""``python -m train.tune``: a study of real (tiny) trials end to end, its resume, pruning of a running trial, the
search spaces, and bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from fw_agents.registry import memory_names
from train import a2c, grid, runs, tune
from train.cli import load_yaml

CATCH = "fw_agents/Catch-N16-M3-v0"


def tune_argv(out_dir: Path, n_trials: int) -> list[str]:
    return [
        "--env", CATCH, "--policy", "fast-weights", "--n-trials", str(n_trials), "--n-timesteps", "128",
        "--n-evaluations", "2", "--eval-episodes", "2", "--sampler", "random", "--out-dir", str(out_dir),
        "--", "--n-envs", "2",
    ]  # fmt: skip


def test_a_three_trial_study_runs_resumes_and_writes_the_best_hyperparameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "tune"
    assert tune.main(tune_argv(out_dir, 2)) == 0
    assert tune.main(tune_argv(out_dir, 3)) == 0  # the same study, continued: one more trial
    out = capsys.readouterr().out
    assert "2 of 3 trials finished before this worker started" in out and out.count("started ") == 3

    with (out_dir / tune.TRIALS_NAME).open() as file:
        rows = list(csv.DictReader(file))
    assert [row["number"] for row in rows] == ["0", "1", "2"]
    assert all(row["state"] == "COMPLETE" and row["evaluations"] == "2" for row in rows)
    # Every trial searched the algorithm's and the memory's options: three different samples.
    assert len({(row["learning_rate"], row["decay_rate"], row["fast_learning_rate_scale"]) for row in rows}) == 3

    best = load_yaml(out_dir / tune.BEST_NAME)
    assert set(best) >= {"learning_rate", "n_steps", "ent_coef", "gamma", "policy_kwargs"}
    assert set(best["policy_kwargs"]) == {"hidden_size", "decay_rate", "fast_learning_rate", "inner_steps"}
    # The file is usable as it is: a run with --config trains with those settings.
    run = tmp_path / "best-run"
    argv = ["--env", CATCH, "--config", str(out_dir / tune.BEST_NAME), "--n-envs", "2", "--total-timesteps", "32",
            "--eval-freq", "0", "--final-eval-episodes", "0", "--tensorboard-log", "none", "--save-dir", str(run),
            "--no-progress-bar", "--verbose", "0"]  # fmt: skip
    assert a2c.main(argv) == 0
    config = load_yaml(run / runs.CONFIG_NAME)
    assert config["hyperparams"]["learning_rate"] == best["learning_rate"]
    assert config["hyperparams"]["policy_kwargs"]["decay_rate"] == best["policy_kwargs"]["decay_rate"]


class AlwaysPrune(optuna.pruners.BasePruner):
    """A pruner that stops every trial at its first report."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_pruned_trial_is_reported_as_its_evaluations_appear_and_its_process_stopped(tmp_path: Path) -> None:
    # A stand-in training process: one evaluation written, then a long wait that only the pruner ends.
    evaluations = tmp_path / "evaluations.npz"
    script = (
        "import time, numpy as np; "
        f"np.savez({str(evaluations)!r}, timesteps=np.array([64]), results=np.array([[0.5, 1.5]]), "
        "ep_lengths=np.array([[15, 15]])); time.sleep(120)"
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    tuned = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = tuned.ask()
    objective = tune.Objective(tune.build_parser().parse_args(tune_argv(tmp_path, 1)), tmp_path)
    with pytest.raises(optuna.TrialPruned):
        objective.follow(trial, process, evaluations)
    assert process.poll() is not None  # stopped, not left running
    assert tuned.trials[0].intermediate_values == {1: 1.0}  # the mean return, at the first evaluation


def test_every_memory_has_a_search_space_and_fast_weights_searches_its_rates() -> None:
    for policy in memory_names():
        trial = optuna.create_study().ask()
        kwargs = tune.MEMORY_SAMPLERS.get(policy, tune.sample_hidden_size)(trial)
        assert kwargs["hidden_size"] in (32, 64, 128, 256)
    trial = optuna.create_study().ask()
    kwargs = tune.sample_fast_weights(trial)
    # η is searched relative to the balanced rate 2(1−λ)/H, within 0.1x to 10x.
    balanced = 2 * (1 - kwargs["decay_rate"]) / kwargs["hidden_size"]
    assert 0.1 * balanced <= kwargs["fast_learning_rate"] <= 10 * balanced


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--sampler", "grid"], "invalid choice"),
        (["--pruner", "hyperband"], "invalid choice"),
        (["--n-trials", "0"], "--n-trials"),
        (["--seed", "-1"], "--seed"),
        (["--storage", "mongodb:/x"], "--storage takes a database URL"),
        (["--storage", "sqlite:////no/such/folder/x.db"], "cannot open"),
        (["--n-evaluations", "1000"], "--n-evaluations"),
        (["--env", "NoSuchEnv-v0"], "unknown environment"),
        (["--", "--seed", "3"], "--seed is set for each run"),
        (["--", "--hparams", "gamma=0.9"], "--config FILE"),
        (["--storage", "GRID", "--study-name", "grid"], "is train.compare or bench.suite's, not a tune study"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "GRID" in options:  # a grid's study, made by a grid worker
        journal = tmp_path / "grid.log"
        grid.load_study(grid.open_storage(str(journal), None), "grid", "grid")
        options = [str(journal) if option == "GRID" else option for option in options]
    argv = ["--env", CATCH, "--n-timesteps", "128", "--out-dir", str(tmp_path / "tune"), *options]
    assert tune.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "tune").exists()  # nothing written, not even the embedded storage
