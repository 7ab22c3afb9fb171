"""fw_agents.nonfinite: the checks that stop training at the first non-finite value, naming where it came from."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from fw_agents.nonfinite import CheckFiniteVecEnv, FiniteParametersCallback, NonFiniteError
from tests.train.nonfinite_env import NonFiniteAt


def two_envs(where: str, at_step: int, base: str = "CartPole-v1") -> DummyVecEnv:
    """Env 1 of 2 emits NaN at its ``at_step``-th step; env 0 never does."""
    return DummyVecEnv([lambda: NonFiniteAt(base, where, 10**9), lambda: NonFiniteAt(base, where, at_step)])


@pytest.mark.parametrize("where", ["reward", "observation"])
def test_env_values_name_the_env_and_timestep(where: str) -> None:
    venv = CheckFiniteVecEnv(two_envs(where, 3), start_timestep=100)
    venv.reset()
    venv.step(np.zeros(2, dtype=np.int64))
    venv.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(NonFiniteError, match=rf"non-finite {where} \(nan\) from env 1 at timestep 106") as caught:
        venv.step(np.zeros(2, dtype=np.int64))
    assert not caught.value.diverged


def test_a_non_finite_action_is_the_model_diverging() -> None:
    venv = CheckFiniteVecEnv(DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2), name="evaluation env",
                             start_timestep=None)  # fmt: skip
    venv.reset()
    with pytest.raises(NonFiniteError, match=r"gave a non-finite action \(inf\) to evaluation env 1:") as caught:
        venv.step(np.array([[0.0], [np.inf]], dtype=np.float32))
    assert caught.value.diverged


class PoisonAfterFirstUpdate(BaseCallback):
    """Makes one parameter NaN once the first update is done (listed before the check, it runs first), as a
    diverging update would."""

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps == self.model.n_steps:
            with th.no_grad():
                next(self.model.policy.parameters())[0] = float("nan")

    def _on_step(self) -> bool:
        return True


def test_a_non_finite_parameter_stops_training_before_the_next_rollout() -> None:
    model = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, device="cpu",
                         policy_kwargs={"lstm_hidden_size": 8})  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"the update before timestep 16 made the policy's parameter") as caught:
        model.learn(64, callback=[PoisonAfterFirstUpdate(), FiniteParametersCallback()])
    assert caught.value.diverged and model.num_timesteps == 16
