"""fw_agents.atomic: a file is replaced whole or not at all, and never by a model with non-finite values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from fw_agents import RecurrentA2C, atomic
from fw_agents.nonfinite import NonFiniteError


def test_a_failed_write_leaves_the_old_version(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(path) as temporary:
        temporary.write_text("half of the new")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.yml"]
    atomic.save_npz(tmp_path / "evaluations.npz", timesteps=np.arange(3))
    with np.load(tmp_path / "evaluations.npz") as data:
        assert list(data["timesteps"]) == [0, 1, 2]


def test_non_finite_models_and_statistics_are_not_saved(tmp_path: Path) -> None:
    model = RecurrentA2C("MlpLstmPolicy", "CartPole-v1", n_steps=4, policy_kwargs={"lstm_hidden_size": 4})
    path = tmp_path / "model.zip"
    atomic.save_model(model, path)
    good = path.read_bytes()
    with th.no_grad():
        next(model.policy.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteError, match="not saving .*model.zip: the policy's parameter"):
        atomic.save_model(model, path)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]

    import gymnasium as gym

    normalize = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]))
    normalize.obs_rms.mean[0] = np.nan
    with pytest.raises(NonFiniteError, match="statistics are not finite"):
        atomic.save_vecnormalize(normalize, tmp_path / "stats.pkl")
    assert not (tmp_path / "stats.pkl").exists()
