"""What the command lines share: error handling, ``key=value`` and YAML parsing, environment and policy selection,
run folders and model loading, evaluation.

Every user mistake is raised as :class:`CLIError` and turned by :func:`run_cli` into one line on stderr and exit
status 2, with no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import pickle
import platform
import re
import signal
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from fw_agents.nonfinite import first_non_finite_parameter
from fw_agents.registry import get_memory
from train.argtypes import CLIError, OneLineArgumentParser, check_int

CONFIG_NAME = "config.yml"
MODEL_NAME = "model.zip"
BEST_MODEL_NAME = "best_model.zip"

#: Algorithms by CLI name, as ``module:Class`` (imported on use).
ALGORITHMS: dict[str, str] = {"a2c": "fw_agents.a2c:RecurrentA2C", "ppo": "fw_agents.ppo:RecurrentPPO"}


# ----------------------------------------------------------------------------------------------- CLI plumbing
#: argparse whose usage errors are one line (``prog: error: …``), like every other error of the CLIs.
ArgumentParser = OneLineArgumentParser


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads``: torch's default (one thread per core) makes small recurrent models many times slower."""
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="torch CPU threads (default: 1)")


def run_cli(
    parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], int], argv: Sequence[str] | None
) -> int:
    """Parse ``argv``, pin torch's threads, run ``command``: the one error style of every command line. A
    :class:`CLIError` is one line ``prog: error: …`` on stderr and exit status 2; Ctrl-C is exit status 130
    (SIGTERM, raised as ``KeyboardInterrupt`` by a training run, 143)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (status 2) and --help (0), returned rather than raised
        return int(exit_.code or 0)
    try:
        th.set_num_threads(check_int("--threads", getattr(args, "threads", 1)))
        return int(command(args))
    except CLIError as error:
        print(f"{parser.prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # 128 + the signal's number, as a shell reports it: 130, 143 (SIGTERM)
        return 128 + getattr(interrupt, "signum", signal.SIGINT)


# ----------------------------------------------------------------------------------------------- values, YAML
class YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3``) and ``None`` is null (YAML
    spells it ``null`` or ``~``): both would load as strings, which only fail later, deep inside the algorithm
    (``chrono_init=None`` as the string ``'None'``). ``True``/``False`` already load as booleans."""


YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)
YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^None$"), ["N"])


def parse_value(text: str) -> Any:
    """A command-line value, as YAML: ``true``, ``7e-4``, ``[64, 64]``, ``{a: 1}``; anything else is a string."""
    try:
        return yaml.load(text, Loader=YAMLLoader)
    except yaml.YAMLError:
        return text


def parse_assignments(items: Sequence[str] | None, option: str) -> dict[str, Any]:
    """``["key=value", …]`` -> dict with parsed values."""
    result: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"{option} takes key=value pairs, got {item!r}")
        result[key.strip()] = parse_value(value)
    return result


def load_yaml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable or non-mapping file is a :class:`CLIError`."""
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


# ----------------------------------------------------------------------------------------------- environments
def resolve_env_id(env_id: str) -> str:
    """Check that ``env_id`` is registered (after importing our ``envs`` and MiniGrid); ``module:Id`` imports
    ``module`` first, as ``gymnasium.make`` does. Returns the id without the module part."""
    import minigrid  # noqa: F401  (registers MiniGrid-…)

    import envs  # registers fw_agents/…

    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise CLIError(f"cannot import {module!r} for environment {env_id!r}: {error}") from None
    if name not in gym.registry:
        memory_envs = ", ".join(envs.registered_ids())
        raise CLIError(
            f"unknown environment {name!r}; memory environments: {memory_envs} (or any registered Gymnasium id)"
        )
    return name


def make_env(
    env_id: str,
    n_envs: int,
    seed: int | None,
    env_kwargs: dict[str, Any] | None = None,
    normalize: bool | dict[str, Any] = False,
    stats_path: str | Path | None = None,
    training: bool = True,
) -> VecEnv:
    """SB3's ``make_vec_env`` (Monitor-wrapped DummyVecEnv), plus ``VecNormalize`` if ``normalize``.

    :param normalize: False, True, or ``VecNormalize`` keyword arguments.
    :param stats_path: saved ``VecNormalize`` statistics to start from (resume, evaluation).
    :param training: False freezes the statistics and returns raw rewards (evaluation).
    """
    try:
        venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    except (TypeError, ValueError, gym.error.Error) as error:
        raise CLIError(f"cannot make environment {env_id!r} with {env_kwargs or {}}: {error}") from None
    if stats_path is not None:
        try:
            venv = VecNormalize.load(str(stats_path), venv)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as error:
            raise CLIError(f"cannot load normalisation statistics {stats_path}: {error}") from None
    elif normalize:
        venv = VecNormalize(venv, **(normalize if isinstance(normalize, dict) else {}))
    if isinstance(venv, VecNormalize) and not training:
        venv.training, venv.norm_reward = False, False
    return venv


# ----------------------------------------------------------------------------------------------- policies
def _policy_kind(observation_space: spaces.Space) -> str:
    """The alias prefix that can take ``observation_space``: ``Mlp``, ``Cnn`` or ``MultiInput``."""
    flat = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
    if isinstance(observation_space, spaces.Dict):
        if all(isinstance(sub, flat) for sub in observation_space.spaces.values()):
            return "MultiInput"
    elif is_image_space(observation_space):
        return "Cnn"
    elif isinstance(observation_space, flat):
        return "Mlp"
    raise CLIError(
        f"observation space {observation_space} is not supported: the policies take a Box (vector or "
        "image), Discrete, MultiDiscrete, MultiBinary, or a flat Dict of them"
    )


def select_policy(choice: str, observation_space: spaces.Space, action_space: spaces.Space) -> tuple[str, type]:
    """``--policy`` choice (a registered memory, :mod:`fw_agents.registry`) and the env's spaces -> (alias, policy
    class), e.g. ``("MlpFastWeightsPolicy", …)``."""
    if not isinstance(action_space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise CLIError(
            f"action space {action_space} is not supported: the policies take Box, Discrete, "
            "MultiDiscrete or MultiBinary actions"
        )
    memory, kind = get_memory(choice), _policy_kind(observation_space)
    return memory.alias(kind), memory.policy(kind)


def load_algorithm(algo: str) -> type[BaseAlgorithm]:
    """``"a2c"`` -> ``RecurrentA2C``; ``"ppo"`` -> ``RecurrentPPO``."""
    if algo not in ALGORITHMS:
        raise CLIError(f"unknown algorithm {algo!r}; choices: {', '.join(ALGORITHMS)}")
    module, _, name = ALGORITHMS[algo].partition(":")
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------------------------- run folders
def vecnormalize_path(model_path: str | Path) -> Path:
    """Where the ``VecNormalize`` statistics of a model live: ``model.zip`` -> ``model_vecnormalize.pkl``;
    SB3's checkpoints ``model_1000_steps.zip`` -> ``model_vecnormalize_1000_steps.pkl``."""
    path = Path(model_path)
    checkpoint = re.fullmatch(r"(.*)_(\d+)_steps\.zip", path.name)
    if checkpoint:
        return path.with_name(f"{checkpoint[1]}_vecnormalize_{checkpoint[2]}_steps.pkl")
    return path.with_name(f"{path.name.removesuffix('.zip')}_vecnormalize.pkl")


def locate_model(path: str | Path, default_name: str = MODEL_NAME) -> Path:
    """A model file, or a run folder (-> its ``default_name``)."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    elif not path.exists() and path.suffix != ".zip" and path.with_suffix(".zip").exists():
        path = path.with_suffix(".zip")  # SB3 accepts names without .zip
    if not path.is_file():
        raise CLIError(f"model file {path} does not exist")
    return path


def find_run_config(model_path: Path) -> Path | None:
    """The run's ``config.yml``: next to the model, or one folder up (checkpoints live in a sub-folder)."""
    for folder in (model_path.parent, model_path.parent.parent):
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    return None


def load_run_model(
    model_path: Path,
    algo: str,
    env_id: str,
    hyperparams: dict[str, Any],
    n_envs: int,
    seed: int,
    device: str,
    training: bool,
    **load_kwargs: Any,
) -> tuple[BaseAlgorithm, VecEnv]:
    """A saved model of a run and an env for it, with the run's ``VecNormalize`` statistics if it normalised: the
    one loading of a model, for resuming (``training=True``: the statistics keep updating) and for evaluating
    (``training=False``: frozen, raw rewards). A missing, corrupt or mismatched file is a :class:`CLIError`.

    :param env_id: a registered id; :param hyperparams: the run's (``normalize``, ``env_kwargs``).
    """
    normalize = hyperparams.get("normalize", False)
    stats = vecnormalize_path(model_path) if normalize else None
    if stats is not None and not stats.exists():
        raise CLIError(f"the run normalises observations but {stats} is missing")
    venv = make_env(env_id, n_envs, seed, hyperparams.get("env_kwargs"), normalize, stats_path=stats, training=training)
    algo_class = load_algorithm(algo)
    try:
        model = algo_class.load(str(model_path), env=venv, device=device, **load_kwargs)
    # SB3 raises AssertionError for "No data found in the saved file", ValueError for spaces that do not fit.
    except (OSError, EOFError, AssertionError, KeyError, ValueError, RuntimeError, TypeError, AttributeError,
            zipfile.BadZipFile, pickle.UnpicklingError) as error:  # fmt: skip
        venv.close()
        message = " ".join(str(error).split()) or type(error).__name__
        raise CLIError(f"cannot load {algo_class.__name__} model {model_path}: {message}") from None
    name = first_non_finite_parameter(model.policy)
    if name is not None:  # earlier versions could save a model after training diverged
        venv.close()
        raise CLIError(
            f"{model_path} holds non-finite parameters ({name}): its training diverged; use an earlier checkpoint"
        )
    return model, venv


# ----------------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalResult:
    """Returns and successes of ``n_episodes`` evaluation episodes."""

    returns: list[float]
    lengths: list[int]
    successes: list[bool]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    @property
    def success_rate(self) -> float | None:
        """None where the env reports no ``info["is_success"]``."""
        return float(np.mean(self.successes)) if self.successes else None

    def summary(self) -> str:
        success = "n/a" if self.success_rate is None else f"{100 * self.success_rate:.1f}%"
        return f"return {self.mean:.3f} ± {self.std:.3f}, success {success} ({len(self.returns)} episodes)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean_return": self.mean,
            "std_return": self.std,
            "success_rate": self.success_rate,
            "episodes": len(self.returns),
            "mean_length": float(np.mean(self.lengths)),
        }


def evaluate(model: BaseAlgorithm, env: VecEnv, n_episodes: int, deterministic: bool) -> EvalResult:
    """SB3's ``evaluate_policy`` (which threads the recurrent state and resets it per episode), plus the
    success flags that envs report in ``info["is_success"]`` at episode end."""
    successes: list[bool] = []

    def record_success(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
        if locals_["done"] and locals_["info"].get("is_success") is not None:
            successes.append(bool(locals_["info"]["is_success"]))

    returns, lengths = evaluate_policy(
        model,
        env,
        n_eval_episodes=n_episodes,
        deterministic=deterministic,
        return_episode_rewards=True,
        callback=record_success,
    )
    return EvalResult(list(map(float, returns)), list(map(int, lengths)), successes)


def versions() -> dict[str, str]:
    """Versions of Python and the packages a run depends on."""
    found = {"python": platform.python_version()}
    for package in ("fw-agents", "torch", "stable-baselines3", "sb3-contrib", "gymnasium", "minigrid", "numpy"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
