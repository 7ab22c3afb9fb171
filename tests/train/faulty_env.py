"""Envs that fail the way user envs do, registered on import; the CLI tests reach them as
``--env tests.train.faulty_env:Faulty-v0 --hparams "env_kwargs={fault: raise, at_step: 50}"`` and
``--env tests.train.faulty_env:Endless-v0``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

FAULTS = ("raise", "shape", "reward_none")


class FaultAt(gym.Wrapper):
    """Catch, except that at step ``at_step`` of its life (over all its episodes) its ``step`` raises
    (``fault="raise"``), returns an observation of the wrong shape (``"shape"``) or a reward of None
    (``"reward_none"``). Setting :attr:`broken` to False fixes it (as its author would)."""

    broken = True

    def __init__(self, fault: str, at_step: int) -> None:
        super().__init__(gym.make("fw_agents/Catch-N16-M3-v0"))
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        self.fault, self.at_step, self.steps = fault, at_step, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.broken and self.steps == self.at_step:
            if self.fault == "raise":
                raise RuntimeError("sensor unplugged")
            if self.fault == "shape":
                obs = np.concatenate([obs, obs[:1]])
            else:
                reward = None
        return obs, reward, terminated, truncated, info


class Endless(gym.Env):
    """An episode that never ends (no termination, no time limit): observation 0, reward 0."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}


for name, entry_point in (("Faulty-v0", FaultAt), ("Endless-v0", Endless)):
    if name not in gym.registry:
        gym.register(name, entry_point=entry_point)
