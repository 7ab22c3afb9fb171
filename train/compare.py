"""Compare memories on one task: ``python -m train.compare {run,table} …``.

``run`` trains a grid of agents, one per policy and seed, each with ``python -m train.a2c`` (or ``train.ppo``) in
its own process and run folder ``OUT_DIR/<name>-s<seed>`` (log in ``OUT_DIR/<name>-s<seed>.log``), ``--jobs`` at a
time; options after ``--`` go to every run (except those the grid sets itself: ``--env``, ``--policy``,
``--seed``, ``--save-dir``, ``--tensorboard-log``). The grid runs through an Optuna study (:mod:`train.grid`;
``--storage``, default ``OUT_DIR/optuna-journal.log``, and ``--study-name``): the same command started several
times, or on several machines pointed at one storage, shares the runs, each trained once, and a run whose worker
died is retried. Runs that already finished are kept and skipped, so an interrupted grid can be started again
with the same command.

``table`` reads run folders and reports, per env and variant (policy, plus any setting that differs between its
runs), each seed's environment steps and wall-clock seconds until the periodic evaluation's success rate
(``eval/success_rate``: deterministic policy) first reached ``--threshold``, its best evaluation, and the final
evaluation's success rate.

    python -m train.compare run --env fw_agents/Catch-N16-M3-v0 --policies fast-weights lstm gru mlp \\
        --seeds 0 1 2 --out-dir runs/catch16 --jobs 2 -- --eval-freq 50000
    python -m train.compare table runs/catch16 --threshold 0.9
    python -m train.plot runs/catch16 --tag eval/success_rate --out catch16.png
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fw_agents.registry import memory_names
from train import grid
from train import runs as runs_
from train.cli import ArgumentParser, CLIError, check_json_path, cli_main, float_in, seed_int, write_json
from train.spec import ALGORITHMS

SUCCESS_TAG = "eval/success_rate"


# ----------------------------------------------------------------------------------------------- run
#: Training options the grid sets for each run -> this command's option for them. After ``--`` they would make every
#: run the same one (``--seed 7``) or put it where the grid does not look.
GRID_OPTIONS = {
    "env": "--env",
    "policy": "--policies",
    "seed": "--seeds",
    "save_dir": "--out-dir",
    "tensorboard_log": "--out-dir",
    "resume": "--out-dir (the grid resumes its runs)",
    "spec": "--policies",
}


def plan(args: argparse.Namespace) -> list[grid.Cell]:
    """The grid's cells: one spec per policy, checked once, copied per seed."""
    if args.name and len(args.policies) > 1:
        raise CLIError("--name names the runs of one policy; give one --policies entry with it")
    if len(set(args.policies)) < len(args.policies) or len(set(args.seeds)) < len(args.seeds):
        raise CLIError("--policies and --seeds must not repeat an entry")
    out_dir = Path(args.out_dir)
    cells = []
    for policy in args.policies:
        spec = grid.base_spec(
            args.algo,
            args.train_args,
            GRID_OPTIONS,
            out_dir,
            env=args.env,
            policy=policy,
            tensorboard_log=str(out_dir / "tb"),
        )
        for seed in args.seeds:
            name = f"{args.name or policy}-s{seed}"
            cells.append(grid.Cell(name, spec.model_copy(update={"seed": seed, "save_dir": out_dir / name})))
    return cells


def run_grid(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    return grid.GridWorker(plan(args), out_dir, args, default_study=f"compare-{out_dir.resolve().name}").run()


# ----------------------------------------------------------------------------------------------- table
@dataclass
class RunResult:
    """What one run reached: steps and seconds to the threshold (None: not reached), the best periodic value of the
    tag and the final evaluation's (its success rate for a success tag, else its mean return)."""

    env_id: str
    label: str
    seed: int
    steps_to_threshold: int | None
    seconds_to_threshold: float | None
    best_value: float
    final_value: float | None
    total_steps: int | None
    wall_time_s: float | None
    run: str


def run_result(run: Path, config: dict[str, Any], label: str, threshold: float, tag: str) -> RunResult | None:
    """The run's result, or None (reported on stderr) if it logged no ``tag``."""
    scalars = runs_.run_scalars(run, config, tag)
    if scalars is None:
        print(f"skipping {run}: it logged no {tag!r}", file=sys.stderr)
        return None
    # TensorBoard stores float32: 0.9 comes back as 0.8999999762, so allow float32 rounding.
    reached = [i for i, value in enumerate(scalars.values) if value >= threshold - 1e-6]
    started = datetime.fromisoformat(config["started"]).timestamp() if config.get("started") else None
    result = config.get("result") or {}
    final = (result.get("final_eval_deterministic") or {}).get("success_rate" if _is_rate(tag) else "mean_return")
    return RunResult(
        env_id=str(config.get("env_id")),
        label=label,
        seed=int(config.get("seed", -1)),
        steps_to_threshold=int(scalars.steps[reached[0]]) if reached else None,
        seconds_to_threshold=(
            round(float(scalars.wall_times[reached[0]]) - started, 1) if reached and started is not None else None
        ),
        best_value=float(scalars.values.max()),
        final_value=final,
        total_steps=result.get("num_timesteps"),
        wall_time_s=result.get("wall_time_s"),
        run=str(run),
    )


def _steps(value: int | None) -> str:
    return "—" if value is None else f"{value / 1000:.0f}k"


def _is_rate(tag: str) -> bool:
    return tag.endswith("success_rate")


def _value(value: float | None, tag: str) -> str:
    """A success rate as a percentage, any other value (a return) as a number."""
    if value is None:
        return "—"
    return f"{100 * value:.0f}%" if _is_rate(tag) else f"{value:.3g}"


def markdown(results: Sequence[RunResult], threshold: float, tag: str = SUCCESS_TAG) -> str:
    """One row per env and variant: each seed's steps (seconds) to the threshold of ``tag``, then summaries."""
    groups: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for result in results:
        groups[(result.env_id, result.label)].append(result)
    lines = [
        f"| env | variant | steps (s) to {tag} >= {threshold:g}, per seed | reached | median steps | "
        f"best {tag} | final {'success' if _is_rate(tag) else 'return'} | run wall time, median (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (env_id, label), group in sorted(groups.items()):
        group.sort(key=lambda r: r.seed)
        per_seed = ", ".join(
            f"s{r.seed}: {_steps(r.steps_to_threshold)}"
            + (f" ({r.seconds_to_threshold:.0f})" if r.seconds_to_threshold is not None else "")
            for r in group
        )
        reached = [r.steps_to_threshold for r in group if r.steps_to_threshold is not None]
        # Median over all seeds, "not reached" counting as infinitely many steps: defined once half reached.
        median = statistics.median([float(s) for s in reached] + [math.inf] * (len(group) - len(reached)))
        walls = [r.wall_time_s for r in group if r.wall_time_s is not None]
        lines.append(
            f"| {env_id} | {label} | {per_seed} | {len(reached)}/{len(group)} | "
            f"{_steps(int(median)) if math.isfinite(median) else '—'} | "
            f"{' / '.join(_value(r.best_value, tag) for r in group)} | "
            f"{' / '.join(_value(r.final_value, tag) for r in group)} | "
            f"{f'{statistics.median(walls):.0f}' if walls else '—'} |"
        )
    return "\n".join(lines)


def run_table(args: argparse.Namespace) -> int:
    check_json_path(args.json)
    if _is_rate(args.tag) and not 0 <= args.threshold <= 1:
        raise CLIError(f"--threshold of a success rate must be in [0, 1], got {args.threshold:g}")
    configs = runs_.load_configs(runs_.find_runs(args.runs))
    labels = runs_.run_labels(configs)
    found = (run_result(run, config, labels[run], args.threshold, args.tag) for run, config in configs.items())
    results = [result for result in found if result is not None]
    if not results:
        raise CLIError(f"none of the runs logged {args.tag!r}")
    print(markdown(results, args.threshold, args.tag))
    if args.json:
        payload = {"threshold": args.threshold, "tag": args.tag, "runs": [asdict(r) for r in results]}
        write_json(args.json, payload)
    return 0


# ----------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m train.compare", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)

    run = subparsers.add_parser("run", help="train a grid of policies x seeds, a few processes at a time")
    run.add_argument("--env", required=True, metavar="ID", help="env id, as for train.a2c")
    run.add_argument("--algo", choices=sorted(ALGORITHMS), default="a2c", help="trainer (default: a2c)")
    run.add_argument("--policies", nargs="+", choices=memory_names(), default=memory_names())
    run.add_argument("--seeds", nargs="+", type=seed_int, default=[0, 1, 2], metavar="N", help="(default: 0 1 2)")
    run.add_argument("--out-dir", required=True, metavar="DIR", help="where the run folders and TensorBoard logs go")
    run.add_argument("--name", help="folder prefix of the runs, for a variant of one policy (default: the policy)")
    grid.add_grid_arguments(run, default_study="compare-<name of OUT_DIR>")
    run.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then options for every run")
    run.set_defaults(func=run_grid)

    table = subparsers.add_parser("table", help="steps and seconds to a success threshold, final success")
    table.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or folders holding them")
    table.add_argument("--threshold", type=float_in(-math.inf), default=0.9, help="value of --tag to reach (a success "
                       "rate: in [0, 1]; default: 0.9)")  # fmt: skip
    table.add_argument("--tag", default=SUCCESS_TAG, help=f"scalar held against the threshold (default: {SUCCESS_TAG})")
    table.add_argument("--json", type=Path, metavar="OUT", help="also write every run's result to this JSON file")
    table.set_defaults(func=run_table)
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "run" and args.train_args[:1] == ["--"]:
        args.train_args = args.train_args[1:]
    return int(args.func(args))


#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = cli_main(build_parser, dispatch)


if __name__ == "__main__":
    sys.exit(main())
