"""MiniGridSymbolicExtractor: shapes, and that SB3 (recurrent) policies train with it on our MiniGrid ids."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.preprocessing import preprocess_obs

import envs  # noqa: F401  (registers the ids)
from envs.minigrid_memory import make_minigrid_env
from fw_agents.extractors import MiniGridSymbolicExtractor

POLICY_KWARGS = {
    "features_extractor_class": MiniGridSymbolicExtractor,
    "features_extractor_kwargs": {"features_dim": 32},
}


@pytest.mark.parametrize("view_size", [3, 5, 7])
def test_output_shape(view_size: int) -> None:
    env = make_minigrid_env(view_size=view_size)
    extractor = MiniGridSymbolicExtractor(env.observation_space, features_dim=48)
    obs, _ = env.reset(seed=0)
    batch = {k: torch.as_tensor(np.stack([v, v])) for k, v in obs.items()}
    features = extractor(preprocess_obs(batch, env.observation_space))
    assert features.shape == (2, 48) and (features >= 0).all()


def test_direction_changes_features() -> None:
    env = make_minigrid_env()
    extractor = MiniGridSymbolicExtractor(env.observation_space)
    obs, _ = env.reset(seed=0)
    batch = {"image": torch.as_tensor(np.stack([obs["image"]] * 4)), "direction": torch.arange(4)}
    features = extractor(preprocess_obs(batch, env.observation_space))
    assert not torch.allclose(features[0], features[1])


@pytest.mark.parametrize(("algo", "policy"), [(PPO, "MultiInputPolicy"), (RecurrentPPO, "MultiInputLstmPolicy")])
def test_trains_with_sb3(algo: type, policy: str) -> None:
    model = algo(
        policy,
        "fw_agents/MiniGrid-MemoryS7-v0",
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        policy_kwargs=POLICY_KWARGS,
        seed=0,
        device="cpu",
    )
    model.learn(64)
    assert isinstance(model.policy.features_extractor, MiniGridSymbolicExtractor)


def test_rejects_non_grid_spaces() -> None:
    with pytest.raises(ValueError, match="image"):
        MiniGridSymbolicExtractor(gym.spaces.Dict({"direction": gym.spaces.Discrete(4)}))
    with pytest.raises(ValueError, match="image"):
        MiniGridSymbolicExtractor(gym.spaces.Dict({"image": gym.spaces.Box(0, 10, (2, 2, 3))}))
