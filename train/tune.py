"""Search an algorithm's and a memory's hyperparameters with Optuna: ``python -m train.tune``.

    python -m train.tune --algo a2c --env fw_agents/Catch-N16-M3-v0 --policy fast-weights \\
        --n-trials 50 --n-timesteps 300000 --n-evaluations 10 --out-dir runs/tune-catch16
    python -m train.a2c --config runs/tune-catch16/best_hyperparams.yml --policy fast-weights

Each trial samples the algorithm's hyperparameters (:data:`ALGORITHM_SAMPLERS`) and the memory's
(:data:`MEMORY_SAMPLERS`: fast weights' λ, η as a multiple of the balanced η = 2(1−λ)/H, inner steps and H; the
hidden size of the others), then trains with ``python -m train.<algo>`` in its own process and run folder
``OUT_DIR/trial-<number>``, on top of ``train/hyperparams.yml`` (and ``--config`` after ``--``). While the run
trains, the tuner polls its ``evaluations.npz`` and reports each periodic evaluation (mean return; step: the
evaluation's index, 1 to ``--n-evaluations``, as rl-zoo3 does) to Optuna as it appears; a trial the pruner
stops is ended (SIGTERM) and marked PRUNED. A trial's value is its last evaluation's mean return (as
rl-zoo3's). Training in a subprocess keeps one path from argv to a model for every command, lets a worker run
anywhere the command runs, and isolates a crash to its trial.

``--storage``/``--study-name`` as for ``train.compare run``: the same command on several machines (or several
times on one) shares the study until it holds ``--n-trials`` finished trials. With a database URL, a trial whose
worker died is failed after the grace period and run again (Optuna's heartbeat with
``RetryHeartbeatStaleTrialCallback``); Optuna 5's journal storage has no heartbeat, so there such a trial stays
RUNNING and the study samples others. At the end it writes ``best_hyperparams.yml`` (a
flat mapping for ``--config``), ``trials.csv`` and prints the best trial.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, Trial, TrialState

from fw_agents.registry import memory_names
from train import grid, runs
from train.cli import ArgumentParser, CLIError, cli_main, positive_int, seed_int
from train.spec import ALGORITHMS, RunSpec, merge, resolve_env_id

#: Training options the tuner sets for each trial -> the tuner's option for them.
TUNE_OPTIONS = {
    "env": "--env", "policy": "--policy", "seed": "--seed", "save_dir": "--out-dir", "tensorboard_log": "--out-dir",
    "total_timesteps": "--n-timesteps", "eval_freq": "--n-evaluations", "eval_episodes": "--eval-episodes",
    "hparams": "searched space (fixed hyperparameters: --config FILE after --)", "hidden_size": "searched space",
    "policy_kwargs": "searched space (fixed policy options: --config FILE after --)", "resume": "--out-dir",
    "spec": "--config",
}  # fmt: skip
#: Seconds between polls of a trial's evaluations.
POLL_INTERVAL = 0.5
BEST_NAME = "best_hyperparams.yml"
TRIALS_NAME = "trials.csv"
#: RDB storages: seconds between Optuna's heartbeats, and without one before a trial is failed and retried.
HEARTBEAT_INTERVAL, GRACE_PERIOD = 60, 180


# ----------------------------------------------------------------------------------------------- search spaces
#: A sampler: a trial -> hyperparameters (algorithm's) or policy keyword arguments (memory's).
Sampler = Callable[[Trial], dict[str, Any]]


def sample_a2c(trial: Trial) -> dict[str, Any]:
    """RecurrentA2C's hyperparameters (rl-zoo3's A2C ranges, narrowed to recurrent rollouts)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "n_steps": trial.suggest_categorical("n_steps", [8, 16, 32, 64]),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.98, 1.0]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-6, 0.1, log=True),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 1.0, 2.0, 5.0]),
        "use_rms_prop": trial.suggest_categorical("use_rms_prop", [False, True]),
    }


def sample_ppo(trial: Trial) -> dict[str, Any]:
    """RecurrentPPO's hyperparameters (rl-zoo3's PPO ranges)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "n_steps": trial.suggest_categorical("n_steps", [32, 64, 128, 256, 512]),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256, 512]),
        "n_epochs": trial.suggest_categorical("n_epochs", [4, 10, 20]),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.98, 1.0]),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-6, 0.1, log=True),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 1.0, 2.0, 5.0]),
    }


def sample_hidden_size(trial: Trial) -> dict[str, Any]:
    """H, the memory's units: what LSTM, GRU and the memoryless baseline have to search."""
    return {"hidden_size": trial.suggest_categorical("hidden_size", [32, 64, 128, 256])}


def sample_fast_weights(trial: Trial) -> dict[str, Any]:
    """Fast weights: H, λ (``decay_rate``), η (``fast_learning_rate``) as a multiple of the balanced η = 2(1−λ)/H
    (so that one range fits every H and λ), and S (``inner_steps``). With the policy's default
    ``learn_rates=True`` λ and η are the starting values of learned rates."""
    from fw_agents.memory.fast_weights import balanced_fast_learning_rate

    kwargs = sample_hidden_size(trial)
    decay_rate = trial.suggest_float("decay_rate", 0.5, 0.99)
    scale = trial.suggest_float("fast_learning_rate_scale", 0.1, 10.0, log=True)
    return {
        **kwargs,
        "decay_rate": decay_rate,
        "fast_learning_rate": scale * balanced_fast_learning_rate(kwargs["hidden_size"], decay_rate),
        "inner_steps": trial.suggest_int("inner_steps", 1, 3),
    }


ALGORITHM_SAMPLERS: dict[str, Sampler] = {"a2c": sample_a2c, "ppo": sample_ppo}
#: Per ``--policy`` choice; a memory not named here searches its hidden size.
MEMORY_SAMPLERS: dict[str, Sampler] = {"fast-weights": sample_fast_weights}


def sampler_seed(seed: int, trials: Sequence[FrozenTrial]) -> int:
    """The sampler's seed for a worker that finds ``trials`` in the study: ``seed`` for the first worker of a new
    study (reproducible), else mixed with the trials so far, so that a resumed study does not sample its first
    trials again, and with the process id when other workers are running, so that two do not sample alike."""
    if not trials:
        return seed
    running = any(t.state == TrialState.RUNNING for t in trials)
    return hash((seed, len(trials), os.getpid() if running else 0)) % 2**32


def make_sampler(name: str, seed: int, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(name: str, n_startup_trials: int, n_evaluations: int) -> optuna.pruners.BasePruner:
    """rl-zoo3's: the median pruner waits for a third of the evaluations before pruning a trial."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_evaluations // 3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4, min_early_stopping_rate=0)
    return optuna.pruners.NopPruner()


SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")


# ----------------------------------------------------------------------------------------------- trials
class TrainingFailed(Exception):
    """A trial's training process failed: the trial is marked FAIL and the study goes on."""


class Interrupted(Exception):
    """A trial's training process was interrupted (Ctrl-C): the study stops."""


class Objective:
    """Train one trial's run in a subprocess and report its evaluations as they appear."""

    def __init__(self, base: RunSpec, out_dir: Path) -> None:
        self.base, self.out_dir = base, out_dir

    def __call__(self, trial: Trial) -> float:
        base = self.base
        hyperparams = ALGORITHM_SAMPLERS[base.algo](trial)
        policy_kwargs = MEMORY_SAMPLERS.get(base.policy, sample_hidden_size)(trial)
        trial.set_user_attr("hyperparams", {**hyperparams, "policy_kwargs": policy_kwargs})
        save_dir = self.out_dir / f"trial-{trial.number}"
        sampled = merge(base.hyperparams, {**hyperparams, "policy_kwargs": policy_kwargs})
        spec = RunSpec.from_record(base.record(), hyperparams=sampled, save_dir=save_dir)  # checks the sample
        spec_file, log = save_dir.with_suffix(".yml"), save_dir.with_suffix(".log")
        spec_file.write_text(yaml.safe_dump(spec.record(), sort_keys=False))
        process = grid.TrainingProcess(base.algo, ["--spec", str(spec_file), "--no-progress-bar"], log)
        print(f"trial {trial.number}: started {save_dir}  (log: {log})", flush=True)
        try:
            last = self.follow(trial, process, save_dir / "evaluations.npz")
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)  # its own session: the worker forwards Ctrl-C, and the run saves
            process.wait()
            raise
        if process.returncode in (130, -signal.SIGINT):
            raise Interrupted(f"trial {trial.number} interrupted")
        if process.returncode != 0:
            raise TrainingFailed(f"trial {trial.number}: training failed (exit {process.returncode}, see {log})")
        if last is None:
            raise TrainingFailed(f"trial {trial.number}: the run made no evaluation (see {log})")
        print(f"trial {trial.number}: mean return {last:.3f}", flush=True)
        return last

    def follow(self, trial: Trial, process: grid.TrainingProcess, evaluations_path: Path) -> float | None:
        """Report each new evaluation of the running process; stop it if the pruner says so. Returns the last
        evaluation's mean return (None: none)."""
        reported, last = 0, None
        while True:
            running = process.poll() is None
            evaluations = runs.evaluation_scalars(evaluations_path, "eval/mean_reward")
            if evaluations is not None:
                for step, mean in zip(evaluations.steps[reported:], evaluations.values[reported:], strict=True):
                    reported, last = reported + 1, float(mean)
                    trial.report(last, reported)
                    if running and trial.should_prune():
                        process.terminate()
                        process.wait()
                        print(f"trial {trial.number}: pruned at step {step} (mean return {mean:.3f})", flush=True)
                        raise optuna.TrialPruned(f"mean return {mean:.3f} at step {step}")
            if not running:
                return last
            time.sleep(POLL_INTERVAL)


# ----------------------------------------------------------------------------------------------- results
def best_hyperparams(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's hyperparameters as a flat mapping for ``--config`` (sampled values; hyperparams.yml and any
    ``--config`` of the study's runs give the rest)."""
    return trial.user_attrs["hyperparams"]


def write_results(tuned: optuna.Study, out_dir: Path, args: argparse.Namespace) -> FrozenTrial | None:
    """``trials.csv`` (every trial: number, state, value, steps reported, hyperparameters) and, if a trial
    completed, ``best_hyperparams.yml``; returns the best trial."""
    trials = tuned.get_trials(deepcopy=False)
    keys = sorted({key for t in trials for key in t.params})
    with (out_dir / TRIALS_NAME).open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "state", "value", "evaluations", *keys])
        for t in trials:
            row = [t.number, t.state.name, t.value, len(t.intermediate_values)]
            writer.writerow([*row, *(t.params.get(key, "") for key in keys)])
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = tuned.best_trial
    header = (
        f"# python -m train.tune: best of {len(complete)} completed trials of study {tuned.study_name!r} "
        f"(trial {best.number}, mean return {best.value:.4g}), {args.algo} {args.policy} on {args.env}, "
        f"{args.n_timesteps} steps.\n# Use: python -m train.{args.algo} --env {args.env} --policy {args.policy} "
        f"--config {out_dir / BEST_NAME}\n"
    )
    (out_dir / BEST_NAME).write_text(header + yaml.safe_dump(best_hyperparams(best), sort_keys=False))
    return best


# ----------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m train.tune", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--algo", choices=sorted(ALGORITHMS), default="a2c", help="trainer (default: a2c)")
    add("--env", required=True, metavar="ID", help="env id, as for train.a2c")
    add("--policy", choices=memory_names(), default="fast-weights")
    add("--n-trials", type=positive_int, default=20, metavar="N",
        help="finished trials the study should hold, over every worker (default: 20)")
    add("--n-timesteps", "-n", type=positive_int, required=True, metavar="N", help="steps per trial")
    add("--n-evaluations", type=positive_int, default=10, metavar="N",
        help="evaluations per trial, each reported to the pruner (default: 10)")
    add("--eval-episodes", type=positive_int, default=10, metavar="N", help="episodes per evaluation (default: 10)")
    add("--sampler", choices=SAMPLERS, default="tpe", help="(default: tpe)")
    add("--pruner", choices=PRUNERS, default="median", help="(default: median)")
    add("--n-startup-trials", type=int, default=5, metavar="N",
        help="random trials before TPE, unpruned trials before the median pruner (default: 5)")
    add("--seed", type=seed_int, default=0, metavar="N", help="every trial's training seed, the sampler's (default: 0)")
    add("--out-dir", required=True, metavar="DIR", help="trial run folders, logs and results")
    add("--n-jobs", "--jobs", dest="jobs", type=positive_int, default=1, metavar="N",
        help="trials at a time in this worker (default: 1)")
    grid.add_storage_arguments(parser, default_study="tune-<algo>-<env>-<policy>")
    add("train_args", nargs=argparse.REMAINDER, help="-- then options for every trial's run")
    return parser  # fmt: skip


def base_spec(args: argparse.Namespace, out_dir: Path) -> RunSpec:
    """Every trial's spec before sampling: the options after ``--``, the tuner's budget and evaluations."""
    if args.train_args[:1] == ["--"]:
        args.train_args = args.train_args[1:]
    if args.n_startup_trials < 0:
        raise CLIError(f"--n-startup-trials must be >= 0, got {args.n_startup_trials}")
    if args.n_evaluations > args.n_timesteps:
        raise CLIError(f"--n-evaluations ({args.n_evaluations}) must not exceed --n-timesteps ({args.n_timesteps})")
    resolve_env_id(args.env)
    return grid.base_spec(
        args.algo, args.train_args, TUNE_OPTIONS, out_dir, env=args.env, policy=args.policy, seed=args.seed,
        total_timesteps=args.n_timesteps, eval_freq=args.n_timesteps // args.n_evaluations,
        eval_episodes=args.eval_episodes, final_eval_episodes=0, checkpoint_freq=0, verbose=0,
        tensorboard_log=str(out_dir / "tb"),
    )  # fmt: skip


def run_tune(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    base = base_spec(args, out_dir)
    settings = {"algo": args.algo, "env": args.env, "policy": args.policy, "n_timesteps": args.n_timesteps,
                "n_evaluations": args.n_evaluations, "train_args": " ".join(args.train_args)}  # fmt: skip
    name = args.study_name or f"tune-{args.algo}-{args.env.replace('/', '_')}-{args.policy}"
    with warnings.catch_warnings():  # Optuna marks the retry callback experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
    storage = grid.open_storage(
        args.storage,
        out_dir / grid.DEFAULT_STORAGE_NAME,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        grace_period=GRACE_PERIOD,
        heartbeat_stale_trial_callback=retry,
    )
    seed = sampler_seed(args.seed, grid.load_study(storage, name, "tune").get_trials(deepcopy=False))
    tuned = grid.load_study(
        storage,
        name,
        "tune",
        sampler=make_sampler(args.sampler, seed, args.n_startup_trials),
        pruner=make_pruner(args.pruner, args.n_startup_trials, args.n_evaluations),
    )
    for key, value in settings.items():  # a study searches one setting; another one needs its own study
        recorded = tuned.user_attrs.get(key)
        if recorded is not None and recorded != value:
            raise CLIError(f"study {name!r} tunes {key} {recorded!r}, not {value!r}; use another --study-name")
        tuned.set_user_attr(key, value)
    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(tuned.get_trials(deepcopy=False, states=counted))
    print(f"study {name!r}: {done} of {args.n_trials} trials finished before this worker started", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    if done < args.n_trials:
        try:
            tuned.optimize(
                Objective(base, out_dir),
                n_trials=args.n_trials - done,
                n_jobs=args.jobs,
                catch=(TrainingFailed,),
                callbacks=[optuna.study.MaxTrialsCallback(args.n_trials, states=counted)],
            )
        except (KeyboardInterrupt, Interrupted):
            print("interrupted; run this command again to continue the study", file=sys.stderr)
            status = 130
    best = write_results(tuned, out_dir, args)
    if best is None:
        print(f"no trial completed; see {out_dir / TRIALS_NAME} and the trials' logs", file=sys.stderr)
        return status or 1
    print(f"best: trial {best.number}, mean return {best.value:.4g}: {best_hyperparams(best)}")
    print(f"wrote {out_dir / BEST_NAME} (for --config) and {out_dir / TRIALS_NAME}")
    return status


#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = cli_main(build_parser, run_tune)


if __name__ == "__main__":
    sys.exit(main())
