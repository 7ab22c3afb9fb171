"""Benchmarks: ``python -m bench.speed <subcommand> [options]``.

Subcommands:
  envs         env steps per second of every registered ``fw_agents/*`` id (random actions, auto-reset).
  core         memory cores alone: forward+backward time and saved memory (:mod:`bench.speed_models`).
  throughput   training env steps/s and peak memory of recurrent agents (:mod:`bench.speed_models`).
  models       core and throughput in one run (one JSON with both).

Adding a subcommand: write ``add_<name>_parser(subparsers)`` that builds its parser and sets
``func=<callable(args) -> int>`` via ``set_defaults``, and append it to :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from bench import speed_models
from train.cli import ArgumentParser, CLIError, cli_main, positive_int, seed_int


# --- envs ---------------------------------------------------------------------------------------------------
def env_steps_per_second(env_id: str, steps: int, repeats: int, seed: int = 0) -> list[float]:
    """Steps/s of ``gymnasium.make(env_id)`` (with its default wrappers), one number per repeat.

    Actions are drawn up front (so the timing is the env's, not the sampler's); episodes auto-reset inside
    the timed loop, since resets are part of what training pays for.
    """
    env = gym.make(env_id)
    env.reset(seed=seed)
    space = env.action_space
    rng = np.random.default_rng(seed)
    if isinstance(space, gym.spaces.Discrete):
        actions: Sequence[Any] = (space.start + rng.integers(space.n, size=steps)).tolist()
    else:
        space.seed(seed)
        actions = [space.sample() for _ in range(steps)]
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        rates.append(steps / (time.perf_counter() - start))
    env.close()
    return rates


def run_envs(args: argparse.Namespace) -> int:
    import envs  # registers the ids; imported here so other subcommands don't pay for MiniGrid

    ids = [i for i in envs.registered_ids() if any(fnmatch.fnmatch(i, p) for p in args.ids)]
    if not ids:
        raise CLIError(f"no registered id matches {args.ids}")
    results = []
    if not args.json:
        print(f"{'env id':<42} {'steps/s (median)':>17} {'min - max':>19}   ({args.repeats} x {args.steps} steps)")
    for env_id in ids:
        rates = env_steps_per_second(env_id, args.steps, args.repeats, args.seed)
        row = {"env_id": env_id, "median": statistics.median(rates), "min": min(rates), "max": max(rates)}
        results.append(row)
        if not args.json:
            print(f"{env_id:<42} {row['median']:>17,.0f} {row['min']:>9,.0f} - {row['max']:>7,.0f}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def add_envs_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("envs", help="env steps per second of every registered fw_agents/* id")
    parser.add_argument("--ids", nargs="+", default=["*"], help="glob patterns of ids to run (default: all)")
    parser.add_argument("--steps", type=positive_int, default=20_000, help="steps per repeat (default: 20000)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="repeats; the median is reported (default: 5)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_envs)


# --- command line -------------------------------------------------------------------------------------------
#: One entry per subcommand; each adds its parser and sets ``func``.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_envs_parser, *speed_models.SUBCOMMANDS]


def build_parser() -> argparse.ArgumentParser:
    # ArgumentParser: usage errors are one line; subparsers inherit the class.
    parser = ArgumentParser(prog="python -m bench.speed", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = cli_main(build_parser, lambda args: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
