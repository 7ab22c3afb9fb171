"""Every registered id: checkers, spaces, seeding, rendering, the success flag."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from tests.envs.helpers import run_episode

ALL_IDS = envs.registered_ids()
OWN_IDS = [i for i in ALL_IDS if "MiniGrid" not in i]  # our own gym.Env classes (no wrappers)
MINIGRID_IDS = [i for i in ALL_IDS if "MiniGrid" in i]
TEXT_IDS = [i for i in OWN_IDS if "CartPole" not in i]  # CartPole (gymnasium's) has no text rendering

# Known, explained warnings for the wrapped MiniGrid envs: gymnasium prefers unwrapped envs (MiniGrid's raw
# Dict has a mission string SB3 cannot take, so we must check the wrapped one), and SB3's checker calls every
# 3-D Box an image (ours holds symbolic ids; see envs/minigrid_memory.py).
MINIGRID_WARNINGS = ("different from the unwrapped", "is an image but", "minimal resolution for an image")


def test_ids_are_namespaced_and_unique() -> None:
    assert len(ALL_IDS) == len(set(ALL_IDS))
    assert all(i.startswith("fw_agents/") for i in ALL_IDS)
    for required in [
        "fw_agents/CartPoleNoVel-v1",
        "fw_agents/Catch-N16-M3-v0",
        "fw_agents/Catch-N24-M5-v0",
        "fw_agents/Catch-N16-Full-v0",
        "fw_agents/AssociativeRetrieval-K4-v0",
        "fw_agents/TMazePassive-L10-v0",
        "fw_agents/TMazeActive-L10-v0",
        "fw_agents/MiniGrid-MemoryS7-v0",
    ]:
        assert required in gym.registry


@pytest.mark.parametrize("env_id", OWN_IDS)
def test_checkers_own(env_id: str) -> None:
    # (gym.make itself may warn: the T-mazes' -v0 ids are "out of date" next to -v1, Gymnasium's convention.)
    envs_ = [gym.make(env_id).unwrapped for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our own envs must pass both checkers without a single warning
        gym_check_env(envs_[0])
        sb3_check_env(envs_[1])


@pytest.mark.parametrize("env_id", MINIGRID_IDS)
def test_checkers_minigrid(env_id: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(gym.make(env_id))
        sb3_check_env(gym.make(env_id))
    unexpected = [str(w.message) for w in caught if not any(k in str(w.message) for k in MINIGRID_WARNINGS)]
    unexpected = [m for m in unexpected if "XDG_RUNTIME_DIR" not in m and "freesansbold" not in m]  # pygame
    assert not unexpected, unexpected


def _flat_obs(obs: object) -> np.ndarray:
    if isinstance(obs, dict):
        return np.concatenate([np.ravel(obs[k]) for k in sorted(obs)]).astype(np.float64)
    return np.asarray(obs, dtype=np.float64).ravel()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_seeded_episodes_repeat_and_obs_in_space(env_id: str) -> None:
    def collect(seed: int) -> tuple[list[np.ndarray], list[float], dict]:
        env = gym.make(env_id)
        env.action_space.seed(seed)
        episode = run_episode(env, lambda _obs: env.action_space.sample(), seed=seed)
        for obs in episode.observations:
            assert env.observation_space.contains(obs), (env_id, obs)
        return [_flat_obs(o) for o in episode.observations], episode.rewards, episode.info

    a, b, c = collect(11), collect(11), collect(12)
    assert len(a[0]) == len(b[0]) and all(np.array_equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    assert a[1] == b[1]
    assert "is_success" in a[2] and isinstance(a[2]["is_success"], bool)
    del c  # a different seed is allowed to coincide (e.g. short episodes); only determinism is required


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_rgb_render(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    assert env.metadata.get("render_fps", 0) > 0
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert min(frame.shape[:2]) >= 24, "upscaled so a person can read it"
    assert frame.std() > 0, "not a blank frame"
    env.close()


@pytest.mark.parametrize("env_id", TEXT_IDS)
def test_ansi_render(env_id: str) -> None:
    env = gym.make(env_id, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str) and text.strip()


@pytest.mark.parametrize("env_id", TEXT_IDS)
def test_bad_render_mode(env_id: str) -> None:
    with pytest.raises(ValueError, match="render_mode"):
        type(gym.make(env_id).unwrapped)(render_mode="video")
