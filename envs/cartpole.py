"""CartPole with the velocities masked: a classic "memory needed" control task.

The full CartPole-v1 state is ``[x, x_dot, theta, theta_dot]``. Dropping the two velocities leaves
``[x, theta]`` (float32, shape ``(2,)``); a memoryless policy cannot tell which way the pole is moving,
so an agent must integrate positions over time (a recurrent or fast-weights core helps).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

#: Indices of the positions kept from CartPole's 4-d state: cart position x and pole angle theta.
_KEPT = np.array([0, 2])


class CartPoleNoVelEnv(CartPoleEnv):
    """CartPole-v1 whose observation is ``[x, theta]`` only (float32 Box, shape ``(2,)``).

    Dynamics, actions (0 push left, 1 push right), reward (+1 per step) and termination are CartPole's.
    ``max_steps`` (default 500, as CartPole-v1) truncates the episode from inside the env so that
    ``info["is_success"]`` (True when the pole survived the whole horizon) can be reported at episode end;
    the registered id also carries ``max_episode_steps=500`` so ``spec`` advertises the horizon.
    """

    def __init__(self, max_steps: int = 500, render_mode: str | None = None) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        super().__init__(render_mode=render_mode)
        self.max_steps = max_steps
        full = self.observation_space
        self.observation_space = spaces.Box(full.low[_KEPT], full.high[_KEPT], dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self._t = 0
        return obs[_KEPT], info

    def step(self, action: int):
        obs, reward, terminated, truncated, info = super().step(action)
        self._t += 1
        truncated = truncated or self._t >= self.max_steps
        if terminated or truncated:
            info["is_success"] = bool(not terminated)
        return obs[_KEPT], reward, terminated, truncated, info
