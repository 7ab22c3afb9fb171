"""``python -m train.plot RUN_DIR…``: learning curves from TensorBoard event files, mean ± std over seeds.

Each RUN_DIR is a run folder (with ``config.yml``) or a folder searched for them. Runs are grouped by env
(one panel each) and by variant (one line each: the policy, prefixed by the algorithm when several are plotted,
followed by any hyperparameter that differs between runs of that policy, :func:`train.runs.run_labels`); each line
is the mean over the group's runs, interpolated on a common step grid up to the shortest run, with a ± 1 std
band where there are several seeds.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from train import runs as runs_  # noqa: E402
from train.cli import ArgumentParser, CLIError, check_output_path, cli_main, positive_int  # noqa: E402


def collect(runs: Sequence[Path], tag: str) -> dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """``{env: {label: [curve per run]}}``; runs without the tag are reported on stderr and skipped."""
    configs = runs_.load_configs(runs)
    labels = runs_.run_labels(configs)
    groups: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = defaultdict(lambda: defaultdict(list))
    for run, config in configs.items():
        scalars = runs_.run_scalars(run, config, tag)
        if scalars is None:
            print(f"skipping {run}: no {tag!r} in its TensorBoard log", file=sys.stderr)
            continue
        groups[str(config.get("env_id", "?"))][labels[run]].append((scalars.steps, scalars.values))
    if not groups:
        raise CLIError(f"none of the runs logged {tag!r}")
    return groups


def mean_and_std(curves: Sequence[tuple[np.ndarray, np.ndarray]], points: int) -> tuple[np.ndarray, ...]:
    """Interpolate every curve on one grid up to the shortest run; mean and std across runs."""
    end = min(steps[-1] for steps, _ in curves)
    start = max(steps[0] for steps, _ in curves)
    grid = np.linspace(start, end, points) if end > start else np.array([end])
    values = np.stack([np.interp(grid, steps, vals) for steps, vals in curves])
    return grid, values.mean(axis=0), values.std(axis=0)


def plot(groups: dict[str, dict[str, list]], tag: str, out: Path, points: int) -> None:
    """One panel per env, one line (mean ± std) per policy."""
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, (env_id, lines) in zip(axes[0], sorted(groups.items()), strict=True):
        for label, curves in sorted(lines.items()):
            grid, mean, std = mean_and_std(curves, points)
            (line,) = ax.plot(grid, mean, label=f"{label} ({len(curves)} run{'s' * (len(curves) > 1)})")
            if len(curves) > 1:
                ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(tag)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m train.plot",
        description="Learning curves from TensorBoard event files: one line per policy, mean ± std over seeds.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or folders holding them")
    parser.add_argument(
        "--tag",
        default="rollout/ep_rew_mean",
        help="scalar to plot, e.g. rollout/success_rate, eval/mean_reward (default: rollout/ep_rew_mean)",
    )
    parser.add_argument(
        "--out", default="learning_curves.png", metavar="FILE.png", help="output image (default: learning_curves.png)"
    )
    parser.add_argument(
        "--points", type=positive_int, default=200, metavar="N", help="grid points per curve (default: 200)"
    )
    return parser


def run_plot(args: argparse.Namespace) -> int:
    out = check_output_path(args.out, "--out", "file")
    groups = collect(runs_.find_runs(args.runs), args.tag)
    plot(groups, args.tag, out, args.points)
    n_runs = sum(len(curves) for lines in groups.values() for curves in lines.values())
    print(f"wrote {out} ({n_runs} runs, {sum(len(lines) for lines in groups.values())} lines)")
    return 0


#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = cli_main(build_parser, run_plot)


if __name__ == "__main__":
    sys.exit(main())
