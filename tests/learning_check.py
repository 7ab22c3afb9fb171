"""The recurrent-policy learning check sb3-contrib sets for its LSTM, run for any registered memory.

CartPole without velocities (``fw_agents/CartPoleNoVel-v1``, observation ``[x, θ]``, 500-step limit),
RecurrentPPO with rl-zoo3's tuned ``CartPoleNoVel-v1`` settings (read from ``train/hyperparams.yml``'s ``ppo``
entry, their one copy), evaluated every ``eval_freq`` steps (10 deterministic episodes) until the mean return
reaches the threshold.

    python -m tests.learning_check --policy fast-weights lstm mlp --seeds 0 1 2

prints, per run, the steps and seconds to reach the threshold and the best evaluation return.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass

import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold

import envs  # noqa: F401  (registers fw_agents/CartPoleNoVel-v1)
from fw_agents.registry import get_memory, memory_names
from train.spec import RunSpec

ENV_ID = "fw_agents/CartPoleNoVel-v1"


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
    """Train memory ``policy`` until the evaluation mean reaches ``threshold`` or ``budget`` steps pass."""
    th.set_num_threads(1)
    # The run specification the CLIs use: hyperparams.yml's entry, memory_kwargs folded in, every value checked.
    spec = RunSpec.build(
        "ppo", ENV_ID, policy, policy_kwargs=memory_kwargs, seed=seed, save_dir=tempfile.mkdtemp(), tensorboard_log=None
    )
    n_envs = spec.hyperparams["n_envs"]
    env = spec.make_env(n_envs, seed)
    eval_env = spec.make_env(1, seed + 1000, training=False)
    kwargs = spec.model_kwargs()
    kwargs.pop("sequence_length", None)  # fw_agents.RecurrentPPO's; not in this entry
    model = RecurrentPPO(get_memory(policy).policy("Mlp"), env, **kwargs)  # sb3-contrib's own algorithm: the drop-in
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
        eval_freq=eval_freq // n_envs,
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
    parser.add_argument("--policy", nargs="+", default=["fast-weights", "lstm"], choices=memory_names())
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--memory-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"decay_rate\": 0.9}'")
    args = parser.parse_args()
    for policy in args.policy:
        for seed in args.seeds:
            print(run(policy, seed, args.budget, memory_kwargs=args.memory_kwargs), args.memory_kwargs, flush=True)


if __name__ == "__main__":
    main()
