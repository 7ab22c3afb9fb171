"""Writes the saved models that ``tests/policies/test_policy_kwargs.py`` loads, with their expected predictions.

The committed files were written by fw-agents at commit 038bf12, before policies took sb3-contrib's keyword
arguments and stacked layers (``num_layers`` was then the GRU core's own option)::

    git archive 038bf12 | tar -x -C /tmp/old && PYTHONPATH=/tmp/old python tests/policies/data/make_saved_models.py

Only APIs that existed then are used here. Files (``.sb3`` rather than ``.zip``, which .gitignore leaves out;
SB3 loads a zip archive whatever its name): ``<name>.sb3`` models, ``fw_policy.pt`` a standalone
``policy.save()``, ``expected.npz`` the actions and final state of :func:`predictions` for each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

from fw_agents import RecurrentA2C
from fw_agents.policies import FastWeightsActorCriticPolicy, GRUActorCriticPolicy
from tests.toy_env import CueRecallEnv

SMALL = dict(hidden_size=8, net_arch=[16])
#: Every fast-weights option whose default may change is given: a saved model records only the options given.
FAST_WEIGHTS = dict(decay_rate=0.9, fast_learning_rate=0.3)


def make_env():
    return make_vec_env(CueRecallEnv, n_envs=2, seed=0)


def predictions(predict, steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic actions of a predict loop threading the state, and the final actor state ``(1, 2, slot)``."""
    env = make_env()
    obs, state, starts = env.reset(), None, np.ones(env.num_envs, dtype=bool)
    actions = []
    for _ in range(steps):
        action, state = predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, _ = env.step(action)
        actions.append(action)
    return np.array(actions), np.asarray(state[0])


def make_models() -> dict:
    """name -> trained model."""
    ppo = dict(n_steps=16, batch_size=32, n_epochs=2, seed=0)
    fw_kwargs = dict(**SMALL, **FAST_WEIGHTS)
    gru_kwargs = dict(**SMALL, num_layers=2)
    a2c = dict(n_steps=8, seed=0, policy_kwargs=dict(**SMALL, **FAST_WEIGHTS, enable_critic_memory=False))
    return {
        "fw_ppo": RecurrentPPO(FastWeightsActorCriticPolicy, make_env(), policy_kwargs=fw_kwargs, **ppo).learn(64),
        "gru2_ppo": RecurrentPPO(GRUActorCriticPolicy, make_env(), policy_kwargs=gru_kwargs, **ppo).learn(64),
        "fw_a2c": RecurrentA2C("MlpFastWeightsPolicy", make_env(), **a2c).learn(64),
    }


def main(directory: Path) -> None:
    th.manual_seed(0)
    expected = {}
    for name, model in make_models().items():
        model.save(directory / f"{name}.sb3")
        expected[f"{name}_actions"], expected[f"{name}_state"] = predictions(model.predict)
    fw_policy = RecurrentPPO.load(directory / "fw_ppo.sb3").policy
    fw_policy.save(directory / "fw_policy.pt")
    expected["fw_policy_actions"], expected["fw_policy_state"] = predictions(fw_policy.predict)
    np.savez(directory / "expected.npz", **expected)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
