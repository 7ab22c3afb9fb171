"""Seconds per RecurrentPPO update on MiniGrid MemoryS7 (16 envs x 256 steps, 4 epochs x 8 minibatches, H 128),
with sb3-contrib's whole-episode sequences and with BPTT chunks of 8; the two interleaved in one process, so that
machine noise hits both alike; best of 3 updates each.

    python docs/results/minigrid/update_speed.py     # writes update_seconds_s7.json
"""

import json
import time

import torch
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401
from fw_agents import MiniGridSymbolicExtractor, RecurrentPPO

STEPS = 16 * 256  # one update

if __name__ == "__main__":
    torch.set_num_threads(1)
    results = {}
    for policy in ("MultiInputLstmPolicy", "MultiInputFastWeightsPolicy"):
        size = "lstm_hidden_size" if "Lstm" in policy else "hidden_size"
        models = {}
        for length in (None, 8):
            env = make_vec_env("fw_agents/MiniGrid-MemoryS7-v0", n_envs=16, seed=0, env_kwargs={"n_actions": 3})
            kwargs = {size: 128, "features_extractor_class": MiniGridSymbolicExtractor}
            models[length] = RecurrentPPO(
                policy, env, n_steps=256, batch_size=512, n_epochs=4, policy_kwargs=kwargs, sequence_length=length
            )
            models[length].learn(STEPS)  # warm-up
        seconds = {length: [] for length in models}
        for _ in range(3):
            for length, model in models.items():
                start = time.perf_counter()
                model.learn(STEPS, reset_num_timesteps=False)
                seconds[length].append(time.perf_counter() - start)
        results[policy] = {str(length): min(times) for length, times in seconds.items()}
        print(policy, results[policy], flush=True)
    with open("update_seconds_s7.json", "w") as file:
        json.dump(results, file)
