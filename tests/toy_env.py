"""A tiny memory task in every observation and action space the policies must take, for fast tests."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CueRecallEnv(gym.Env):
    """A cue (0 or 1) is shown at the first step only; at the last step the agent is rewarded for
    an action that names it. ``obs_kind`` in {vector, image, dict}; ``action_kind`` in
    {discrete, box, multidiscrete}."""

    def __init__(self, obs_kind: str = "vector", action_kind: str = "discrete", length: int = 6) -> None:
        self.obs_kind, self.action_kind, self.length = obs_kind, action_kind, length
        vector = spaces.Box(-1.0, 1.0, (3,), np.float32)
        image = spaces.Box(0, 255, (1, 36, 36), np.uint8)  # the smallest NatureCNN takes
        self.observation_space = {
            "vector": vector,
            "image": image,
            "dict": spaces.Dict({"vector": vector, "flag": spaces.Discrete(2)}),
        }[obs_kind]
        self.action_space = {
            "discrete": spaces.Discrete(2),
            "box": spaces.Box(-1.0, 1.0, (1,), np.float32),
            "multidiscrete": spaces.MultiDiscrete([2, 3]),
        }[action_kind]

    def _obs(self) -> Any:
        signal = (2 * self.cue - 1) if self.t == 0 else 0
        vector = np.array([signal, self.t / self.length, 1.0], dtype=np.float32)
        if self.obs_kind == "vector":
            return vector
        if self.obs_kind == "image":
            return np.full((1, 36, 36), 127 + 100 * signal, dtype=np.uint8)
        return {"vector": vector, "flag": int(self.t == 0)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(2)), 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        reward = 0.0
        if done:
            choice = (
                int(np.asarray(action).flat[0] > 0) if self.action_kind == "box" else int(np.asarray(action).flat[0])
            )
            reward = float(choice == self.cue)
        info = {"is_success": reward > 0} if done else {}
        return self._obs(), reward, done, False, info
