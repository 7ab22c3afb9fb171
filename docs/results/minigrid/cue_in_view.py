"""Diagnostic: MemoryS7 (3x3 view) with the agent placed in column 1 or 2 facing north, so that the cue is in view
at reset and no looking is needed; only remembering it. Does the memory pipeline learn the cue -> choice link?

    python docs/results/minigrid/cue_in_view.py LEARNING_RATE SEQUENCE_LENGTH STEPS   # e.g. 1e-3 8 300000

RecurrentPPO with MiniGrid's `ppo` settings otherwise (16x256, 4 epochs x 8 minibatches, entropy 1e-3, LSTM 128 on
the symbolic view, 3 actions); SEQUENCE_LENGTH "none" replays whole episodes. Writes the curve as
``[steps, rollout success, mean episode length, seconds]`` (``recipe_experiment.Curve``).
"""

import sys

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env

from envs.minigrid_memory import FirstActionsWrapper, SuccessInfoWrapper, SymbolicObsWrapper
from fw_agents import MiniGridSymbolicExtractor, RecurrentPPO

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from recipe_experiment import Curve  # noqa: E402


class CueInView(gym.Wrapper):
    """After MiniGrid's reset, move the agent to column 1 or 2 of its row, facing north: the cue is in view."""

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        grid = self.env.unwrapped
        grid.agent_pos = np.array((int(grid.np_random.integers(1, 3)), grid.height // 2))
        grid.agent_dir = 3
        return grid.gen_obs(), info


def make_env(**_):
    env = gym.make("MiniGrid-MemoryS7-v0", agent_view_size=3, disable_env_checker=True)
    return SuccessInfoWrapper(SymbolicObsWrapper(FirstActionsWrapper(CueInView(env), 3)))


if __name__ == "__main__":
    learning_rate, length, steps = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    sequence_length = None if length == "none" else int(length)
    torch.set_num_threads(1)
    model = RecurrentPPO(
        "MultiInputLstmPolicy",
        make_vec_env(make_env, n_envs=16, seed=0),
        n_steps=256,
        batch_size=512,
        n_epochs=4,
        learning_rate=learning_rate,
        ent_coef=1e-3,
        clip_range=0.2,
        sequence_length=sequence_length,
        policy_kwargs=dict(lstm_hidden_size=128, features_extractor_class=MiniGridSymbolicExtractor),
        seed=0,
    )
    model.learn(steps, callback=Curve(f"s7_cue_in_view_lr{learning_rate:g}_seq{length}.json"))
