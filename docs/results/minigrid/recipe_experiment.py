"""MiniGrid MemoryS7 (3x3 view): which part of the published recurrent-PPO recipe gets an LSTM past guessing?

    python docs/results/minigrid/recipe_experiment.py VARIANT SEED STEPS   # VARIANT: chunk8 | chunk8-shared-gradient

Both variants: fw_agents.RecurrentPPO with BPTT chunks of 8 steps (sequence_length=8), 16 envs x 256 steps,
4 epochs x 8 minibatches, lr 2e-4, entropy 1e-3, clip 0.2, LSTM 128 on the symbolic view, 3 actions.
``chunk8-shared-gradient`` also makes the critic use the actor's LSTM with its gradient flowing into it (as in
MarcoMeter/recurrent-ppo-truncated-bptt; sb3-contrib's ``shared_lstm`` detaches the critic's gradient). Writes
``[env steps, rollout success rate, mean episode length, seconds]`` after every 4th rollout to a JSON file.
"""

import json
import sys
import time

import numpy as np
import torch
from sb3_contrib.common.recurrent.policies import RecurrentMultiInputActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers fw_agents/MiniGrid-*)
from fw_agents import MiniGridSymbolicExtractor, RecurrentPPO


class SharedGradientLstmPolicy(RecurrentMultiInputActorCriticPolicy):
    """The critic runs the actor's LSTM (same module, computed twice), so the value loss trains the memory."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lstm_critic = self.lstm_actor


class Curve(BaseCallback):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path, self.rows, self.start = path, [], time.time()

    def _on_rollout_end(self) -> None:
        success = np.mean(self.model.ep_success_buffer) if self.model.ep_success_buffer else float("nan")
        length = np.mean([info["l"] for info in self.model.ep_info_buffer]) if self.model.ep_info_buffer else np.nan
        self.rows.append((self.num_timesteps, float(success), float(length), time.time() - self.start))
        if len(self.rows) % 4 == 0:
            with open(self.path, "w") as file:
                json.dump(self.rows, file)

    def _on_step(self) -> bool:
        return True


if __name__ == "__main__":
    variant, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    env = make_vec_env("fw_agents/MiniGrid-MemoryS7-v0", n_envs=16, seed=seed, env_kwargs={"n_actions": 3})
    policy = SharedGradientLstmPolicy if variant == "chunk8-shared-gradient" else RecurrentMultiInputActorCriticPolicy
    model = RecurrentPPO(
        policy,
        env,
        n_steps=256,
        batch_size=512,
        n_epochs=4,
        learning_rate=2e-4,
        ent_coef=1e-3,
        clip_range=0.2,
        sequence_length=8,
        policy_kwargs=dict(lstm_hidden_size=128, features_extractor_class=MiniGridSymbolicExtractor),
        seed=seed,
    )
    model.learn(steps, callback=Curve(f"s7_{variant}_s{seed}.json"))
