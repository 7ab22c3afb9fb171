"""The recurrent-policy learning check sb3-contrib sets for its LSTM, run for any of our policies.

CartPole without velocities (``fw_agents/CartPoleNoVel-v1``, observation ``[x, θ]``, 500-step limit),
RecurrentPPO with rl-zoo3's tuned ``CartPoleNoVel-v1`` settings, 8 normalised envs, evaluated every
``eval_freq`` steps (10 deterministic episodes) until the mean return reaches the threshold.

    python -m tests.learning_check --policy fast-weights lstm mlp --seeds 0 1 2

prints, per run, the steps and seconds to reach the threshold and the best evaluation return.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

import envs  # noqa: F401  (registers fw_agents/CartPoleNoVel-v1)
from fw_agents import FastWeightsActorCriticPolicy, GRUActorCriticPolicy, NoMemoryActorCriticPolicy

ENV_ID = "fw_agents/CartPoleNoVel-v1"
POLICIES = {
    "fast-weights": (FastWeightsActorCriticPolicy, "hidden_size"),
    "gru": (GRUActorCriticPolicy, "hidden_size"),
    "lstm": ("MlpLstmPolicy", "lstm_hidden_size"),
    "mlp": (NoMemoryActorCriticPolicy, "hidden_size"),
}


@dataclass
class LearningResult:
    policy: str
    seed: int
    steps_to_threshold: int | None
    seconds_to_threshold: float | None
    best_mean_reward: float
    total_seconds: float


def run(
    policy: str,
    seed: int,
    budget: int = 100_000,
    threshold: float = 450.0,
    eval_freq: int = 5_000,
    memory_kwargs: dict | None = None,
) -> LearningResult:
    """Train until the evaluation mean reaches ``threshold`` or ``budget`` steps pass."""
    th.set_num_threads(1)
    policy_class, size_name = POLICIES[policy]
    env = VecNormalize(make_vec_env(ENV_ID, n_envs=8, seed=seed), gamma=0.98)
    eval_env = VecNormalize(make_vec_env(ENV_ID, n_envs=1, seed=seed + 1000), training=False, norm_reward=False)
    model = RecurrentPPO(
        policy_class,
        env,
        n_steps=32,
        batch_size=256,
        n_epochs=20,
        gamma=0.98,
        gae_lambda=0.8,
        ent_coef=0.0,
        learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
        clip_range=LinearSchedule(0.2, 0.0, 1.0),
        policy_kwargs={
            size_name: 64,
            "ortho_init": False,
            "activation_fn": nn.ReLU,
            "net_arch": dict(pi=[64], vf=[64]),
            **(memory_kwargs or {}),
        },
        seed=seed,
    )
    start = time.perf_counter()
    reached: dict[str, float] = {}

    class Timer(StopTrainingOnRewardThreshold):
        def _on_step(self) -> bool:
            keep_going = super()._on_step()
            if not keep_going:
                reached.update(steps=self.num_timesteps, seconds=time.perf_counter() - start)
            return keep_going

    # EvalCallback syncs the normalisation statistics into the frozen eval env before each evaluation.
    evaluation = EvalCallback(
        eval_env,
        eval_freq=eval_freq // 8,
        n_eval_episodes=10,
        callback_on_new_best=Timer(reward_threshold=threshold),
        verbose=0,
    )
    model.learn(budget, callback=evaluation)
    return LearningResult(
        policy,
        seed,
        int(reached["steps"]) if reached else None,
        reached.get("seconds"),
        float(evaluation.best_mean_reward),
        time.perf_counter() - start,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", nargs="+", default=["fast-weights", "lstm"], choices=sorted(POLICIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--memory-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"decay_rate\": 0.9}'")
    args = parser.parse_args()
    for policy in args.policy:
        for seed in args.seeds:
            print(run(policy, seed, args.budget, memory_kwargs=args.memory_kwargs), args.memory_kwargs, flush=True)


if __name__ == "__main__":
    main()
