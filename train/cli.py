"""The command lines' shared pieces and the one error style, and the training command line of ``python -m train.a2c``
and ``python -m train.ppo``: a thin parser over :class:`~train.spec.RunSpec`, trained by
:class:`~train.experiment.Experiment`.

Every user mistake is a :class:`CLIError` (or pydantic's ``ValidationError``: both are ``ValueError``), turned by
:func:`run_cli` into one line ``prog: error: ...`` on stderr and exit status 2, with no traceback; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np
import torch as th
import yaml
from pydantic import ValidationError

from fw_agents import atomic
from fw_agents.memory.base import check_number as _library_check_number

#: Seeds numpy accepts.
MAX_SEED = 2**32 - 1


class CLIError(ValueError):
    """A user error: reported as one line on stderr, exit status 2. A ``ValueError`` for Python callers."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``prog: error: ...``) instead of usage text plus the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


#: Fields of a run spec named by their command-line flag in messages (``--eval-freq``), as the user gave them.
FLAG_FIELDS = ("threads", "total_timesteps", "eval_freq", "checkpoint_freq", "eval_episodes", "final_eval_episodes",
               "log_interval", "verbose")  # fmt: skip
#: pydantic's error types, said as the rest of our errors say them (``{ge}``: the bound, from the error's context).
PHRASES = {
    "greater_than_equal": "must be >= {ge}", "greater_than": "must be > {gt}", "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}", "int_type": "must be an integer", "int_from_float": "must be an integer",
    "float_type": "must be a number", "finite_number": "must be a finite number", "bool_type": "must be true or false",
    "dict_type": "must be a mapping (e.g. {{key: value}})", "model_type": "must be a mapping (e.g. {{key: value}})",
    "string_type": "must be a string", "list_type": "must be a list", "extra_forbidden": "is not one of its options",
}  # fmt: skip


def one_line(error: ValueError) -> str:
    """A user error as one line. A pydantic ``ValidationError`` is said by its most specific error (the deepest field
    of a nested value), named by the field's path and phrased as our own checks phrase theirs (:data:`PHRASES`); an
    error of ours raised inside it keeps its own words."""
    if not isinstance(error, ValidationError):
        return " ".join(str(error).split())
    errors = error.errors()
    first = max(errors, key=lambda e: len(e["loc"]))
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, CLIError):
        return one_line(original)
    loc = first["loc"]
    key = [str(loc[-1])] if first["type"] == "extra_forbidden" else []  # the user's own key, however it is spelled
    field = re.compile(r"[a-z_][a-z0-9_]*")
    path = [part for part in loc[: len(loc) - len(key)] if isinstance(part, str) and field.fullmatch(part)]
    path = [part for part in path if part not in ("bool", "float", "int", "str", "dict")] + key  # (union branch tags)
    name = ".".join(path) or "value"
    name = f"--{name.replace('_', '-')}" if name in FLAG_FIELDS else name
    ge = (first.get("ctx") or {}).get("ge")
    if first["type"] == "greater_than_equal" and isinstance(first["input"], int) and ge in (0, 1):
        phrase = "must be a positive integer" if ge == 1 else "must be an integer >= 0"
    elif isinstance(original, Exception):
        phrase = str(original)
    else:
        phrase = PHRASES.get(first["type"], first["msg"]).format(**(first.get("ctx") or {}))
    if len({e["loc"][0] for e in errors}) == 1 and len(errors) > 1 and len(first["loc"]) < 3:  # a union's branches
        phrases = dict.fromkeys(PHRASES.get(e["type"], e["msg"]).format(**(e.get("ctx") or {})) for e in errors)
        phrase = "must be " + ", or ".join(p.removeprefix("must be ") for p in phrases)
    given = repr(first.get("input"))
    return f"{name} {phrase}, got {given if len(given) < 60 else given[:57] + '...'}"


def run_cli(
    parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], int], argv: Sequence[str] | None
) -> int:
    """Parse ``argv``, pin torch's threads, run ``command``: the one error style of every command line. Exit status 2
    for a user error, 130 for Ctrl-C, 143 for SIGTERM (raised as ``KeyboardInterrupt`` by a training run)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (status 2) and --help (0), returned rather than raised
        return int(exit_.code or 0)
    try:
        if getattr(args, "threads", None) is not None:  # (training runs: the spec's, set by the Experiment)
            th.set_num_threads(check_int("--threads", args.threads, 1, os.cpu_count() or 1))
        return int(command(args))
    except (CLIError, ValidationError) as error:
        print(f"{parser.prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # 128 + the signal's number, as a shell reports it
        return 128 + getattr(interrupt, "signum", signal.SIGINT)


def cli_main(
    build_parser: Callable[[], argparse.ArgumentParser], command: Callable[[argparse.Namespace], int]
) -> Callable[..., int]:
    """A command line's ``main(argv=None)``: :func:`run_cli` of a fresh parser on ``argv`` (default:
    ``sys.argv[1:]``), returning the exit status."""

    def main(argv: Sequence[str] | None = None) -> int:
        return run_cli(build_parser(), command, argv)

    main.__doc__ = cli_main.__doc__
    return main


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the signal arrives (:func:`terminate`), so that a command stops and saves as for Ctrl-C;
    it exits with 128 + ``signum`` (143), as a shell reports a process ended by the signal."""

    signum = signal.SIGTERM


def terminate(signum: int, frame: Any) -> None:
    """A SIGTERM handler: raise :class:`Terminated`."""
    raise Terminated()


def interruption(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind ``error``: ``error`` itself, or the one that arrived while ``torch.save`` was
    writing (a checkpoint, the best model), which its zip writer turns into a ``RuntimeError`` ("unexpected pos")
    with the interrupt as its context; None for any other error."""
    if isinstance(error, KeyboardInterrupt):
        return error
    context = error.__context__
    return context if isinstance(error, RuntimeError) and isinstance(context, KeyboardInterrupt) else None


@contextmanager
def signals(handler: Any, *signums: signal.Signals) -> Iterator[None]:
    """``handler`` for ``signums`` within the block (only the main thread can take signals: elsewhere, nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# ----------------------------------------------------------------------------------------------- values
def check_int(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (``high`` None: unbounded), else :class:`CLIError`. An integral float
    counts (YAML reads ``1e6`` as a float); a bool or a string does not."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < low
        or (high is not None and value > high)
    ):
        if low == 1:
            allowed = "a positive integer" + ("" if high is None else f" <= {high}")
        else:
            allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise CLIError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_number(
    name: str, value: Any, low: float | None = None, high: float | None = None, low_inclusive: bool = True
) -> float:
    """A finite real number (not a bool or a string) within the bounds, else :class:`CLIError`: the library's check
    (:func:`fw_agents.memory.base.check_number`), with the command lines' error type."""
    try:
        return _library_check_number(name, value, low=low, high=high, low_inclusive=low_inclusive)
    except ValueError as error:
        raise CLIError(str(error)) from None


def check_output_path(path: str | Path, name: str, kind: Literal["file", "folder"]) -> Path:
    """``path`` can be written as a ``kind``: if it exists, it is one and is writable; otherwise the nearest folder
    above it that exists is writable. Checked before any work, so that a run never fails at its end for want of a
    place to write (a real probe: permission bits do not tell for root or read-only mounts)."""
    path = Path(path)
    if path.exists():
        if kind == "file" and path.is_dir():
            raise CLIError(f"{name}: {path} is a folder, expected a file name")
        if kind == "folder" and not path.is_dir():
            raise CLIError(f"{name}: {path} is a file, expected a folder")
        if not os.access(path, os.W_OK) or (kind == "folder" and _unwritable_folder(path)):
            raise CLIError(f"{name}: {path} is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if _unwritable_folder(parent):
        raise CLIError(f"{name}: cannot create {path}: nothing can be written in {parent}")
    return path


def check_json_path(path: Path | None) -> None:
    """``--json OUT`` can be written: its folder exists and the file is writable (checked before any work)."""
    if path is not None:
        if not path.parent.is_dir():
            raise CLIError(f"--json: folder {str(path.parent)!r} does not exist")
        check_output_path(path, "--json", "file")


def write_json(path: Path | None, payload: Any) -> None:
    """``payload`` as indented JSON at ``path`` (None: nothing), written atomically (:mod:`fw_agents.atomic`): a kill
    leaves the previous file whole."""
    if path is not None:
        atomic.write_text(path, json.dumps(payload, indent=2) + "\n")


def _unwritable_folder(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return False
    except OSError:
        return True


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            return check_int("the value", int(text), low, high)
        except ValueError as error:
            message = str(error) if isinstance(error, CLIError) else f"expected an integer, got {text!r}"
            raise argparse.ArgumentTypeError(message.removeprefix("the value ")) from None

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def float_in(low: float, high: float = math.inf, low_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite float from ``low`` (open or closed) to ``high`` (closed)."""

    def parse(text: str) -> float:
        try:
            return check_number("the value", float(text), low, None if math.isinf(high) else high, not low_open)
        except ValueError as error:
            message = str(error) if isinstance(error, CLIError) else f"expected a number, got {text!r}"
            raise argparse.ArgumentTypeError(message.removeprefix("the value ")) from None

    parse.__name__ = "float"
    return parse


positive_int = int_at_least(1)
seed_int = int_at_least(0, MAX_SEED)
positive_float = float_in(0.0, low_open=True)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads``: torch's default (one thread per core) makes small recurrent models many times slower."""
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="torch CPU threads (default: 1)")


# ----------------------------------------------------------------------------------------------- YAML
class YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3``) and ``None`` is null (Python's
    spelling, as SB3 users write it): both would otherwise load as strings that fail later, deep in the algorithm."""


YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)
YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^None$"), ["N"])
# rl-zoo3's files write `!!float 1e5`; a Python object tag is refused like any other unknown tag.


def parse_value(text: str) -> Any:
    """A command-line value, as YAML: ``true``, ``7e-4``, ``[64, 64]``, ``{a: 1}``; anything else is a string."""
    try:
        return yaml.load(text, Loader=YAMLLoader)
    except yaml.YAMLError:
        return text


def parse_assignments(items: Sequence[str] | None, option: str) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict with parsed values."""
    result: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{option} takes key=value pairs, got {item!r}")
        result[key.strip()] = parse_value(value)
    return result


def load_yaml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """A YAML mapping; a missing, unreadable or non-mapping file is a :class:`CLIError`."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=YAMLLoader)
    except FileNotFoundError:
        raise CLIError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CLIError(f"cannot read {what} {path}: {' '.join(str(error).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CLIError(f"{what} {path} must hold a YAML mapping, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------------------------- training
#: Options that do not change the model: given, they override the spec's (or the resumed run's) values.
RUN_OPTIONS = ("device", "threads", "eval_freq", "final_eval_episodes", "checkpoint_freq", "log_interval", "verbose")
#: Options a ``--spec`` file sets (the run's env, policy and hyperparameters); the command line's other options
#: override the file's values.
FROM_SPEC = ("env", "policy", "n_envs", "hidden_size", "hparams", "config", "policy_kwargs")
#: Options that change the model or its data; a resumed run keeps the ones it was started with.
FIXED_ON_RESUME = (*FROM_SPEC, "seed", "save_dir", "spec")


def build_train_parser(algo: str) -> argparse.ArgumentParser:
    """The training command line: a flag per field of :class:`~train.spec.RunSpec` a user sets."""
    from fw_agents.registry import memory_names
    from train.spec import DEFAULT_ENVS

    parser = ArgumentParser(
        prog=f"python -m train.{algo}",
        description=f"Train a recurrent agent with {algo.upper()} (fast weights, LSTM, GRU or memoryless).",
    )
    add = parser.add_argument
    add("--policy", choices=memory_names(), help="memory (default: fast-weights); mlp: memoryless baseline")
    add("--env", metavar="ID", help=f"registered id, 'module:Id' to import first (default: {DEFAULT_ENVS[algo]})")
    add("--n-envs", type=positive_int, metavar="N", help="parallel envs (default: from hyperparams.yml)")
    add("--total-timesteps", type=positive_int, metavar="N", help="env steps (default: n_timesteps; resuming: to add)")
    add("--seed", type=seed_int, metavar="N", help="random seed (default: 0)")
    add("--device", help="torch device (default: cpu)")
    add("--hidden-size", type=int, metavar="N", help="memory units H (policy_kwargs.hidden_size)")
    add("--hparams", nargs="+", metavar="KEY=VALUE", help="e.g. learning_rate=lin_7e-4 n_steps=16 normalize=true")
    add(
        "--config",
        metavar="FILE.yml",
        help="hyperparameters: a flat mapping, {env id: mapping} (rl-zoo3's files), or a run's config.yml",
    )
    add(
        "--policy-kwargs",
        nargs="+",
        metavar="KEY=VALUE",
        help="e.g. decay_rate=0.9 net_arch=[64] activation_fn=nn.ReLU",
    )
    add(
        "--spec",
        metavar="FILE.yml",
        help="a whole run spec, as a run's config.yml records it (grids pass their cells so)",
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
        help="with --resume of an older state of a run that has later ones: "
        "move the later files into RUN/archive-<time>/ (nothing is deleted) and continue from the older state",
    )
    add("--eval-freq", type=int, metavar="N", help="env steps between evaluations (default: 1/10 of the run; 0: none)")
    add("--eval-episodes", type=int, metavar="N", help="episodes per periodic evaluation (default: 20)")
    add(
        "--stochastic-eval",
        action="store_true",
        default=None,
        help="periodic evaluations (and best_model.zip) with "
        "sampled actions, not deterministic ones; the final evaluation records both",
    )
    add("--final-eval-episodes", type=int, metavar="N", help="episodes of the final evaluation (default: 100)")
    add("--checkpoint-freq", type=int, metavar="N", help="env steps between checkpoints (default: 1/5 of the run)")
    add("--log-interval", type=int, metavar="N", help="rollouts between log dumps (default: ~100 dumps per run)")
    add("--progress-bar", action=argparse.BooleanOptionalAction, help="(default: on when stderr is a terminal)")
    add("--verbose", type=int, choices=(0, 1, 2), help="SB3 verbosity (default: 1)")
    add("--threads", type=int, metavar="N", help="torch CPU threads (default: 1)")
    return parser


def spec_from_args(args: argparse.Namespace, algo: str, argv: Sequence[str] | None) -> Any:
    """The command line's :class:`~train.spec.RunSpec`: a new run, a given spec (``--spec``), or (``--resume``) the
    continuation of one."""
    from train.spec import RunSpec

    # Only what is given: the spec's defaults (or a resumed run's, or a --spec file's values) stand for the rest.
    given = {name: getattr(args, name) for name in RUN_OPTIONS if getattr(args, name) is not None}
    options: dict[str, Any] = {
        **given,
        "progress_bar": sys.stderr.isatty() if args.progress_bar is None else args.progress_bar,
        "command": shlex.join(["python", "-m", f"train.{algo}", *(sys.argv[1:] if argv is None else argv)]),
    }
    if args.tensorboard_log is not None:  # not given: RunSpec's "runs", or on --resume the run's own root
        options["tensorboard_log"] = None if args.tensorboard_log.lower() == "none" else args.tensorboard_log
    if args.resume:
        explicit = [f"--{name.replace('_', '-')}" for name in FIXED_ON_RESUME if getattr(args, name) is not None]
        if explicit:
            raise CLIError(
                f"{', '.join(explicit)} cannot be changed when resuming: a resumed run keeps its settings "
                "(start a new run to change them)"
            )
        return RunSpec.resumed(
            args.resume,
            algo,
            total_timesteps=args.total_timesteps,
            archive_newer=args.archive_newer,
            eval_episodes=args.eval_episodes,
            deterministic_eval=None if args.stochastic_eval is None else False,
            **options,
        )
    if args.archive_newer:
        raise CLIError("--archive-newer only applies with --resume (of an older model or checkpoint of a run)")
    if args.eval_episodes is not None:
        options["eval_episodes"] = args.eval_episodes
    if args.stochastic_eval:
        options["deterministic_eval"] = False
    if args.spec:
        explicit = [f"--{name.replace('_', '-')}" for name in FROM_SPEC if getattr(args, name) is not None]
        if explicit:
            raise CLIError(f"{', '.join(explicit)} cannot be given with --spec: the spec file sets the run's env, "
                           "policy and hyperparameters (edit the file, or leave out --spec)")  # fmt: skip
        record = load_yaml(args.spec, "run spec")
        if record.get("algorithm", algo) != algo:
            raise CLIError(
                f"--spec {args.spec} is a {record['algorithm']} run: use python -m train.{record['algorithm']}"
            )
        given = {
            name: getattr(args, name)
            for name in ("seed", "save_dir", "total_timesteps")
            if getattr(args, name) is not None
        }
        return RunSpec.from_record({**record, "algorithm": algo}, **given, **options)
    return RunSpec.build(
        algo,
        args.env,
        args.policy,
        config=args.config,
        hparams=args.hparams and parse_assignments(args.hparams, "--hparams"),
        n_envs=args.n_envs,
        total_timesteps=args.total_timesteps,
        hidden_size=args.hidden_size,
        policy_kwargs=args.policy_kwargs and parse_assignments(args.policy_kwargs, "--policy-kwargs"),
        seed=0 if args.seed is None else args.seed,
        save_dir=args.save_dir,
        **options,
    )


def train_main(algo: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m train.<algo>``; returns the exit status."""
    from train.experiment import Experiment

    def train(args: argparse.Namespace) -> int:
        Experiment(spec_from_args(args, algo, argv)).run()
        return 0

    return run_cli(build_train_parser(algo), train, argv)
