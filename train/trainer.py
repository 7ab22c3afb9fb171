"""The training command line shared by ``python -m train.a2c`` and ``python -m train.ppo``.

One function, :func:`train_main`, parameterised by the algorithm's CLI name; the algorithm modules only name
themselves. Order of precedence for hyperparameters (later wins): ``train/hyperparams.yml`` (the algorithm's
``default`` section, then the env's), ``--config FILE``, ``--hparams``, then the dedicated flags
(``--n-envs``, ``--total-timesteps``, ``--hidden-size``, ``--policy-kwargs``).
"""

from __future__ import annotations

import argparse
import inspect
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from fw_agents.atomic import AtomicCheckpointCallback, AtomicEvalCallback
from fw_agents.callbacks import MemoryStatsCallback, RunConfigCallback
from fw_agents.nonfinite import CheckFiniteVecEnv, FiniteParametersCallback
from train import common, safety
from train.common import CLIError

#: Default env per algorithm. A2C: the paper's partially observable Catch (N=16, M=3), which memory agents
#: learn in about 1.5M steps (~3 min on a CPU core) with hyperparams.yml's settings and where fast weights
#: learn in the fewest steps (docs/results.md). PPO: CartPole without velocities, which RecurrentPPO learns
#: with rl-zoo3's settings in 100k steps; no Catch settings are tuned for it.
DEFAULT_ENVS = {"a2c": "fw_agents/Catch-N16-M3-v0", "ppo": "fw_agents/CartPoleNoVel-v1"}
DEFAULT_POLICY = "fast-weights"
#: Options that change the model or its data; a resumed run keeps the ones it was started with.
FIXED_ON_RESUME = ("env", "policy", "seed", "n_envs", "hidden_size", "hparams", "config", "policy_kwargs", "save_dir")
#: Episodes per periodic evaluation; a resumed run keeps its own, so that evaluations.npz stays one array.
DEFAULT_EVAL_EPISODES = 20


def build_parser(algo: str) -> argparse.ArgumentParser:
    """The training CLI's arguments."""
    parser = common.ArgumentParser(
        prog=f"python -m train.{algo}",
        description=f"Train a recurrent agent with {algo.upper()} (fast weights, LSTM, GRU or memoryless).",
    )
    parser.add_argument(
        "--policy",
        choices=list(common.POLICY_MEMORY),
        default=None,
        help=f"memory of the agent (default: {DEFAULT_POLICY}); mlp is the memoryless baseline",
    )
    parser.add_argument(
        "--env",
        default=None,
        metavar="ID",
        help=f"any registered Gymnasium id, 'module:Id' to import first (default: {DEFAULT_ENVS[algo]})",
    )
    parser.add_argument(
        "--n-envs", type=int, metavar="N", default=None, help="parallel envs (default: from hyperparams.yml)"
    )
    parser.add_argument(
        "--total-timesteps",
        type=int,
        metavar="N",
        default=None,
        help="env steps to train (default: n_timesteps from hyperparams.yml; with --resume: "
        "steps to add, default the run's n_timesteps)",
    )
    parser.add_argument("--seed", type=int, metavar="N", default=None, help="random seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--hidden-size", type=int, metavar="N", default=None, help="memory units H (policy_kwargs.hidden_size)"
    )
    parser.add_argument(
        "--hparams",
        nargs="+",
        metavar="KEY=VALUE",
        help="hyperparameter overrides, e.g. learning_rate=lin_7e-4 n_steps=16 normalize=true",
    )
    parser.add_argument(
        "--config",
        metavar="FILE.yml",
        help="hyperparameters from YAML: a flat mapping, {env id: mapping}, or a run's config.yml",
    )
    parser.add_argument(
        "--policy-kwargs",
        nargs="+",
        metavar="KEY=VALUE",
        help="policy keyword overrides, e.g. decay_rate=0.9 net_arch=[64] activation_fn=nn.ReLU",
    )
    parser.add_argument(
        "--tensorboard-log", default="runs", metavar="DIR", help="TensorBoard root, 'none' to disable (default: runs)"
    )
    parser.add_argument(
        "--save-dir",
        default=None,
        metavar="DIR",
        help="run folder (default: runs/<algo>-<env>-<policy>-s<seed>); must be new or empty",
    )
    parser.add_argument(
        "--resume",
        default=None,
        metavar="PATH",
        help="continue a run (its folder, model.zip, or a checkpoint), counting on from its steps",
    )
    parser.add_argument(
        "--eval-freq",
        type=int,
        metavar="N",
        default=None,
        help="env steps between evaluations (default: 1/10 of the run; 0: none)",
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        metavar="N",
        default=None,
        help=f"episodes per periodic evaluation (default: {DEFAULT_EVAL_EPISODES}; a resumed run keeps its own)",
    )
    parser.add_argument(
        "--final-eval-episodes",
        type=int,
        metavar="N",
        default=100,
        help="episodes of the final evaluation in the summary (default: 100; 0: none)",
    )
    parser.add_argument(
        "--checkpoint-freq",
        type=int,
        metavar="N",
        default=None,
        help="env steps between checkpoints (default: 1/5 of the run; 0: none)",
    )
    parser.add_argument(
        "--log-interval",
        type=int,
        default=None,
        metavar="N",
        help="rollouts between log dumps (default: about 100 dumps per run)",
    )
    parser.add_argument(
        "--progress-bar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm/rich progress bar (default: on when stderr is a terminal)",
    )
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1, help="SB3 verbosity (default: 1)")
    safety.add_arguments(parser)
    common.add_threads_argument(parser)
    return parser


# ----------------------------------------------------------------------------------------------- configuration
def _config_file_params(path: str, env_id: str) -> dict[str, Any]:
    """``--config``: a run's ``config.yml`` (its ``hyperparams``), an rl-zoo3-style ``{env id: {...}}`` file, or a
    flat mapping of hyperparameters."""
    data = common.load_yaml(path, "config file")
    if isinstance(data.get("hyperparams"), dict):
        return data["hyperparams"]
    if isinstance(data.get(env_id), dict):
        return data[env_id]
    return data


def _hyperparams(args: argparse.Namespace, algo: str, env_id: str, policy: str) -> tuple[dict[str, Any], list[str]]:
    """Merge the sources of hyperparameters (see the module docstring) -> (effective params, sources).

    ``memory_kwargs[policy]`` is folded into ``policy_kwargs`` so the run's config shows what the policy got.
    """
    params, source = common.default_hyperparams(algo, env_id)
    sources = [source]
    # Each source in fw-agents' option names (sb3-contrib's mapped) before merging: a later source then overrides
    # an earlier one whichever spelling each used.
    if args.config:
        config = _config_file_params(args.config, env_id)
        params = common.merge(params, common.canonical_hyperparams(config, f"--config {args.config}"))
        sources.append(f"--config {args.config}")
    if args.hparams:
        hparams = common.parse_assignments(args.hparams, "--hparams")
        params = common.merge(params, common.canonical_hyperparams(hparams, "--hparams"))
        sources.append("--hparams")
    flags = {"n_envs": args.n_envs, "n_timesteps": args.total_timesteps}
    params.update({key: value for key, value in flags.items() if value is not None})
    policy_kwargs = common.merge(
        params.get("policy_kwargs") or {}, (params.pop("memory_kwargs", None) or {}).get(policy) or {}
    )
    if args.hidden_size is not None:
        policy_kwargs["hidden_size"] = args.hidden_size
    flag_kwargs = common.parse_assignments(args.policy_kwargs, "--policy-kwargs")
    policy_kwargs.update(common.canonical_policy_kwargs(flag_kwargs, "--policy-kwargs"))
    params["policy_kwargs"] = policy_kwargs
    params["n_envs"] = common.check_positive("n_envs", params.get("n_envs", 1))
    params["n_timesteps"] = common.check_positive("the number of timesteps", params.get("n_timesteps"))
    if isinstance(policy_kwargs.get("hidden_size"), int | float):
        common.check_positive("hidden_size", policy_kwargs["hidden_size"])
    return params, sources


def _algorithm_kwargs(algo_class: type[BaseAlgorithm], params: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters that go to the algorithm's constructor; unknown keys are a :class:`CLIError`."""
    accepted = set(inspect.signature(algo_class.__init__).parameters) - {"self", "policy", "env", "_init_setup_model"}
    kwargs = {key: value for key, value in params.items() if key not in common.CLI_KEYS}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise CLIError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for {algo_class.__name__}; it takes "
            f"{', '.join(sorted(accepted))} and {', '.join(common.CLI_KEYS)}"
        )
    return {key: common.to_schedule(value) for key, value in kwargs.items()}


def _log_interval(args: argparse.Namespace, model: BaseAlgorithm, n_timesteps: int) -> int:
    """Rollouts between log dumps: ``--log-interval``, else about 100 dumps over the run."""
    if args.log_interval is not None:
        return common.check_positive("--log-interval", args.log_interval)
    return max(1, round(n_timesteps / (model.n_steps * model.n_envs) / 100))


# ----------------------------------------------------------------------------------------------- resume
def _resume_target(args: argparse.Namespace, algo: str) -> tuple[safety.ResumeTarget, dict[str, Any]]:
    """``--resume PATH`` -> (model file to continue from and what to archive first, the run's config)."""
    explicit = [f"--{name.replace('_', '-')}" for name in FIXED_ON_RESUME if getattr(args, name) is not None]
    if explicit:
        raise CLIError(
            f"{', '.join(explicit)} cannot be changed when resuming: a resumed run keeps its settings "
            "(start a new run to change them)"
        )
    target = safety.resume_target(args.resume, args.archive_newer)  # the newest intact state, said on stdout
    model_path = target.model_path
    config_path = common.find_run_config(model_path)
    if config_path is None:
        raise CLIError(f"no {common.CONFIG_NAME} next to {model_path}: only runs made by these CLIs can be resumed")
    config = common.load_yaml(config_path, "run config")
    if config.get("algorithm") != algo:
        raise CLIError(
            f"{model_path} was trained with {config.get('algorithm')!r}, not {algo!r}: "
            f"resume it with python -m train.{config.get('algorithm')}"
        )
    return target, config


# ----------------------------------------------------------------------------------------------- training
def _callbacks(
    args: argparse.Namespace,
    config: dict[str, Any],
    save_dir: Path,
    eval_env: VecEnv,
    n_timesteps: int,
    log_interval: int,
    resumed_at: int | None,
) -> list[BaseCallback]:
    """Checkpoints, evaluation with the best model kept (every file written atomically), a stop on non-finite
    parameters, memory statistics, and the run's config."""
    n_envs = config["hyperparams"]["n_envs"]
    callbacks: list[BaseCallback] = [
        RunConfigCallback(config, save_dir / common.CONFIG_NAME),
        MemoryStatsCallback(every_n_rollouts=log_interval),
        FiniteParametersCallback(),
    ]
    checkpoint_freq = n_timesteps // 5 if args.checkpoint_freq is None else args.checkpoint_freq
    if checkpoint_freq > 0:
        # SB3 counts callback calls, one per vectorised step: n_envs env steps each.
        callbacks.append(
            AtomicCheckpointCallback(
                max(checkpoint_freq // n_envs, 1),
                str(save_dir / "checkpoints"),
                name_prefix="model",
                save_vecnormalize=True,
                verbose=args.verbose,
            )
        )
    eval_freq = n_timesteps // 10 if args.eval_freq is None else args.eval_freq
    if eval_freq > 0:
        evaluation = AtomicEvalCallback(
            eval_env,
            n_eval_episodes=config["eval_episodes"],
            eval_freq=max(eval_freq // n_envs, 1),
            log_path=str(save_dir),
            best_model_save_path=str(save_dir),
            deterministic=True,
            verbose=args.verbose,
        )
        if resumed_at is not None:
            safety.restore_evaluations(evaluation, save_dir, resumed_at)
        callbacks.append(evaluation)
    return callbacks


def _check_options(args: argparse.Namespace) -> None:
    common.check_device(args.device)
    safety.check_options(args)
    for name in ("eval_freq", "checkpoint_freq"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.eval_episodes is not None:
        common.check_positive("--eval-episodes", args.eval_episodes)
    if args.final_eval_episodes < 0:
        raise CLIError(f"--final-eval-episodes must be >= 0, got {args.final_eval_episodes}")
    if args.total_timesteps is not None:
        common.check_positive("--total-timesteps", args.total_timesteps)


def _build_model(
    algo_class: type[BaseAlgorithm],
    policy_class: type,
    venv: VecEnv,
    params: dict[str, Any],
    policy: str,
    args: argparse.Namespace,
    seed: int,
    tensorboard_log: str | None,
) -> BaseAlgorithm:
    """A new model; a policy or algorithm that rejects its arguments (or the env) is a :class:`CLIError`."""
    try:
        return algo_class(
            policy_class,
            venv,
            policy_kwargs=common.policy_kwargs_for(policy, params),
            tensorboard_log=tensorboard_log,
            seed=seed,
            device=args.device,
            verbose=args.verbose,
            **_algorithm_kwargs(algo_class, params),
        )
    except (ValueError, TypeError, AssertionError, RuntimeError) as error:
        raise CLIError(
            f"cannot build {algo_class.__name__} with {policy_class.__name__} on this env: "
            f"{' '.join(str(error).split())}"
        ) from None


@dataclass
class Run:
    """A run being trained: what :func:`run_training` needs once the model exists."""

    model: BaseAlgorithm
    venv: VecEnv
    env_id: str  # registered id (config["env_id"] may carry a "module:" prefix)
    config: dict[str, Any]
    save_dir: Path
    env_seed: int
    resumed_at: int | None = None  # steps of the model a resumed run starts from
    archive: safety.Archive | None = None  # files to set aside when training starts


def _new_run(args: argparse.Namespace, algo: str, argv: Sequence[str] | None) -> Run:
    """Merge the hyperparameters, claim the run folder, make the env and a new model."""
    algo_class = common.load_algorithm(algo)
    env_spec = args.env or DEFAULT_ENVS[algo]  # kept as given: "module:Id" must import module again on resume
    env_id = common.resolve_env_id(env_spec)
    policy = args.policy or DEFAULT_POLICY
    seed = 0 if args.seed is None else args.seed
    params, sources = _hyperparams(args, algo, env_id, policy)
    save_dir = Path(args.save_dir or common.default_save_dir("runs", algo, env_spec, policy, seed))
    archive = safety.check_save_dir(save_dir)  # a run that stopped before its first save may be run again
    tensorboard_log = None if args.tensorboard_log.lower() == "none" else args.tensorboard_log
    venv = common.make_env(env_id, params["n_envs"], seed, params.get("env_kwargs"), params.get("normalize", False))
    policy_alias, policy_class = common.select_policy(policy, venv.observation_space, venv.action_space)
    venv = CheckFiniteVecEnv(venv)  # a non-finite observation or reward stops training, naming env and step
    model = _build_model(algo_class, policy_class, venv, params, policy, args, seed, tensorboard_log)
    config = {
        "algorithm": algo,
        "algorithm_class": f"{algo_class.__module__}.{algo_class.__name__}",
        "env_id": env_spec,
        "policy": policy,
        "policy_alias": policy_alias,
        "policy_class": f"{policy_class.__module__}.{policy_class.__name__}",
        "seed": seed,
        "device": args.device,
        "threads": args.threads,
        "hyperparams": params,
        "hyperparams_sources": sources,
        "eval_episodes": args.eval_episodes or DEFAULT_EVAL_EPISODES,
        "save_dir": str(save_dir),
        "tensorboard_log": tensorboard_log,
        "command": _command(algo, argv),
        "started": _now(),
        "versions": common.versions(),
    }
    return Run(model, venv, env_id, config, save_dir, env_seed=seed, archive=archive)


def _resumed_run(args: argparse.Namespace, algo: str, argv: Sequence[str] | None) -> Run:
    """Load the model to continue and its run's settings, and make its env (with its normalisation)."""
    target, config = _resume_target(args, algo)
    model_path = target.model_path
    save_dir = common.find_run_config(model_path).parent  # where the run is now, wherever it was made
    params = config["hyperparams"]
    env_id = common.resolve_env_id(config["env_id"])
    model = common.load_model(
        common.load_algorithm(algo),
        model_path,
        None,
        args.device,
        tensorboard_log=config.get("tensorboard_log"),
        verbose=args.verbose,
    )
    resumed_at = model.num_timesteps
    # Another env seed than the run's start, so that a resumed run does not replay its first episodes.
    env_seed = config.get("seed", 0) + resumed_at
    normalize = params.get("normalize", False)
    stats = common.vecnormalize_path(model_path) if normalize else None
    if stats is not None and not stats.exists():
        raise CLIError(f"the run normalises observations but {stats} is missing")
    venv = common.make_env(env_id, params["n_envs"], env_seed, params.get("env_kwargs"), normalize, stats_path=stats)
    venv = CheckFiniteVecEnv(venv, start_timestep=resumed_at)
    try:
        model.set_env(venv)
    except (AssertionError, ValueError) as error:
        raise CLIError(f"{model_path} does not fit {env_id}: {' '.join(str(error).split())}") from None
    model.set_random_seed(env_seed)
    config.setdefault("eval_episodes", DEFAULT_EVAL_EPISODES)
    if args.eval_episodes not in (None, config["eval_episodes"]):
        raise CLIError(f"--eval-episodes cannot be changed when resuming (the run uses {config['eval_episodes']})")
    config.setdefault("resumed", []).append(
        {"from": str(model_path), "at_step": resumed_at, "command": _command(algo, argv), "started": _now()}
    )
    return Run(model, venv, env_id, config, save_dir, env_seed, resumed_at, target.archive)


def run_training(args: argparse.Namespace, algo: str, argv: Sequence[str] | None) -> int:
    """Train, save, evaluate and summarise one run (new or resumed)."""
    _check_options(args)
    run = _resumed_run(args, algo, argv) if args.resume else _new_run(args, algo, argv)
    model, config, save_dir = run.model, run.config, run.save_dir
    params = config["hyperparams"]
    n_timesteps = args.total_timesteps or params["n_timesteps"]
    eval_episodes = config["eval_episodes"]
    safety.prepare_run_dir(save_dir, run.archive)
    eval_env = common.make_env(
        run.env_id,
        min(max(eval_episodes, args.final_eval_episodes), 16),
        run.env_seed + 10_000,
        params.get("env_kwargs"),
        params.get("normalize", False),
        training=False,
    )
    eval_env = CheckFiniteVecEnv(eval_env, "evaluation env", start_timestep=None)  # wrapped as the training env
    log_interval = _log_interval(args, model, n_timesteps)
    callbacks = _callbacks(args, config, save_dir, eval_env, n_timesteps, log_interval, run.resumed_at)
    progress_bar = sys.stderr.isatty() if args.progress_bar is None else args.progress_bar
    if progress_bar:
        from tqdm import TqdmExperimentalWarning

        # SB3's bar is tqdm.rich, which warns "rich is experimental/alpha" on every run.
        warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)

    start = time.perf_counter()
    try:
        with safety.sigterm_as_interrupt():  # a scheduler's SIGTERM saves like Ctrl-C
            model.learn(
                n_timesteps,
                callback=callbacks,
                log_interval=log_interval,
                tb_log_name=save_dir.name,
                reset_num_timesteps=run.resumed_at is None,
                progress_bar=progress_bar,
            )
            wall_time = time.perf_counter() - start
            model_path = safety.save_final(model, save_dir)  # refuses a non-finite model
    except KeyboardInterrupt as interrupt:
        return safety.save_interrupted(interrupt, model, save_dir, algo)
    except ValueError as error:  # a non-finite value: one line naming it and the newest intact state
        raise safety.stop_error(error, model, save_dir, algo) from None

    final = None
    if args.final_eval_episodes:
        sync_envs_normalization(run.venv, eval_env)
        final = common.evaluate(model, eval_env, args.final_eval_episodes, deterministic=True)
    config = callbacks[0].config  # with the TensorBoard folder filled in
    config["result"] = {
        "num_timesteps": int(model.num_timesteps),
        "wall_time_s": round(wall_time, 1),
        "final_eval_deterministic": final.as_dict() if final else None,
    }
    safety.write_config(save_dir / common.CONFIG_NAME, config)
    _print_summary(config, save_dir, model_path, wall_time, final)
    run.venv.close()
    eval_env.close()
    return 0


def _print_summary(
    config: dict[str, Any],
    save_dir: Path,
    model_path: Path,
    wall_time: float,
    final: common.EvalResult | None,
) -> None:
    best = save_dir / common.BEST_MODEL_NAME
    lines = [
        f"{config['algorithm']} {config['policy']} ({config.get('policy_alias')}) on {config['env_id']}, "
        f"seed {config['seed']}: "
        f"{config['result']['num_timesteps']} steps in {wall_time:.1f} s",
        f"  final evaluation (deterministic): {final.summary() if final else 'skipped'}",
        f"  model:       {model_path}" + (f"  (best: {best})" if best.exists() else ""),
        f"  config:      {save_dir / common.CONFIG_NAME}",
        f"  tensorboard: {config.get('tensorboard_dir') or 'off'}",
    ]
    print("\n".join(lines))


def _command(algo: str, argv: Sequence[str] | None) -> str:
    return shlex.join(["python", "-m", f"train.{algo}", *(sys.argv[1:] if argv is None else argv)])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def train_main(algo: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m train.<algo>``; returns the exit status."""
    return common.run_cli(build_parser(algo), lambda args: run_training(args, algo, argv), argv)
