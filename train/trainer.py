"""The training command line shared by ``python -m train.a2c`` and ``python -m train.ppo``: a thin parser over
:class:`~train.spec.RunSpec` (where the sources of hyperparameters are merged, in the order of precedence its
module documents, and every value is checked) and :class:`~train.experiment.Experiment` (which trains).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from train import common, spec
from train.argtypes import CLIError
from train.experiment import Experiment

#: Options that change the model or its data; a resumed run keeps the ones it was started with.
FIXED_ON_RESUME = ("env", "policy", "seed", "n_envs", "hidden_size", "hparams", "config", "policy_kwargs", "save_dir")


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
        help=f"memory of the agent (default: {spec.DEFAULT_POLICY}); mlp is the memoryless baseline",
    )
    parser.add_argument(
        "--env",
        default=None,
        metavar="ID",
        help=f"any registered Gymnasium id, 'module:Id' to import first (default: {spec.DEFAULT_ENVS[algo]})",
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
        help=f"episodes per periodic evaluation (default: {spec.DEFAULT_EVAL_EPISODES}; a resumed run keeps its own)",
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
        command=shlex.join(["python", "-m", f"train.{algo}", *(sys.argv[1:] if argv is None else argv)]),
    )
    if args.resume:
        explicit = [f"--{name.replace('_', '-')}" for name in FIXED_ON_RESUME if getattr(args, name) is not None]
        if explicit:
            raise CLIError(
                f"{', '.join(explicit)} cannot be changed when resuming: a resumed run keeps its settings "
                "(start a new run to change them)"
            )
        return spec.RunSpec.resumed(
            args.resume, algo, total_timesteps=args.total_timesteps, eval_episodes=args.eval_episodes, **options
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
        tensorboard_log=None if args.tensorboard_log.lower() == "none" else args.tensorboard_log,
        eval_episodes=spec.DEFAULT_EVAL_EPISODES if args.eval_episodes is None else args.eval_episodes,
        **options,
    )


def train_main(algo: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m train.<algo>``; returns the exit status."""

    def train(args: argparse.Namespace) -> int:
        Experiment(spec_from_args(args, algo, argv)).run()
        return 0

    return common.run_cli(build_parser(algo), train, argv)
