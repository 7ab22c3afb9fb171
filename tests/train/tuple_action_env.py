"""A Gymnasium env whose action space no policy takes (a Tuple), registered as ``TupleAction-v0`` on import;
the CLI tests reach it as ``--env tests.train.tuple_action_env:TupleAction-v0``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TupleActionEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}  # SB3's make_vec_env asks for rgb_array
    observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2)))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}

    def render(self):
        return np.zeros((4, 4, 3), np.uint8)


if "TupleAction-v0" not in gym.registry:
    gym.register("TupleAction-v0", entry_point=TupleActionEnv)
