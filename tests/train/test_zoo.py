"""rl-zoo3 both ways, with rl-zoo3 itself: its hyperparameter file (the README's recipe, our policy and
``MemoryStatsCallback`` in it) trains with ``python -m rl_zoo3.train``, and the same file is a ``--config`` of
``train.ppo``; the zoo's log folder is read by ``train.evaluate`` (with its ``VecNormalize`` statistics),
``train.plot`` and ``train.compare table``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from train import compare, evaluate, plot, ppo, runs

ROOT = Path(__file__).resolve().parents[2]
ENV = "fw_agents/CartPoleNoVel-v1"
#: The README's rl-zoo3 recipe (its ppo_lstm.yml entry for CartPoleNoVel with our policy), shrunk to seconds.
RECIPE = f"""
{ENV}:
  normalize: "{{'norm_obs': True, 'norm_reward': False}}"
  n_envs: 2
  n_timesteps: !!float 256
  policy: fw_agents.FastWeightsActorCriticPolicy
  callback: fw_agents.callbacks.MemoryStatsCallback
  n_steps: 32
  batch_size: 64
  gae_lambda: 0.8
  gamma: 0.98
  n_epochs: 2
  ent_coef: 0.0
  learning_rate: lin_0.001
  clip_range: lin_0.2
  policy_kwargs: "dict(
                    ortho_init=False,
                    activation_fn=nn.ReLU,
                    lstm_hidden_size=16,
                    enable_critic_lstm=True,
                    net_arch=dict(pi=[64], vf=[64])
                  )"
"""


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An rl-zoo3 log folder of our policy, made by ``python -m rl_zoo3.train`` (evaluations at steps 128, 256)."""
    work = tmp_path_factory.mktemp("zoo")
    (work / "recipe.yml").write_text(RECIPE)
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo_lstm", "--env", ENV, "-conf", "recipe.yml",
               "--gym-packages", "envs", "-f", "logs", "--tensorboard-log", "tb", "--eval-freq", "128",
               "--eval-episodes", "2", "--seed", "3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (folder,) = (work / "logs" / "ppo_lstm").iterdir()
    return folder


def test_the_zoo_recipe_trains_with_rl_zoo3_and_logs_the_memory(zoo_run: Path) -> None:
    config = runs.load_configs([zoo_run])[zoo_run]
    assert config["algorithm"] == "ppo_lstm" and config["env_id"] == ENV and config["seed"] == 3
    assert config["policy"] == "fw_agents.FastWeightsActorCriticPolicy"
    assert (Path(config["zoo"]["vecnormalize"])).is_file()
    scalars = runs.run_scalars(zoo_run, config, "memory/fast_slow_ratio")  # MemoryStatsCallback, through the zoo
    assert scalars is not None and len(scalars.steps) > 0


def test_the_zoo_recipe_is_a_config_of_train_ppo(tmp_path: Path) -> None:
    (tmp_path / "recipe.yml").write_text(RECIPE)
    run = tmp_path / "run"
    assert ppo.main(["--config", str(tmp_path / "recipe.yml"), "--env", ENV, "--save-dir", str(run),
                     "--tensorboard-log", "none", "--eval-freq", "0", "--final-eval-episodes", "2",
                     "--verbose", "0"]) == 0  # fmt: skip
    hyperparams = yaml.safe_load((run / runs.CONFIG_NAME).read_text())["hyperparams"]
    # (merged key by key over hyperparams.yml's entry for the env, which sets VecNormalize's gamma)
    assert hyperparams["normalize"] == {"gamma": 0.98, "norm_obs": True, "norm_reward": False}
    assert hyperparams["n_timesteps"] == 256
    assert hyperparams["policy_kwargs"] == {
        "hidden_size": 16, "ortho_init": False, "activation_fn": "nn.ReLU", "enable_critic_memory": True,
        "net_arch": {"pi": [64], "vf": [64]},
    }  # fmt: skip
    # Another callback than the memory statistics ours log anyway is rl-zoo3's to run.
    (tmp_path / "other.yml").write_text(RECIPE.replace("fw_agents.callbacks.MemoryStatsCallback", "my.Callback"))
    assert ppo.main(["--config", str(tmp_path / "other.yml"), "--env", ENV, "--save-dir", str(tmp_path / "o")]) == 2


def test_train_commands_read_the_zoo_log_folder(
    zoo_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate.main([str(zoo_run), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "(ppo_lstm) on fw_agents/CartPoleNoVel-v1" in out and "deterministic return" in out
    assert evaluate.main([str(zoo_run), "--episodes", "2", "--algo", "a2c"]) == 2  # not the run's algorithm
    assert "trained with ppo_lstm" in capsys.readouterr().err

    assert plot.main([str(zoo_run.parent.parent), "--tag", "eval/mean_reward", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0
    assert compare.main(["table", str(zoo_run), "--tag", "eval/mean_reward", "--threshold", "0"]) == 0
    table = capsys.readouterr().out
    assert "| fw_agents/CartPoleNoVel-v1 |" in table and "| 1/1 |" in table and "%" not in table  # returns, not rates
