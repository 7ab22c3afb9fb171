"""What a trained agent answers on associative retrieval: ``python -m bench.retrieval RUN [RUN ...]``.

A run's success rate alone does not say what its memory holds. Two answers tell the strategies apart:

* success by which pair was queried (1 = shown first, K = shown last): a memory that keeps only the latest pair
  answers pair K and guesses the rest (chance 0.1);
* how often the answer is one of the K digits shown: a memory that keeps the digits but not which key each belongs
  to (a bag of values) answers a shown digit nearly always, and is right as often as a guess among them is:
  ``(1 + 0.1·(K − 1)) / K`` (0.325 at K = 4); binding keys to values is what lifts success above that.

Episodes are played one at a time in the run's env (``envs.AssociativeRetrievalEnv``), greedy actions by default,
seeded ``--seed``, ``--seed`` + 1, ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.associative_retrieval import N_DIGITS, N_LETTERS, AssociativeRetrievalEnv
from train.cli import (
    ArgumentParser,
    CLIError,
    add_threads_argument,
    check_json_path,
    cli_main,
    positive_int,
    seed_int,
    write_json,
)
from train.evaluate import load_run, play_episode


def bag_of_values_success(num_pairs: int) -> float:
    """Success of answering a uniformly drawn one of the K shown digits: the queried one, or another pair's digit
    that happens to be equal (probability 0.1 each)."""
    return (1 + (num_pairs - 1) / N_DIGITS) / num_pairs


def answers(run: str | Path, episodes: int, seed: int, deterministic: bool = True) -> dict[str, Any]:
    """Play ``episodes`` of the run's retrieval env: success overall and by queried pair, and the share of answers
    that are one of the digits shown."""
    model, venv, settings = load_run(run)
    venv.close()  # episodes are played in a plain env, whose sequence tells which pair was queried
    env = gym.make(settings["env_id"], **(settings["hyperparams"].get("env_kwargs") or {}))
    retrieval = env.unwrapped
    if not isinstance(retrieval, AssociativeRetrievalEnv):
        env.close()
        raise CLIError(f"{run} was trained on {settings['env_id']}, not an associative retrieval env")
    k = retrieval.num_pairs
    hits, counts, shown = np.zeros(k), np.zeros(k), 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        keys, values = retrieval.sequence[0 : 2 * k : 2], retrieval.sequence[1 : 2 * k : 2] - N_LETTERS
        queried = int(np.flatnonzero(keys == retrieval.sequence[-1])[0])
        *_, (answer, reward) = play_episode(model, env, obs, deterministic)  # the last step answers
        hits[queried] += reward
        counts[queried] += 1
        shown += int(answer) in values
    env.close()
    return {
        "run": str(run),
        "env_id": settings["env_id"],
        "episodes": episodes,
        "success": float(hits.sum() / episodes),
        "success_by_queried_pair": [float(h / c) if c else None for h, c in zip(hits, counts, strict=True)],
        "answer_among_shown_digits": shown / episodes,
        "bag_of_values_success": bag_of_values_success(k),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m bench.retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or model files) of retrieval agents")
    parser.add_argument("--episodes", type=positive_int, default=2000, help="per run (default: 2000)")
    parser.add_argument("--seed", type=seed_int, default=10_000, help="of the first episode (default: 10000)")
    parser.add_argument("--stochastic", action="store_true", help="sampled actions instead of greedy ones")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write the results there")
    add_threads_argument(parser)
    return parser


def run_retrieval(args: argparse.Namespace) -> int:
    check_json_path(args.json)
    results = []
    for run in args.runs:
        result = answers(run, args.episodes, args.seed, deterministic=not args.stochastic)
        by_pair = " / ".join(f"{value:.2f}" for value in result["success_by_queried_pair"] if value is not None)
        print(
            f"{run}: success {result['success']:.3f} (by queried pair, first to last: {by_pair}); answer among the "
            f"shown digits {result['answer_among_shown_digits']:.3f}; a bag of values scores "
            f"{result['bag_of_values_success']:.3f}"
        )
        results.append(result)
    write_json(args.json, results)
    return 0


#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = cli_main(build_parser, run_retrieval)

if __name__ == "__main__":
    sys.exit(main())
