"""A run specified in Python (:class:`train.spec.RunSpec`) and trained by :class:`train.experiment.Experiment`,
without a command line; the order of precedence of :meth:`RunSpec.build`; the hyperparameter checks' coverage."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml
from sb3_contrib import RecurrentPPO

from fw_agents import RecurrentA2C
from train.experiment import Experiment
from train.spec import SET_BY_THE_RUN, Hyperparams, RunSpec, algorithm_arguments

CATCH = "fw_agents/Catch-N16-M3-v0"
QUICK = dict(eval_freq=30, checkpoint_freq=0, eval_episodes=2, final_eval_episodes=2, verbose=0, log_interval=1)


def test_a_spec_built_in_python_trains_and_resumes(tmp_path: Path) -> None:
    hyperparams = {"n_envs": 2, "n_timesteps": 60, "n_steps": 5, "policy_kwargs": {"hidden_size": 4}}
    spec = RunSpec(algo="a2c", env_id=CATCH, policy="fast-weights", hyperparams=hyperparams,
                   save_dir=tmp_path / "run", tensorboard_log=str(tmp_path / "tb"), **QUICK)  # fmt: skip
    experiment = Experiment(spec)
    config = experiment.run()
    assert isinstance(experiment.model, RecurrentA2C) and experiment.model.num_timesteps == 60
    assert config == yaml.safe_load((tmp_path / "run" / "config.yml").read_text())
    assert config["hyperparams"] == {**hyperparams, "policy_kwargs": {"hidden_size": 4}}
    assert config["policy_alias"] == "MlpFastWeightsPolicy" and config["result"]["num_timesteps"] == 60
    assert Path(config["tensorboard_dir"]).is_dir()

    resumed = Experiment(RunSpec.resumed(tmp_path / "run", "a2c", total_timesteps=30, **QUICK))
    config = resumed.run()
    assert config["result"]["num_timesteps"] == 90 and config["resumed"][0]["at_step"] == 60
    with np.load(tmp_path / "run" / "evaluations.npz") as data:
        assert list(data["timesteps"]) == [30, 60, 90]  # the first part's evaluations kept


def test_hyperparams_default_to_the_file_and_memory_kwargs_fold(tmp_path: Path) -> None:
    spec = RunSpec(algo="ppo", save_dir=tmp_path / "run", tensorboard_log=None)
    assert spec.env_id == "fw_agents/CartPoleNoVel-v1" and spec.hyperparams["n_epochs"] == 20
    assert spec.hyperparams_sources == ["hyperparams.yml:ppo.fw_agents/CartPoleNoVel-v1"]
    params = {"n_timesteps": 10, "policy_kwargs": {"lstm_hidden_size": 8},
              "memory_kwargs": {"gru": {"num_layers": 2}, "lstm": {"dropout": 0.5}}}  # fmt: skip
    spec = RunSpec(algo="a2c", env_id=CATCH, policy="gru", hyperparams=params, save_dir=tmp_path / "run")
    assert spec.hyperparams["policy_kwargs"] == {"hidden_size": 8, "num_layers": 2}
    assert "memory_kwargs" not in spec.hyperparams and spec.hyperparams["n_envs"] == 1


def test_build_precedence(tmp_path: Path) -> None:
    """hyperparams.yml < --config < --hparams < flags; memory_kwargs after every source's policy_kwargs."""
    config = tmp_path / "hp.yml"
    config.write_text(yaml.safe_dump({CATCH: {"n_steps": 4, "gamma": 0.9, "ent_coef": 0.5,
                                              "memory_kwargs": {"fast-weights": {"decay_rate": 0.8}}}}))  # fmt: skip
    spec = RunSpec.build(
        "a2c", CATCH, config=config, hparams={"gamma": 0.95, "policy_kwargs": {"decay_rate": 0.7, "hidden_size": 6}},
        n_envs=3, total_timesteps=50, hidden_size=5, policy_kwargs={"lstm_kwargs": {"inner_steps": 2}},
        save_dir=tmp_path / "run",
    )  # fmt: skip
    params = spec.hyperparams
    assert (params["n_envs"], params["n_timesteps"], params["n_steps"]) == (3, 50, 4)
    assert (params["gamma"], params["ent_coef"], params["learning_rate"]) == (0.95, 0.5, "lin_2.0e-3")  # yml's lr
    assert params["policy_kwargs"] == {"hidden_size": 5, "decay_rate": 0.8, "inner_steps": 2}
    assert spec.hyperparams_sources == [f"hyperparams.yml:a2c.{CATCH}", f"--config {config}", "--hparams"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hyperparams": {"n_timesteps": 10, "gamma": 2}}, "gamma must be"),
        ({"hyperparams": {"n_timesteps": 10, "policy_kwargs": {"activation_fn": object}}}, "plain values"),
        ({"hyperparams": {"n_envs": 2}}, "n_timesteps"),
        ({"policy": "transformer"}, "unknown policy"),
        ({"algo": "dqn"}, "unknown algorithm"),
    ],
)
def test_spec_refuses_bad_values_with_value_error(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunSpec(**{"algo": "a2c", "env_id": CATCH, "save_dir": tmp_path / "run", **change})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("algo_class", [RecurrentA2C, RecurrentPPO])
def test_every_hyperparameter_of_the_algorithms_is_checked(algo_class: type) -> None:
    assert algorithm_arguments(algo_class) <= set(Hyperparams.model_fields)
    assert set(SET_BY_THE_RUN) <= set(inspect.signature(algo_class.__init__).parameters)


def test_a_resumed_spec_refuses_an_older_checkpoint_unless_asked_to_archive(tmp_path: Path) -> None:
    """RunSpec.resumed picks the resume target: an older checkpoint of a run with later results is refused, and
    with archive_newer the later files are planned for RUN/archive-<time>/, moved only when the run starts."""
    hyperparams = {"n_envs": 2, "n_timesteps": 60, "n_steps": 5, "policy_kwargs": {"hidden_size": 4}}
    run = tmp_path / "run"
    options = {**QUICK, "checkpoint_freq": 30}
    with pytest.raises(ValueError, match="--archive-newer only applies with --resume"):
        RunSpec(algo="a2c", env_id=CATCH, policy="mlp", hyperparams=hyperparams, save_dir=run, archive_newer=True)
    new = RunSpec(algo="a2c", env_id=CATCH, policy="mlp", hyperparams=hyperparams, save_dir=run, tensorboard_log=None,
                  **options)  # fmt: skip
    Experiment(new).run()
    checkpoint = run / "checkpoints" / "model_30_steps.zip"
    with pytest.raises(ValueError, match="later results"):
        RunSpec.resumed(checkpoint, "a2c", total_timesteps=20, **options)

    before = sorted(path.relative_to(run) for path in run.rglob("*"))
    spec = RunSpec.resumed(checkpoint, "a2c", total_timesteps=20, archive_newer=True, **options)
    assert spec.resume == checkpoint and spec.archive is not None
    assert sorted(path.relative_to(run) for path in run.rglob("*")) == before  # nothing moved while checking
    config = Experiment(spec).run()
    assert config["result"]["num_timesteps"] == 50
    (archive,) = run.glob("archive-*")
    assert (archive / "checkpoints" / "model_60_steps.zip").is_file() and (archive / "model.zip").is_file()
    assert RunSpec.resumed(run, "a2c", **options).resume == run / "model.zip"  # now the newest state, at step 50
