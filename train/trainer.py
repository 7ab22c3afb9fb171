"""The training command line shared by ``python -m train.a2c`` and ``python -m train.ppo``: a thin parser over
:class:`~train.spec.RunSpec` (where the sources of hyperparameters are merged, in the order of precedence its
module documents, and every value is checked) and :class:`~train.experiment.Experiment` (which trains).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from fw_agents.registry import memory_names
from train import common, spec
from train.argtypes import CLIError
from train.experiment import Experiment

#: Options that change the model or its data; a resumed run keeps the ones it was started with.
FIXED_ON_RESUME = ("env", "policy", "seed", "n_envs", "hidden_size", "hparams", "config", "policy_kwargs", "save_dir")


def build_parser(algo: str) -> argparse.ArgumentParser:
    """The training CLI's arguments: a flag per option of :class:`~train.spec.RunSpec` a user sets."""
    parser = common.ArgumentParser(
        prog=f"python -m train.{algo}",
        description=f"Train a recurrent agent with {algo.upper()} (fast weights, LSTM, GRU or memoryless).",
    )
    add = parser.add_argument
    add("--policy", choices=memory_names(), help="memory (default: fast-weights); mlp: memoryless baseline")
    add("--env", metavar="ID", help=f"registered id, 'module:Id' to import first (default: {spec.DEFAULT_ENVS[algo]})")
    add("--n-envs", type=int, metavar="N", help="parallel envs (default: from hyperparams.yml)")
    add("--total-timesteps", type=int, metavar="N", help="env steps (default: n_timesteps; with --resume: to add)")
    add("--seed", type=int, metavar="N", help="random seed (default: 0)")
    add("--device", default="cpu", help="torch device (default: cpu)")
    add("--hidden-size", type=int, metavar="N", help="memory units H (policy_kwargs.hidden_size)")
    add("--hparams", nargs="+", metavar="KEY=VALUE", help="e.g. learning_rate=lin_7e-4 n_steps=16 normalize=true")
    add(
        "--config", metavar="FILE.yml", help="hyperparameters: a flat mapping, {env id: mapping}, or a run's config.yml"
    )
    add(
        "--policy-kwargs",
        nargs="+",
        metavar="KEY=VALUE",
        help="e.g. decay_rate=0.9 net_arch=[64] activation_fn=nn.ReLU",
    )
    add(
        "--tensorboard-log",
        metavar="DIR",
        help="TensorBoard root, 'none' to disable (default: runs; with --resume: the run's)",
    )
    add("--save-dir", metavar="DIR", help="run folder, new or empty (default: runs/<algo>-<env>-<policy>-s<seed>)")
    add("--resume", metavar="PATH", help="continue a run (its folder: newest intact state; model.zip; a checkpoint)")
    add(
        "--archive-newer",
        action="store_true",
        help="with --resume of an older model or checkpoint of a run that has later ones: move the later files "
        "into RUN/archive-<time>/ (nothing is deleted) and continue from the older state",
    )
    add("--eval-freq", type=int, metavar="N", help="env steps between evaluations (default: 1/10 of the run; 0: none)")
    add("--eval-episodes", type=int, metavar="N", help="episodes per periodic evaluation (default: 20)")
    add(
        "--stochastic-eval",
        action="store_true",
        default=None,
        help="periodic evaluations (and best_model.zip) with sampled actions, not deterministic ones; the final "
        "evaluation records both",
    )
    add("--final-eval-episodes", type=int, default=100, metavar="N", help="of the final evaluation (default: 100)")
    add("--checkpoint-freq", type=int, metavar="N", help="env steps between checkpoints (default: 1/5 of the run)")
    add("--log-interval", type=int, metavar="N", help="rollouts between log dumps (default: ~100 dumps per run)")
    add("--progress-bar", action=argparse.BooleanOptionalAction, help="(default: on when stderr is a terminal)")
    add("--verbose", type=int, choices=(0, 1, 2), default=1, help="SB3 verbosity (default: 1)")
    common.add_threads_argument(parser)
    return parser


def spec_from_args(args: argparse.Namespace, algo: str, argv: Sequence[str] | None) -> spec.RunSpec:
    """The command line's :class:`~train.spec.RunSpec`: a new run, or (``--resume``) the continuation of one."""
    options = dict(
        device=args.device,
        threads=args.threads,
        eval_freq=args.eval_freq,
        final_eval_episodes=args.final_eval_episodes,
        checkpoint_freq=args.checkpoint_freq,
        log_interval=args.log_interval,
        progress_bar=sys.stderr.isatty() if args.progress_bar is None else args.progress_bar,
        verbose=args.verbose,
        archive_newer=args.archive_newer,
        command=shlex.join(["python", "-m", f"train.{algo}", *(sys.argv[1:] if argv is None else argv)]),
    )
    if args.tensorboard_log is not None:  # not given: RunSpec's "runs", or on --resume the run's own root
        options["tensorboard_log"] = None if args.tensorboard_log.lower() == "none" else args.tensorboard_log
    if args.resume:
        explicit = [f"--{name.replace('_', '-')}" for name in FIXED_ON_RESUME if getattr(args, name) is not None]
        if explicit:
            raise CLIError(
                f"{', '.join(explicit)} cannot be changed when resuming: a resumed run keeps its settings "
                "(start a new run to change them)"
            )
        return spec.RunSpec.resumed(
            args.resume,
            algo,
            total_timesteps=args.total_timesteps,
            eval_episodes=args.eval_episodes,
            deterministic_eval=None if args.stochastic_eval is None else False,
            **options,
        )
    return spec.RunSpec.build(
        algo,
        args.env,
        args.policy,
        config=args.config,
        hparams=common.parse_assignments(args.hparams, "--hparams"),
        n_envs=args.n_envs,
        total_timesteps=args.total_timesteps,
        hidden_size=args.hidden_size,
        policy_kwargs=common.parse_assignments(args.policy_kwargs, "--policy-kwargs"),
        seed=0 if args.seed is None else args.seed,
        save_dir=args.save_dir,
        eval_episodes=spec.DEFAULT_EVAL_EPISODES if args.eval_episodes is None else args.eval_episodes,
        deterministic_eval=not args.stochastic_eval,
        **options,
    )


def train_main(algo: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m train.<algo>``; returns the exit status."""

    def train(args: argparse.Namespace) -> int:
        Experiment(spec_from_args(args, algo, argv)).run()
        return 0

    return common.run_cli(build_parser(algo), train, argv)
