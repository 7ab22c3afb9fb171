"""Checks for the silent mistakes with a recurrent model's ``predict``.

``action, _ = model.predict(obs)`` step after step runs a recurrent policy from an empty memory at every
step (a CartPoleNoVel policy that scores ~470 falls to ~42 that way) and nothing complains: a warning.
A state for another number of envs than the observations (3 observations, the state of 1 env) would be
broadcast to every env, or fail deep inside the core: a ``ValueError`` that says so.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.utils import is_vectorized_observation


def check_predict_batch(
    observation: Any, state: tuple[np.ndarray, ...] | None, episode_start: Any, observation_space: spaces.Space
) -> None:
    """``ValueError`` unless ``state`` (arrays ``(num_layers, n_envs, ...)``) and ``episode_start`` (``(n_envs,)``)
    are for as many envs as ``observation`` holds."""
    if isinstance(observation, dict):  # a Dict space: every key is batched alike
        key = next(iter(observation_space.spaces))
        observation, observation_space = observation[key], observation_space[key]
    n_envs = np.asarray(observation).shape[0] if is_vectorized_observation(observation, observation_space) else 1
    for index, array in enumerate(state or ()):
        shape = np.shape(array)
        if len(shape) != 3 or shape[1] != n_envs:
            raise ValueError(
                f"predict: state[{index}] has shape {shape}, not (num_layers, {n_envs}, ...) for {n_envs} "
                "observation(s); pass back the state predict returned for these envs, or None for empty memory"
            )
    if episode_start is not None and np.size(episode_start) != n_envs:
        raise ValueError(f"predict: episode_start has {np.size(episode_start)} entries for {n_envs} observation(s)")


class StatelessPredictWarning(UserWarning):
    """A recurrent model's ``predict`` was called step after step without ``state``."""


class StatelessPredictGuard:
    """Counts consecutive ``predict`` calls without ``state`` and warns once at the second.

    The first call of an episode legitimately has ``state=None`` (SB3's ``evaluate_policy`` starts that
    way); a second one in a row means the caller dropped the state the first call returned.
    """

    def __init__(self) -> None:
        self.calls_without_state = 0
        self.warned = False

    def __call__(self, state: Any) -> None:
        self.calls_without_state = self.calls_without_state + 1 if state is None else 0
        if self.calls_without_state >= 2 and not self.warned:
            self.warned = True
            warnings.warn(
                "predict() was called again without state: a recurrent model then acts from an empty memory at "
                "every step. Pass the returned state back: action, state = model.predict(obs, state=state, "
                "episode_start=episode_start)",
                StatelessPredictWarning,
                stacklevel=3,
            )
