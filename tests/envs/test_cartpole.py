"""CartPoleNoVel: registration, spaces, seeding, checkers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers the ids)

ENV_ID = "fw_agents/CartPoleNoVel-v1"


def test_spaces_and_horizon() -> None:
    env = gym.make(ENV_ID)
    assert env.observation_space.shape == (2,)
    assert env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.Discrete(2)
    assert env.spec.max_episode_steps == 500
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2,) and obs.dtype == np.float32 and env.observation_space.contains(obs)


def test_obs_is_position_and_angle_of_full_state() -> None:
    masked, full = gym.make(ENV_ID), gym.make("CartPole-v1")
    o_m, _ = masked.reset(seed=3)
    o_f, _ = full.reset(seed=3)
    for a in [0, 1, 1, 0, 1]:
        np.testing.assert_array_equal(o_m, o_f[[0, 2]])
        o_m, *_ = masked.step(a)
        o_f, *_ = full.step(a)


def test_checkers() -> None:
    gym_check_env(gym.make(ENV_ID).unwrapped)
    sb3_check_env(gym.make(ENV_ID).unwrapped)


def test_seeding_and_success_flag() -> None:
    def rollout(seed: int) -> tuple[list[np.ndarray], dict]:
        env = gym.make(ENV_ID)
        obs, _ = env.reset(seed=seed)
        traj, done, info = [obs], False, {}
        while not done:
            obs, _, term, trunc, info = env.step(1)  # always push right: falls quickly
            traj.append(obs)
            done = term or trunc
        return traj, info

    a, info = rollout(7)
    b, _ = rollout(7)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert info["is_success"] is False


def test_rgb_render() -> None:
    env = gym.make(ENV_ID, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    env.close()


def test_bad_args() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        gym.make(ENV_ID, max_steps=0)
