"""POPGym's tasks behind ``fw_agents/popgym-<Task>-v0``: POPGym's wrappers, SB3-ready spaces, seeding, returns."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

import envs
from bench import suite
from envs.popgym import make_popgym_env
from tests.envs.helpers import run_episode

SUITE_IDS = sorted({task.env_id for task in suite.TASKS if task.family == "popgym"})


def test_every_popgym_id_is_registered_and_the_suite_uses_easy_ones() -> None:
    assert len(envs.popgym_ids()) == len(set(envs.popgym_ids())) == 42
    assert set(SUITE_IDS) <= set(envs.popgym_ids()) and len(SUITE_IDS) == 10
    assert all(env_id.endswith("Easy-v0") for env_id in SUITE_IDS)


@pytest.mark.parametrize("env_id", SUITE_IDS)
def test_suite_tasks_pass_sb3s_checker_and_repeat_under_a_seed(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env, warn=False)  # (the pendulum's Box(-2, 2) action draws SB3's advice to normalise it)
    assert isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1

    def play(seed: int) -> tuple[list[np.ndarray], list[float]]:
        env.action_space.seed(seed)
        episode = run_episode(env, lambda _obs: env.action_space.sample(), seed=seed)
        assert all(env.observation_space.contains(obs) for obs in episode.observations)
        return episode.observations, episode.rewards

    (obs_a, rewards_a), (obs_b, rewards_b) = play(3), play(3)
    assert rewards_a == rewards_b and all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b, strict=True))
    # POPGym scales every reward by the episode's length: a return lies in [-1, 1] (the suite's task maximum is 1).
    assert -1.0 - 1e-6 <= sum(rewards_a) <= 1.0 + 1e-6


def test_observations_carry_the_first_step_flag_and_the_previous_action() -> None:
    # RepeatPrevious (Discrete(4) cards, Discrete(4) actions): [card one-hot, previous action one-hot, is_t0 one-hot].
    env = make_popgym_env("popgym-RepeatPreviousEasy-v0")
    first, _ = env.reset(seed=0)
    assert first.shape == (10,) and first[4] == 1 and list(first[8:]) == [0, 1]  # null action 0, first step
    later, *_ = env.step(3)
    assert later[4 + 3] == 1 and list(later[8:]) == [1, 0]


def test_bad_arguments_are_value_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="env_id"):
        make_popgym_env("popgym-NoSuchTaskEasy-v0")
    with pytest.raises(ValueError, match="max_episode_steps"):
        make_popgym_env("popgym-RepeatFirstEasy-v0", max_episode_steps=0)
