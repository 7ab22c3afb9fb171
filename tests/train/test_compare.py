"""``python -m train.compare`` (a grid of training runs, steps to a success threshold) and the run labels of
:mod:`train.runs` that it shares with ``train.plot``, on tiny real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train import a2c, compare, runs
from train.experiment import Experiment
from train.spec import RunSpec

CATCH = "fw_agents/Catch-N16-M3-v0"
#: A run of a few seconds: evaluations at steps 60 and 120.
TINY = [
    "--n-envs", "2", "--total-timesteps", "120", "--hidden-size", "8", "--eval-episodes", "2",
    "--final-eval-episodes", "2", "--eval-freq", "60", "--checkpoint-freq", "0", "--verbose", "0",
]  # fmt: skip


def test_grid_runs_each_policy_and_seed_then_keeps_finished_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--env", CATCH, "--policies", "fast-weights", "mlp", "--seeds", "3", "--out-dir", str(tmp_path),
            "--jobs", "2", "--", *TINY]  # fmt: skip
    assert compare.main(argv) == 0
    for name in ("fast-weights-s3", "mlp-s3"):
        assert (tmp_path / name / "model.zip").is_file()
        assert "a2c" in (tmp_path / f"{name}.log").read_text()
    config = runs.load_configs([tmp_path / "mlp-s3"])[tmp_path / "mlp-s3"]
    assert config["seed"] == 3 and config["policy"] == "mlp" and config["hyperparams"]["n_envs"] == 2

    capsys.readouterr()
    assert compare.main(argv) == 0  # nothing left to do
    out = capsys.readouterr().out
    assert out.count("already finished, kept") == 2 and "0 of 0 runs finished" in out

    result = tmp_path / "table.json"
    assert compare.main(["table", str(tmp_path), "--threshold", "0", "--json", str(result)]) == 0
    table = capsys.readouterr().out
    assert "| fw_agents/Catch-N16-M3-v0 | fast-weights | s3: 0k" in table and "| 1/1 |" in table
    rows = json.loads(result.read_text())["runs"]
    # Threshold 0: reached at the first evaluation, after the run started.
    assert {r["steps_to_threshold"] for r in rows} == {60}
    assert all(r["seconds_to_threshold"] >= 0 and r["final_value"] is not None for r in rows)


def test_a_folder_that_is_not_a_run_is_refused_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lstm-s0").mkdir()
    (tmp_path / "lstm-s0" / "model.zip").write_bytes(b"a user's model")
    argv = ["run", "--env", CATCH, "--policies", "lstm", "--seeds", "0", "--out-dir", str(tmp_path)]
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds files but no run" in err
    assert (tmp_path / "lstm-s0" / "model.zip").read_bytes() == b"a user's model"


def test_a_cell_whose_run_stopped_before_its_first_save_is_trained_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a kill before the first save leaves (the folder as set up: config.yml only) has nothing to resume, as
    --resume on it says: the grid trains the cell again, its leftovers archived in the run folder (nothing deleted)."""
    hyperparams = {"n_envs": 2, "n_timesteps": 120, "policy_kwargs": {"hidden_size": 8}}
    spec = RunSpec(algo="a2c", env_id=CATCH, policy="mlp", hyperparams=hyperparams, save_dir=tmp_path / "mlp-s0",
                   tensorboard_log=None, verbose=0)  # fmt: skip
    experiment = Experiment(spec)
    experiment.setup()
    experiment.close()
    leftovers = (tmp_path / "mlp-s0" / "config.yml").read_bytes()
    assert sorted(path.name for path in (tmp_path / "mlp-s0").iterdir()) == [runs.LOCK_NAME, "config.yml"]

    argv = ["run", "--env", CATCH, "--policies", "mlp", "--seeds", "0", "--out-dir", str(tmp_path), "--", *TINY]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    assert "an earlier attempt stopped before its first save" in out and "1 of 1 runs finished" in out
    assert (tmp_path / "mlp-s0" / "model.zip").is_file()
    (archived,) = (tmp_path / "mlp-s0").glob("archive-*")
    assert (archived / "config.yml").read_bytes() == leftovers
    assert runs.find_runs([tmp_path]) == [tmp_path / "mlp-s0"]  # the moved folder is not a run of the grid


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--env", CATCH, "--policies", "lstm", "gru", "--name", "x", "--out-dir", "o"], "--name"),
        (["run", "--env", CATCH, "--seeds", "1", "1", "--out-dir", "o"], "repeat"),
        (["run", "--env", CATCH, "--policies", "rnn", "--out-dir", "o"], "invalid choice"),
        (["run", "--env", "NoSuchEnv-v0", "--out-dir", "o"], "unknown environment"),
        (["table", "nowhere"], "does not exist"),
        (["table", ".", "--threshold", "2"], "--threshold"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_labels_name_the_settings_that_differ_and_group_seeds(tmp_path: Path) -> None:
    for name, seed, extra in (("a", "0", []), ("b", "1", []), ("c", "0", ["--policy-kwargs", "decay_rate=0.5"])):
        argv = [*TINY, "--env", CATCH, "--seed", seed, "--no-progress-bar", "--final-eval-episodes", "0",
                "--save-dir", str(tmp_path / name), "--tensorboard-log", "none", *extra]  # fmt: skip
        assert a2c.main(argv) == 0
    labels = runs.run_labels(runs.load_configs(runs.find_runs([tmp_path])))
    assert labels[tmp_path / "a"] == labels[tmp_path / "b"] == "fast-weights decay_rate=default"
    assert labels[tmp_path / "c"] == "fast-weights decay_rate=0.5"
