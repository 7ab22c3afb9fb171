"""Shared test helpers: run one episode of a policy and collect what the assertions need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

Policy = Callable[[Any], int]


@dataclass
class Episode:
    """Observations (including the reset one), rewards and the final info of one episode."""

    observations: list[Any] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))


def run_episode(
    env: gym.Env,
    policy: Policy,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    max_steps: int = 10_000,
) -> Episode:
    """Roll ``policy`` (a function of the current observation only, or a stateful callable) for one episode."""
    obs, _ = env.reset(seed=seed, options=options)
    episode = Episode(observations=[obs])
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        episode.observations.append(obs)
        episode.rewards.append(float(reward))
        if terminated or truncated:
            episode.info = info
            return episode
    raise AssertionError(f"episode did not end within {max_steps} steps")


class LookupPolicy:
    """A random deterministic memoryless policy: each distinct observation gets a fixed random action."""

    def __init__(self, n_actions: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_actions = n_actions
        self.table: dict[bytes, int] = {}

    def __call__(self, obs: np.ndarray) -> int:
        key = np.asarray(obs).tobytes()
        if key not in self.table:
            self.table[key] = int(self.rng.integers(self.n_actions))
        return self.table[key]


def binomial_upper(p: float, n: int, z: float = 4.0) -> float:
    """p + z standard errors of a mean of n Bernoulli(p): a loose, practically never-failing upper limit."""
    return p + z * np.sqrt(p * (1 - p) / n)
