"""A Gymnasium env that emits one non-finite reward or observation, registered as ``NonFinite-v0`` on import; the
CLI tests reach it as ``--env tests.train.nonfinite_env:NonFinite-v0 --hparams "env_kwargs={...}"``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class NonFiniteAt(gym.Wrapper):
    """``base`` (a registered id), except that at step ``at_step`` of its life (counted over all its episodes) the
    reward (``where="reward"``) or every entry of the observation (``where="observation"``) is ``value``."""

    def __init__(self, base: str, where: str, at_step: int, value: float = float("nan")) -> None:
        super().__init__(gym.make(base))
        if where not in ("reward", "observation"):
            raise ValueError(f"where must be 'reward' or 'observation', got {where!r}")
        self.where, self.at_step, self.value, self.steps = where, at_step, float(value), 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == self.at_step:
            if self.where == "reward":
                reward = self.value
            else:
                obs = np.full_like(obs, self.value)
        return obs, reward, terminated, truncated, info


if "NonFinite-v0" not in gym.registry:
    gym.register("NonFinite-v0", entry_point=NonFiniteAt)
