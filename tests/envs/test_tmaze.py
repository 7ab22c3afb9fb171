"""T-maze: layout, reward scheme, optimal return with memory, memoryless at chance."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.tmaze import DOWN, LEFT, RIGHT, UP, TMazeEnv
from tests.envs.helpers import LookupPolicy, binomial_upper, run_episode


class Remembering:
    """Perfect memory: (active: step left to the oracle,) note the cue, walk right, turn to the cued side."""

    def __init__(self, variant: str) -> None:
        self.pending_left = variant == "active"
        self.turn = UP

    def __call__(self, obs: np.ndarray) -> int:
        if obs[0] or obs[1]:
            self.turn = UP if obs[0] else DOWN
        if obs[2]:
            return self.turn
        if self.pending_left:
            self.pending_left = False
            return LEFT
        return RIGHT


def memoryless_walker(obs: np.ndarray) -> int:
    """The natural memoryless policy: walk right, always turn up at the junction."""
    return UP if obs[2] else RIGHT


@pytest.mark.parametrize("variant", ["passive", "active"])
@pytest.mark.parametrize("length", [1, 10, 50])
def test_perfect_memory_is_optimal(variant: str, length: int) -> None:
    env = TMazeEnv(corridor_length=length, variant=variant)
    for goal in ("up", "down"):
        episode = run_episode(env, Remembering(variant), options={"goal": goal})
        assert episode.ret == pytest.approx(1.0) and episode.info["is_success"]
        assert len(episode.rewards) == env.horizon == length + 1 + 2 * (variant == "active")


@pytest.mark.parametrize("variant", ["passive", "active"])
@pytest.mark.parametrize("length", [10, 50])
def test_v1_keeps_the_optimal_and_memoryless_returns(variant: str, length: int) -> None:
    env = gym.make(f"fw_agents/TMaze{variant.title()}-L{length}-v1")
    shortest = length + 1 + 2 * (variant == "active")
    assert env.unwrapped.horizon == 2 * shortest - 1 and env.unwrapped.penalty == "progress"
    for goal in ("up", "down"):
        episode = run_episode(env, Remembering(variant), options={"goal": goal})
        assert episode.ret == pytest.approx(1.0) and len(episode.rewards) == shortest
    # The walker never moves away from the junction: no penalty, a guessed turn.
    assert {run_episode(env, memoryless_walker, seed=s).ret for s in range(20)} == {0.0, 1.0}


def test_progress_penalty() -> None:
    env = TMazeEnv(corridor_length=3, variant="active", penalty="progress", horizon=8)
    assert env.lag_penalty == pytest.approx(1 / 8)
    # Left to the unseen oracle is free; bumping into the wall there, a no-op, and left once the cue has been
    # seen are charged; every step right is free. The horizon (8) ends the episode before the junction.
    actions = iter([LEFT, LEFT, UP, RIGHT, LEFT, RIGHT, RIGHT, RIGHT])
    episode = run_episode(env, lambda _obs: next(actions), options={"goal": "up"})
    assert episode.rewards == pytest.approx([0, -1 / 8, -1 / 8, 0, -1 / 8, 0, 0, 0])
    env = TMazeEnv(corridor_length=3, variant="active", penalty="progress")
    episode = run_episode(env, lambda _obs: RIGHT, options={"goal": "up"})  # skipping the oracle is progress too
    assert episode.rewards[:3] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("env_id", ["fw_agents/TMazePassive-L10-v0", "fw_agents/TMazeActive-L10-v0"])
def test_cue_only_at_oracle_and_junction_obs_identical(env_id: str) -> None:
    env = gym.make(env_id)
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (3,), np.float32)
    assert env.action_space == gym.spaces.Discrete(4)
    variant = env.unwrapped.variant
    runs = {g: run_episode(env, Remembering(variant), options={"goal": g}).observations for g in ("up", "down")}
    cue_step = 0 if variant == "passive" else 1
    for t, (a, b) in enumerate(zip(runs["up"], runs["down"], strict=True)):
        if t == cue_step:
            assert a.tolist() == [1, 0, 0] and b.tolist() == [0, 1, 0]
        else:  # everywhere else - the corridor and the junction - the two goals look the same
            assert np.array_equal(a, b)
    assert runs["up"][-2][2] == 1.0  # the decision is taken at the junction


@pytest.mark.parametrize("variant", ["passive", "active"])
def test_memoryless_policies_at_chance(variant: str) -> None:
    # At the junction the observation is [0, 0, 1] whatever the goal, so a memoryless policy's turn there is
    # independent of the goal: success <= 1/2. The natural walker gets exactly 1/2 in expectation ...
    env = TMazeEnv(corridor_length=10, variant=variant)
    n = 2000
    successes = [run_episode(env, memoryless_walker, seed=s).info["is_success"] for s in range(n)]
    assert abs(np.mean(successes) - 0.5) < binomial_upper(0.5, n) - 0.5
    # ... and random memoryless lookup policies never do better than chance.
    rates = [
        np.mean([run_episode(env, LookupPolicy(4, p), seed=s).info["is_success"] for s in range(200)])
        for p in range(30)
    ]
    assert max(rates) <= binomial_upper(0.5, 200)


def test_reward_scheme() -> None:
    env = TMazeEnv(corridor_length=3, variant="passive")
    assert env.horizon == 4 and env.lag_penalty == pytest.approx(0.25)
    episode = run_episode(env, lambda _obs: RIGHT if not _obs[2] else UP, options={"goal": "down"})
    assert episode.rewards == [0.0, 0.0, 0.0, 0.0] and episode.info["is_success"] is False  # wrong turn: 0
    episode = run_episode(env, lambda _obs: LEFT, options={"goal": "up"})  # never moves: penalised each step
    assert episode.rewards == pytest.approx([-0.25] * 4) and episode.info["is_success"] is False
    episode = run_episode(env, lambda _obs: UP)  # up/down away from the junction does nothing
    assert len(episode.rewards) == 4


def test_active_skipping_oracle_gets_no_cue() -> None:
    env = TMazeEnv(corridor_length=5, variant="active")
    episode = run_episode(env, memoryless_walker, options={"goal": "down"})
    assert all(not (o[0] or o[1]) for o in episode.observations)
    assert episode.ret == 0.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"corridor_length": 0}, "corridor_length"),
        ({"variant": "semi"}, "variant"),
        ({"lag_penalty": -0.1}, "lag_penalty"),
        ({"penalty": "step"}, "penalty"),
        ({"corridor_length": 10, "horizon": 10}, "horizon"),
        ({"horizon": 1.5}, "horizon"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TMazeEnv(**kwargs)
