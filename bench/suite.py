"""The memory suite: every memory on every memory task, scored on one scale.

    python -m bench.suite run --profile quick --out-dir runs/suite-quick --jobs 2
    python -m bench.suite report runs/suite-quick

``run`` trains each memory of the profile (:data:`PROFILE_MEMORIES`) on each task of :data:`TASKS` × seeds, one
``python -m train.a2c`` (or ``train.ppo``) process per cell, ``--jobs`` at a time, in
``OUT_DIR/<task>/<memory>-s<seed>``, through an Optuna study as ``train.compare run`` does (``--storage``,
``--study-name``: several workers share the cells); finished cells are kept, so the same command resumes an
interrupted suite. Then it writes the report. Every memory of a task shares the task's algorithm, budget and
hyperparameters (its ``train/hyperparams.yml`` entry, which has no per-memory options): no memory is tuned more
than another.

``report`` scores each run by its final deterministic evaluation (100 episodes), normalised per task so that
0 is the best a memoryless policy can do and 1 is optimal (both from the envs table in the README), and writes
``suite.json``, ``suite.md``, ``curves.png`` (normalised evaluation return per task, mean ± std over seeds) and
``aggregate.png`` (interquartile mean over tasks and seeds with 95% stratified-bootstrap confidence intervals,
Agarwal et al. 2021, computed with ``rliable``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fw_agents.memory.fast_weights import balanced_fast_learning_rate
from fw_agents.registry import memory_names
from train import grid as grids
from train import runs as runs_
from train.cli import ArgumentParser, CLIError, check_json_path, cli_main, load_yaml, seed_int, write_json
from train.spec import RunSpec

#: Bumped whenever a task, budget, hyperparameter or score constant changes: results of two versions differ.
#: 2: the T-mazes moved to their -v1 ids (version 1's -v0 mazes were not learned by any agent), with budgets
#: 300k (quick) and 500k / 1M (full), and TMazePassive-L10-v1 joined; MiniGrid's score constants measured
#: (S7 0.48 / 0.95 -> 0.486 / 0.952; S9's estimates 0.49 / 0.97 -> 0.491 / 0.965); Catch's learning rate decays
#: linearly (hyperparams.yml).
#: 3: MiniGrid's entropy coefficient 0.01 -> 0.03 (hyperparams.yml's ppo entries): at 0.01 one seed in three of fast
#: weights and most LSTM seeds never learned to look at the cue.
#: 4: MiniGrid's BPTT chunks 8 -> 16 steps, counted from each episode's start (fw_agents.RecurrentPPO), so that the
#: cue and the choice share a chunk; the fast-weights gate's bias starts chrono-initialised (the policies' default).
#: 5: POPGym's tasks (the ``popgym`` profile, scored by sampled actions against the suite's memoryless runs); the
#: fast-weights policies' LN gain starts at 0.3 (the paper's variant pins 1); every final evaluation records both
#: ways of acting.
SUITE_VERSION = 5
#: Normalised score a run must reach for "steps to 0.9".
STEPS_THRESHOLD = 0.9
#: Evaluations per run (the periodic evaluations behind the curves and the steps to 0.9).
EVALUATIONS = 20


@dataclass(frozen=True)
class Task:
    """One suite task: an env, the algorithm and budgets every memory gets, and its score scale.

    :param memoryless_return: the best return a memoryless policy can reach (normalised score 0); None: measured,
        the mean final return of the memoryless baseline's runs of this task in the same suite (:data:`MEMORYLESS`).
    :param optimal_return: the optimal return (normalised score 1).
    :param budgets: env steps per profile; a profile without an entry skips the task.
    :param family: ``"memory"`` (our memory tasks) or ``"popgym"`` (POPGym's), for the per-family aggregates.
    :param deterministic: scored (and evaluated along the way) by deterministic actions; False: by sampled ones.
    """

    name: str
    env_id: str
    algo: str
    memoryless_return: float | None
    optimal_return: float
    budgets: dict[str, int]
    family: str = "memory"
    deterministic: bool = True

    def normalise(self, value: float | np.ndarray, memoryless_return: float | None = None) -> float | np.ndarray:
        """``value`` on the task's scale: 0 the memoryless return (the measured one for a task without a constant),
        1 the optimal return."""
        zero = self.memoryless_return if self.memoryless_return is not None else memoryless_return
        if zero is None:
            raise ValueError(f"task {self.name} is scored against the memoryless runs' return, and none is given")
        return (value - zero) / (self.optimal_return - zero)


#: The memoryless baseline: its runs set the zero of the tasks scored against a measured memoryless return.
MEMORYLESS = "mlp"
#: POPGym's tasks in the suite (Morad et al. 2023; ``envs.popgym``): its diagnostic tasks, control without
#: velocities, noisy control, and its games, each at its Easy level, under both algorithms. Every POPGym return lies
#: in [-1, 1], so 1 is the task maximum; no memoryless bound is known for most of them, so their zero is the suite's
#: own memoryless runs of the same task and algorithm (:data:`MEMORYLESS`). They are scored with sampled actions, as
#: POPGym's own benchmark is: where the best memoryless play is random (Concentration, the bandit), a deterministic
#: memoryless policy is stuck (Concentration: -1.0 deterministic, -0.2 sampled, A2C seed 0).
POPGYM_TASKS: tuple[str, ...] = (
    "RepeatFirst", "RepeatPrevious", "Autoencode", "CountRecall", "PositionOnlyCartPole", "NoisyPositionOnlyPendulum",
    "HigherLower", "MultiarmedBandit", "Concentration", "MineSweeper",
)  # fmt: skip
#: Env steps per POPGym task in the ``popgym`` profile.
POPGYM_BUDGET = 150_000


def popgym_task(family: str, level: str, algo: str, budget: int = POPGYM_BUDGET) -> Task:
    """``popgym_task("RepeatFirst", "Easy", "a2c")``: task ``popgym-repeat-first-easy-a2c`` on
    ``fw_agents/popgym-RepeatFirstEasy-v0``, in the ``popgym`` profile."""
    words = "-".join(re.findall(r"[A-Z][a-z]*", family)).lower()
    return Task(
        f"popgym-{words}-{level.lower()}-{algo}",
        f"fw_agents/popgym-{family}{level}-v0",
        algo,
        None,
        1.0,
        {"popgym": budget},
        family="popgym",
        deterministic=False,
    )


#: The tasks, version :data:`SUITE_VERSION`. Score constants: the README's envs table (memoryless: the best a
#: policy without memory can do, proven or, for CartPole and MiniGrid, measured; MiniGrid's are the mean returns
#: of scripted agents: half of what rushing to the right object earns, and looking at the cue first; the tests
#: measure them).
TASKS: tuple[Task, ...] = (
    Task("cartpole-novel", "fw_agents/CartPoleNoVel-v1", "ppo", 42.0, 500.0, {"quick": 100_000, "full": 100_000}),
    Task("catch-n16", "fw_agents/Catch-N16-M3-v0", "a2c", -0.125, 1.0, {"quick": 1_000_000, "full": 1_500_000}),
    Task("catch-n24", "fw_agents/Catch-N24-M5-v0", "a2c", -1 / 12, 1.0, {"full": 4_000_000}),
    Task("tmaze-passive-l10", "fw_agents/TMazePassive-L10-v1", "a2c", 0.5, 1.0, {"quick": 300_000, "full": 500_000}),
    Task("tmaze-passive-l50", "fw_agents/TMazePassive-L50-v1", "a2c", 0.5, 1.0, {"quick": 300_000, "full": 1_000_000}),
    Task("tmaze-active-l10", "fw_agents/TMazeActive-L10-v1", "a2c", 0.5, 1.0, {"quick": 300_000, "full": 500_000}),
    Task("assoc-k4", "fw_agents/AssociativeRetrieval-K4-v0", "a2c", 0.1, 1.0, {"quick": 500_000, "full": 1_000_000}),
    Task("minigrid-s7", "fw_agents/MiniGrid-MemoryS7-v0", "ppo", 0.486, 0.952, {"full": 1_000_000}),
    Task("minigrid-s9", "fw_agents/MiniGrid-MemoryS9-v0", "ppo", 0.491, 0.965, {"full": 1_000_000}),
    *(popgym_task(family, "Easy", algo) for family in POPGYM_TASKS for algo in ("a2c", "ppo")),
)
TASKS_BY_NAME = {task.name: task for task in TASKS}


@dataclass(frozen=True)
class Memory:
    """A suite entry: a ``--policy`` choice and the policy options that make the variant (none: the defaults)."""

    name: str
    policy: str
    policy_kwargs: dict[str, Any] = field(default_factory=dict)


#: The paper's cell (Ba et al. 2016): η = 0.5, λ = 0.95, S = 1, no gate, fixed rates.
PAPER_FAST_WEIGHTS = {
    "decay_rate": 0.95, "fast_learning_rate": 0.5, "gated": False, "learn_rates": False, "layer_norm_gain": 1.0,
}  # fmt: skip
#: Variants run beside a memory at its defaults.
VARIANTS: dict[str, tuple[Memory, ...]] = {
    "fast-weights": (Memory("fast-weights-paper", "fast-weights", PAPER_FAST_WEIGHTS),),
}
#: Every registered memory (:mod:`fw_agents.registry`) at its defaults, each followed by its variants.
MEMORIES: tuple[Memory, ...] = tuple(
    memory for name in memory_names() for memory in (Memory(name, name), *VARIANTS.get(name, ()))
)
#: Run only when named (``--memories``), measured in docs/results.md §2d: fast weights with LN's gain starting at 1
#: (the version 4 cell), the alternative default weighed against 0.3; the same with the recurrent matrices stepping
#: 0.3 times as far (the LN gain as the recurrence's learning rate); the defaults with the heads reading outputs of
#: gain 1's size (LN gain 0.3 in the cell, outputs × 1/0.3: the heads' input or the cell's); the defaults without
#: the fast term (η = 0, fixed), to tell what the fast weights add to the gated cell around them; that at gain 1; and
#: at gain 0.3 with η starting 1/0.3² times as large (the balanced η for h of gain 0.3's size at H = 128, the
#: hidden size of MiniGrid's and POPGym's settings).
NAMED_ONLY: tuple[Memory, ...] = (
    Memory("fast-weights-ln1", "fast-weights", {"layer_norm_gain": 1.0}),
    Memory("fast-weights-ln1-slow-recurrence", "fast-weights", {"layer_norm_gain": 1.0, "recurrent_step_scale": 0.3}),
    Memory("fast-weights-ln1-heads", "fast-weights", {"output_scale": 1 / 0.3}),
    Memory("fast-weights-no-fast", "fast-weights", {"fast_learning_rate": 0.0, "learn_rates": False}),
    Memory("fast-weights-ln1-no-fast", "fast-weights", {"layer_norm_gain": 1.0, "fast_learning_rate": 0.0,
                                                        "learn_rates": False}),  # fmt: skip
    Memory("fast-weights-eta-for-gain", "fast-weights",
           {"fast_learning_rate": balanced_fast_learning_rate(128, 0.95) / 0.3**2}),  # fmt: skip
)
MEMORIES_BY_NAME = {memory.name: memory for memory in (*MEMORIES, *NAMED_ONLY)}
PROFILES = {"quick": (0,), "full": (0, 1, 2), "popgym": (0, 1, 2)}  # profile -> seeds
#: What a profile runs unless ``--memories`` names others. POPGym's table is of the registered memories at their
#: defaults (its rows: fast weights, LSTM, GRU, memoryless); the paper's cell is the reproduction's variant,
#: on our own tasks, and would add a quarter to the profile's time (docs/results.md §2d).
PROFILE_MEMORIES = {
    "quick": MEMORIES, "full": MEMORIES, "popgym": tuple(Memory(name, name) for name in memory_names()),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- run
def cell_dir(out_dir: Path, task: Task, memory: Memory, seed: int) -> Path:
    return out_dir / task.name / f"{memory.name}-s{seed}"


def grid(args: argparse.Namespace) -> list[grids.Cell]:
    """Every (task, memory, seed) cell of the profile: one spec per task and memory, checked once, copied per seed."""
    out_dir = Path(args.out_dir)
    tasks = [TASKS_BY_NAME[name] for name in args.tasks] if args.tasks else TASKS
    memories = [MEMORIES_BY_NAME[name] for name in args.memories] if args.memories else PROFILE_MEMORIES[args.profile]
    seeds = args.seeds if args.seeds is not None else PROFILES[args.profile]
    for name, chosen in (("--tasks", args.tasks or []), ("--memories", args.memories or []), ("--seeds", seeds)):
        if len(set(chosen)) < len(chosen):
            raise CLIError(f"{name} must not repeat an entry")
    cells = []
    for task in tasks:
        budget = task.budgets.get(args.profile)
        if budget is None:
            if args.tasks:
                raise CLIError(f"task {task.name} is not in the {args.profile} profile; its profiles: {task.budgets}")
            continue
        for memory in memories:
            # One TensorBoard folder per task (as rl-zoo3 keeps one per env): runs are named by memory and seed.
            spec = RunSpec.build(
                task.algo, task.env_id, memory.policy, total_timesteps=budget, policy_kwargs=dict(memory.policy_kwargs),
                eval_freq=budget // EVALUATIONS, checkpoint_freq=0, verbose=0, deterministic_eval=task.deterministic,
                tensorboard_log=str(out_dir / "tb" / task.name), save_dir=out_dir / grids.CELLS_DIR / "checked",
            )  # fmt: skip
            for seed in seeds:
                save_dir = cell_dir(out_dir, task, memory, seed)
                name = save_dir.relative_to(out_dir).as_posix()
                cells.append(grids.Cell(name, spec.model_copy(update={"seed": seed, "save_dir": save_dir})))
    return cells


def run_suite(args: argparse.Namespace) -> int:
    cells = grid(args)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"suite_version": SUITE_VERSION, "profile": args.profile}
    (out_dir / "suite-manifest.json").write_text(json.dumps(manifest) + "\n")
    default_study = f"suite-v{SUITE_VERSION}-{args.profile}-{out_dir.resolve().name}"
    status = grids.GridWorker(cells, out_dir, args, default_study).run()
    if status > 128:  # interrupted
        return status
    write_report(out_dir)
    return status


# ----------------------------------------------------------------------------------------------- report
@dataclass
class CellResult:
    """One run's score: the normalised final return, the steps until an evaluation reached 0.9 (None: never)."""

    task: str
    memory: str
    seed: int
    final_return: float
    score: float
    steps_to_threshold: int | None
    wall_time_s: float | None
    run: str


#: A run's periodic evaluations: env steps and the normalised returns, ``(n,)`` each.
Curve = tuple[np.ndarray, np.ndarray]


def read_run(task: Task, run: Path) -> tuple[dict[str, Any], float, Curve | None] | None:
    """A finished run's config, final return (deterministic or sampled, as ``task`` is scored) and raw evaluation
    curve (None if it logged none); None if the run is unfinished."""
    config = load_yaml(run / runs_.CONFIG_NAME, "run config")
    mode = "deterministic" if task.deterministic else "stochastic"
    final = ((config.get("result") or {}).get(f"final_eval_{mode}") or {}).get("mean_return")
    if final is None:
        return None
    scalars = runs_.run_scalars(run, config, "eval/mean_reward")
    return config, float(final), None if scalars is None else (scalars.steps, scalars.values)


def collect(
    out_dir: Path, zeros: Mapping[str, float] | None = None
) -> tuple[list[CellResult], dict[str, Curve], list[str]]:
    """Every finished cell under ``out_dir`` (``<task>/<memory>-s<seed>``) scored, the normalised curves by run
    folder (each run's TensorBoard log is read once, for the steps to 0.9 and for the plot), and the tasks that
    could not be scored (a measured zero without memoryless runs).

    :param zeros: a measured zero per task, for the tasks whose memoryless runs are not in ``out_dir`` (those of
        another suite of the same version: :func:`run_report`); the folder's own runs come first.
    """
    results: list[CellResult] = []
    curves: dict[str, Curve] = {}
    unscored: list[str] = []
    for task in TASKS:
        task_dir = out_dir / task.name
        if not task_dir.is_dir():
            continue
        found = {}
        for run in sorted(p for p in task_dir.iterdir() if (p / runs_.CONFIG_NAME).is_file()):
            read = read_run(task, run)
            if read is not None:
                found[run] = read
        memoryless = [final for run, (_, final, _) in found.items() if run.name.rsplit("-s", 1)[0] == MEMORYLESS]
        zero = statistics.fmean(memoryless) if memoryless else (zeros or {}).get(task.name)
        if found and task.memoryless_return is None and zero is None:
            unscored.append(task.name)
            continue
        for run, (config, final, raw_curve) in found.items():
            curve = None if raw_curve is None else (raw_curve[0], task.normalise(raw_curve[1], zero))
            reached = None
            if curve is not None:
                hits = np.flatnonzero(curve[1] >= STEPS_THRESHOLD - 1e-6)
                reached = int(curve[0][hits[0]]) if len(hits) else None
            result = CellResult(
                task=task.name,
                memory=run.name.rsplit("-s", 1)[0],
                seed=int(config["seed"]),
                final_return=final,
                score=float(task.normalise(final, zero)),
                steps_to_threshold=reached,
                wall_time_s=(config.get("result") or {}).get("wall_time_s"),
                run=str(run),
            )
            results.append(result)
            if curve is not None:
                curves[result.run] = curve
    return results, curves, unscored


def aggregate_selection(results: Sequence[CellResult]) -> tuple[list[str], int]:
    """The tasks and runs per task the aggregate uses: rliable needs a (runs, tasks) matrix, so every memory must
    have the same number of runs on each task. Of the tasks every memory ran, keep those where each memory has at
    least ``n`` runs, for the ``n`` that covers the most runs (ties: more tasks), so that one task run with a
    single seed does not cut every other task to one run."""
    memories = sorted({r.memory for r in results})
    shared = set.intersection(*({r.task for r in results if r.memory == m} for m in memories))
    runs = {t: min(sum(r.task == t and r.memory == m for r in results) for m in memories) for t in shared}
    best_n = max(runs.values(), key=lambda n: (n * sum(k >= n for k in runs.values()), -n))
    return sorted(t for t in shared if runs[t] >= best_n), best_n


def aggregate(results: Sequence[CellResult], reps: int = 2000) -> dict[str, dict[str, Any]]:
    """Per memory: the interquartile mean of the normalised scores over the tasks and seeds that
    :func:`aggregate_selection` keeps, with a 95% stratified-bootstrap confidence interval (rliable)."""
    from rliable import library as rly
    from rliable import metrics

    memories = sorted({r.memory for r in results})
    tasks, n_runs = aggregate_selection(results)
    left_out = sorted({r.task for r in results} - set(tasks))
    scores: dict[str, np.ndarray] = {}
    for memory in memories:
        runs = [sorted((r for r in results if (r.memory, r.task) == (memory, t)), key=lambda r: r.seed) for t in tasks]
        scores[memory] = np.array([[r.score for r in task_runs[:n_runs]] for task_runs in runs]).T
    with warnings.catch_warnings():  # arch deprecates the RandomState that rliable hands it
        warnings.simplefilter("ignore", FutureWarning)
        points, intervals = rly.get_interval_estimates(
            scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps, random_state=np.random.RandomState(0)
        )
    return {
        memory: {
            "iqm": float(points[memory][0]),
            "ci_low": float(intervals[memory][0, 0]),
            "ci_high": float(intervals[memory][1, 0]),
            "tasks": len(tasks),
            "runs_per_task": n_runs,
            "tasks_left_out": left_out,
        }
        for memory in memories
    }


def summary(results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Per task and memory: mean and std of the score, steps to 0.9 (median of the seeds that got there), wall time."""
    rows = []
    for task in TASKS:
        for memory in list(MEMORIES_BY_NAME) + sorted({r.memory for r in results} - set(MEMORIES_BY_NAME)):
            group = sorted((r for r in results if r.task == task.name and r.memory == memory), key=lambda r: r.seed)
            if not group:
                continue
            scores = [r.score for r in group]
            reached = [r.steps_to_threshold for r in group if r.steps_to_threshold is not None]
            walls = [r.wall_time_s for r in group if r.wall_time_s is not None]
            rows.append(
                {
                    "task": task.name,
                    "memory": memory,
                    "seeds": [r.seed for r in group],
                    "scores": scores,
                    "score_mean": statistics.fmean(scores),
                    "score_std": statistics.pstdev(scores),
                    "reached": len(reached),
                    "steps_to_threshold_median": statistics.median(reached) if reached else None,
                    "wall_time_s_mean": statistics.fmean(walls) if walls else None,
                }
            )
    return rows


def aggregate_groups(results: Sequence[CellResult]) -> dict[str, list[CellResult]]:
    """The runs behind each aggregate: ``all`` of them, and where the suite mixes them, each task family's (``memory``,
    ``popgym``) and, for a family whose envs run under several algorithms, each algorithm's (``popgym/a2c``)."""
    by_name = {task.name: task for task in TASKS}
    groups = {"all": list(results)}
    families = sorted({by_name[r.task].family for r in results})
    for family in families:
        members = [r for r in results if by_name[r.task].family == family]
        if len(families) > 1:
            groups[family] = members
        envs = {}
        for r in members:
            envs.setdefault(by_name[r.task].algo, set()).add(by_name[r.task].env_id)
        if len(envs) > 1 and all(e == next(iter(envs.values())) for e in envs.values()):
            groups.update({f"{family}/{a}": [r for r in members if by_name[r.task].algo == a] for a in sorted(envs)})
    return groups


def markdown(
    rows: Sequence[dict[str, Any]], totals: dict[str, dict[str, float]], groups: dict[str, Any] | None = None
) -> str:
    """The per-task table and the aggregate over every task (``totals``), then one per group (:func:`aggregate_groups`)
    besides ``all``."""
    lines = [
        f"| task | memory | normalised score, mean ± std (per seed) | steps to {STEPS_THRESHOLD} (reached) | "
        "wall time (s) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        per_seed = " / ".join(f"{s:.2f}" for s in row["scores"])
        steps = row["steps_to_threshold_median"]
        wall = row["wall_time_s_mean"]
        lines.append(
            f"| {row['task']} | {row['memory']} | {row['score_mean']:.2f} ± {row['score_std']:.2f} ({per_seed}) | "
            f"{'—' if steps is None else f'{steps / 1000:.0f}k'} ({row['reached']}/{len(row['scores'])}) | "
            f"{'—' if wall is None else f'{wall:.0f}'} |"
        )
    lines += ["", "| memory | IQM over tasks and seeds [95% CI] | tasks × runs |", "|---|---|---|"]
    for memory, total in sorted(totals.items(), key=lambda item: -item[1]["iqm"]):
        lines.append(
            f"| {memory} | {total['iqm']:.2f} [{total['ci_low']:.2f}, {total['ci_high']:.2f}] | "
            f"{total['tasks']} × {total['runs_per_task']} |"
        )
    left_out = next(iter(totals.values()))["tasks_left_out"]
    if left_out:
        lines += ["", f"Not in the aggregate (fewer runs or not every memory): {', '.join(left_out)}."]
    for name, group in (groups or {}).items():
        if name == "all":
            continue
        ranked = sorted(group.items(), key=lambda item: -item[1]["iqm"])
        scores = "; ".join(f"{m} {t['iqm']:.2f} [{t['ci_low']:.2f}, {t['ci_high']:.2f}]" for m, t in ranked)
        size = ranked[0][1]
        lines += ["", f"IQM over the {name} tasks [95% CI]: {scores} ({size['tasks']} × {size['runs_per_task']})."]
    return "\n".join(lines) + "\n"


def plot_curves(results: Sequence[CellResult], curves_by_run: dict[str, Curve], out: Path) -> None:
    """Normalised evaluation return against env steps, one panel per task, mean ± std over seeds per memory."""
    from train.plot import mean_and_std, plt

    tasks = [task for task in TASKS if any(r.task == task.name for r in results)]
    # One colour per memory across panels (the legend is drawn once), whichever memories a panel has.
    colors = {memory: f"C{i}" for i, memory in enumerate(dict.fromkeys(r.memory for r in results))}
    columns = min(4, len(tasks))
    rows_ = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(4.5 * columns, 3.6 * rows_), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for memory in dict.fromkeys(r.memory for r in results if r.task == task.name):
            curves = [
                curves_by_run[r.run]
                for r in results
                if r.task == task.name and r.memory == memory and r.run in curves_by_run
            ]
            if curves:
                grid_, mean, std = mean_and_std(curves, 100)
                ax.plot(grid_, mean, label=memory, color=colors[memory])
                ax.fill_between(grid_, mean - std, mean + std, color=colors[memory], alpha=0.2, linewidth=0)
        ax.set_title(task.name)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("normalised eval return")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=color, label=memory) for memory, color in colors.items()]
    axes.flat[0].legend(handles=handles, fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_aggregate(totals: dict[str, dict[str, float]], out: Path) -> None:
    from train.plot import plt

    memories = sorted(totals, key=lambda m: totals[m]["iqm"])
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(memories) + 1.2))
    for i, memory in enumerate(memories):
        total = totals[memory]
        ax.plot([total["ci_low"], total["ci_high"]], [i, i], linewidth=6, alpha=0.5)
        ax.plot([total["iqm"]], [i], "k|", markersize=14)
    ax.set_yticks(range(len(memories)), memories)
    ax.set_xlabel("IQM of normalised score (95% stratified-bootstrap CI)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def payload(results: Sequence[CellResult], unscored: Sequence[str], manifest: Mapping[str, Any]) -> tuple[str, Any]:
    """The report's table (markdown) and its JSON (``manifest`` first: the suite's version and profile)."""
    table, groups = render(results)
    if unscored:
        table += f"\nNot scored (no {MEMORYLESS} runs to set their zero): {', '.join(unscored)}.\n"
    return table, {
        **manifest,
        "aggregate": groups["all"],
        "aggregates": groups,
        "unscored_tasks": list(unscored),
        "summary": summary(results),
        "runs": [asdict(r) for r in results],
    }


def write_report(out_dir: Path, memories: Sequence[str] | None = None) -> None:
    results, curves, unscored = collect(out_dir)
    results = [r for r in results if memories is None or r.memory in memories]
    if not results and unscored:
        raise CLIError(f"no run under {out_dir} could be scored: {', '.join(unscored)} have no {MEMORYLESS} runs to "
                       f"set their zero; run --memories {MEMORYLESS} into it, or score it against a suite that has "
                       f"them: python -m bench.suite report SUITE.json {out_dir}")  # fmt: skip
    if not results:
        raise CLIError(f"no finished suite runs under {out_dir}")
    manifest_path = out_dir / "suite-manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    table, report = payload(results, unscored, manifest)
    write_json(out_dir / "suite.json", report)
    (out_dir / "suite.md").write_text(table)
    plot_curves(results, curves, out_dir / "curves.png")
    plot_aggregate(report["aggregate"], out_dir / "aggregate.png")
    print(table)
    print(f"wrote {out_dir / 'suite.json'}, suite.md, curves.png and aggregate.png")


def render(results: Sequence[CellResult]) -> tuple[str, dict[str, Any]]:
    """The report's table (markdown) and its aggregates, per group (:func:`aggregate_groups`)."""
    groups = {name: aggregate(members) for name, members in aggregate_groups(results).items()}
    return markdown(summary(results), groups["all"], groups), groups


def read_suite_json(source: Path) -> tuple[dict[str, Any], list[CellResult]]:
    """A suite JSON file (as the report writes it; the committed ones in docs/results/suite): its manifest, its runs."""
    try:
        data = json.loads(source.read_text())
        results = [CellResult(**{key: run[key] for key in CellResult.__dataclass_fields__}) for run in data["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CLIError(f"{source} is neither a suite's folder nor its suite.json ({error})") from None
    return {key: data[key] for key in ("suite_version", "profile") if key in data}, results


def run_report(args: argparse.Namespace) -> int:
    """A suite's folder: score its runs and write the report there. Several sources (suite folders and suite JSON
    files): their runs together, printed, and with ``--json`` written there. A folder's runs of a task scored
    against memoryless runs that the folder lacks take their zero from the memoryless runs of the JSON files
    (another suite of the same version: a memory run later, beside a suite that has the memoryless runs)."""
    sources = [Path(source) for source in args.sources]
    if len(sources) == 1 and sources[0].is_dir() and args.json is None:
        write_report(sources[0], args.memories)
        return 0
    check_json_path(args.json)
    manifest, results = {}, []
    for source in (s for s in sources if not s.is_dir()):
        source_manifest, source_results = read_suite_json(source)
        manifest, results = {**source_manifest, **manifest}, results + source_results
    if manifest.get("suite_version", SUITE_VERSION) != SUITE_VERSION and any(s.is_dir() for s in sources):
        raise CLIError(f"the JSON files are of suite version {manifest['suite_version']}, this suite's is "
                       f"{SUITE_VERSION}: their memoryless runs cannot score its folders")  # fmt: skip
    by_task: dict[str, list[float]] = {}
    for r in results:
        if r.memory == MEMORYLESS:
            by_task.setdefault(r.task, []).append(r.final_return)
    zeros = {task: statistics.fmean(finals) for task, finals in by_task.items()}
    unscored: list[str] = []
    for folder in (s for s in sources if s.is_dir()):
        folder_results, _, folder_unscored = collect(folder, zeros)
        results, unscored = results + folder_results, unscored + folder_unscored
    results = [r for r in results if args.memories is None or r.memory in args.memories]
    if not results:
        raise CLIError(f"no finished suite runs in {', '.join(map(str, sources))}")
    unknown = sorted({r.task for r in results} - set(TASKS_BY_NAME))
    if unknown:
        raise CLIError(f"{', '.join(unknown)}: not tasks of suite version {SUITE_VERSION}")
    counts = Counter(f"{r.task}/{r.memory}-s{r.seed}" for r in results)
    repeated = sorted(run for run, count in counts.items() if count > 1)
    if repeated:
        raise CLIError(f"the same run in two sources: {', '.join(repeated)}")
    table, report = payload(results, sorted(set(unscored)), {"suite_version": SUITE_VERSION, **manifest})
    print(table)
    if args.json is not None:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m bench.suite", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    run = subparsers.add_parser("run", help="train every memory on every task x seeds, then write the report")
    run.add_argument("--profile", choices=sorted(PROFILES), default="quick", help="budgets and seeds (default: quick)")
    run.add_argument("--out-dir", required=True, metavar="DIR")
    run.add_argument("--tasks", nargs="+", choices=list(TASKS_BY_NAME), help="a subset of the tasks")
    run.add_argument("--memories", nargs="+", choices=list(MEMORIES_BY_NAME),
                     help="these memories instead of the profile's (popgym: the registered ones at their defaults; "
                     "quick, full: those and the paper's cell)")  # fmt: skip
    run.add_argument(
        "--seeds", nargs="+", type=seed_int, metavar="N",
        help="instead of the profile's (quick: 0; full, popgym: 0 1 2)",
    )  # fmt: skip
    grids.add_grid_arguments(run, default_study="suite-v<version>-<profile>-<name of OUT_DIR>")
    run.set_defaults(func=run_suite)
    report = subparsers.add_parser("report", help="score the finished runs (suite.json, suite.md, plots), or render "
                                   "suite JSON files again")  # fmt: skip
    report.add_argument("sources", nargs="+", metavar="DIR|SUITE.json", help="a suite's folder, or suite JSON files")
    report.add_argument("--memories", nargs="+", choices=list(MEMORIES_BY_NAME), help="only these memories' runs (the "
                        "aggregate then covers every task they all ran)")  # fmt: skip
    report.add_argument("--json", type=Path, metavar="OUT.json", help="write the report of several sources there")
    report.set_defaults(func=run_report)
    return parser


#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = cli_main(build_parser, lambda args: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
