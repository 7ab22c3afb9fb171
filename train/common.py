"""What the command lines share: error handling, ``key=value`` and YAML config parsing, run folders, environment
and policy selection, model loading and evaluation.

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
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from train.argtypes import OneLineArgumentParser

HYPERPARAMS_FILE = Path(__file__).with_name("hyperparams.yml")
CONFIG_NAME = "config.yml"
MODEL_NAME = "model.zip"
BEST_MODEL_NAME = "best_model.zip"

#: Algorithms by CLI name, as ``module:Class`` (imported on use).
ALGORITHMS: dict[str, str] = {"a2c": "fw_agents.a2c:RecurrentA2C", "ppo": "sb3_contrib:RecurrentPPO"}

#: ``--policy`` choice -> the part of the policy alias that names the memory. ``mlp`` is fw-agents' NoMemory
#: policy (same layout as the recurrent ones, a tanh layer in place of the memory), so that a comparison
#: changes only the memory.
POLICY_MEMORY: dict[str, str] = {"fast-weights": "FastWeights", "lstm": "Lstm", "gru": "Gru", "mlp": "NoMemory"}

#: Hyperparameter keys the CLI handles itself; every other key goes to the algorithm's constructor.
CLI_KEYS = ("n_envs", "n_timesteps", "normalize", "env_kwargs", "policy_kwargs", "memory_kwargs")


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit status 2."""


# ----------------------------------------------------------------------------------------------- CLI plumbing
#: argparse whose usage errors are one line (``prog: error: …``), like every other error of the CLIs.
ArgumentParser = OneLineArgumentParser


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads``: torch's default (one thread per core) makes small recurrent models many times slower."""
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="torch CPU threads (default: 1)")


def run_cli(
    parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], int], argv: Sequence[str] | None
) -> int:
    """Parse ``argv``, pin torch's threads, run ``command``; a :class:`CLIError` becomes exit status 2."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (status 2) and --help (0), returned rather than raised
        return int(exit_.code or 0)
    try:
        threads = getattr(args, "threads", 1)
        if threads < 1:
            raise CLIError(f"--threads must be >= 1, got {threads}")
        th.set_num_threads(threads)
        return command(args)
    except CLIError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------------------------- values, YAML
class YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but ``1e-3`` is a float: YAML 1.1 wants ``1.0e-3`` and would load a string,
    which only fails later, deep inside the algorithm."""


YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)


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


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``; the nested dicts ``policy_kwargs``, ``env_kwargs``, ``memory_kwargs``
    are merged key by key rather than replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_hyperparams(algo: str, env_id: str) -> tuple[dict[str, Any], str]:
    """Defaults from ``train/hyperparams.yml``: the algorithm's ``default`` section updated by the env's.

    :return: the hyperparameters and a description of where they came from.
    """
    table = load_yaml(HYPERPARAMS_FILE, "hyperparameter file").get(algo, {})
    source = f"{HYPERPARAMS_FILE.name}:{algo}.default"
    params = canonical_hyperparams(table.get("default", {}), source)
    if env_id in table:
        source = f"{HYPERPARAMS_FILE.name}:{algo}.{env_id}"
        params = merge(params, canonical_hyperparams(table[env_id], source))
    return params, source


def canonical_policy_kwargs(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Policy kwargs in fw-agents' names, sb3-contrib's mapped (``lstm_hidden_size`` -> ``hidden_size``,
    ``lstm_kwargs`` flattened, …) by :func:`fw_agents.policies.canonical_policy_kwargs`, the one table of
    them. Both spellings of one option in ``kwargs`` is a :class:`CLIError` that says ``where``."""
    from fw_agents.policies import canonical_policy_kwargs as canonical

    try:
        return canonical(kwargs)
    except ValueError as error:
        raise CLIError(f"{where}: {error}") from None


def canonical_hyperparams(params: dict[str, Any], where: str) -> dict[str, Any]:
    """``params`` (one source of hyperparameters) with its ``policy_kwargs`` and each ``memory_kwargs`` entry in
    fw-agents' names (:func:`canonical_policy_kwargs`). Applied to every source before they are merged, so that
    a later source overrides an earlier one whichever spelling each uses, and a run's config has one spelling."""
    params = dict(params)
    if isinstance(params.get("policy_kwargs"), dict):
        params["policy_kwargs"] = canonical_policy_kwargs(params["policy_kwargs"], f"{where}: policy_kwargs")
    if isinstance(params.get("memory_kwargs"), dict):
        params["memory_kwargs"] = {
            choice: canonical_policy_kwargs(kwargs, f"{where}: memory_kwargs.{choice}")
            if isinstance(kwargs, dict)
            else kwargs
            for choice, kwargs in params["memory_kwargs"].items()
        }
    return params


def to_schedule(value: Any) -> Any:
    """``"lin_7e-4"`` -> a linear decay to 0 (rl-zoo3's notation); anything else unchanged."""
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            return LinearSchedule(float(value[4:]), 0.0, 1.0)
        except ValueError:
            raise CLIError(f"bad schedule {value!r}: expected lin_<number>, e.g. lin_7e-4") from None
    return value


def import_object(name: str) -> Any:
    """``"nn.ReLU"``, ``"th.optim.RMSprop"``, ``"package.module.Name"`` or ``"package.module:Name"`` -> object."""
    for short, full in (("nn.", "torch.nn."), ("th.", "torch.")):
        if name.startswith(short):
            name = full + name[len(short) :]
    module_name, sep, attribute = name.partition(":") if ":" in name else name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise CLIError(f"cannot import {name!r}") from None


def resolve_objects(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Policy kwargs as written in YAML -> as the policy takes them: ``activation_fn`` and ``*_class`` strings
    are imported (``activation_fn: nn.ReLU``)."""
    return {
        key: import_object(value)
        if isinstance(value, str) and (key == "activation_fn" or key.endswith("_class"))
        else value
        for key, value in kwargs.items()
    }


def check_device(device: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``)."""
    try:
        th.device("cpu" if device == "auto" else device)
    except RuntimeError:
        raise CLIError(f"unknown device {device!r}; e.g. cpu, cuda, cuda:0, auto") from None
    if device.startswith("cuda") and not th.cuda.is_available():
        raise CLIError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    return device


def check_positive(name: str, value: Any) -> int:
    """An integer count >= 1, else :class:`CLIError`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # YAML 1e6 and 1_000_000 both mean a count
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CLIError(f"{name} must be a positive integer, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------- environments
def memory_env_ids() -> list[str]:
    """The ids registered by ``envs`` (the memory tasks)."""
    import envs

    return envs.registered_ids()


def resolve_env_id(env_id: str) -> str:
    """Check that ``env_id`` is registered (after importing our ``envs`` and MiniGrid); ``module:Id`` imports
    ``module`` first, as ``gymnasium.make`` does. Returns the id without the module part."""
    import minigrid  # noqa: F401  (registers MiniGrid-…)

    import envs  # noqa: F401  (registers fw_agents/…)

    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise CLIError(f"cannot import {module!r} for environment {env_id!r}: {error}") from None
    if name not in gym.registry:
        raise CLIError(
            f"unknown environment {name!r}; memory environments: {', '.join(memory_env_ids())} "
            "(or any registered Gymnasium id)"
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
    """``--policy`` choice and the env's spaces -> (alias, policy class), e.g. ``("MlpFastWeightsPolicy", …)``."""
    from sb3_contrib.ppo_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy

    from fw_agents.policies import POLICY_ALIASES

    if not isinstance(action_space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise CLIError(
            f"action space {action_space} is not supported: the policies take Box, Discrete, "
            "MultiDiscrete or MultiBinary actions"
        )
    alias = f"{_policy_kind(observation_space)}{POLICY_MEMORY[choice]}Policy"
    lstm = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
    }
    return alias, {**POLICY_ALIASES, **lstm}[alias]


def policy_kwargs_for(choice: str, params: dict[str, Any]) -> dict[str, Any]:
    """The policy kwargs for ``--policy choice``: ``policy_kwargs`` plus ``memory_kwargs[choice]``, in the names
    the policy takes (fw-agents' for ours; sb3-contrib's for ``lstm``, by the same table, see
    :func:`fw_agents.policies.sb3_contrib_policy_kwargs`), and class names imported."""
    from fw_agents.policies import sb3_contrib_policy_kwargs

    kwargs = merge(params.get("policy_kwargs") or {}, (params.get("memory_kwargs") or {}).get(choice) or {})
    if choice == "lstm":
        try:
            kwargs = sb3_contrib_policy_kwargs(kwargs)
        except ValueError as error:
            raise CLIError(f"policy_kwargs: {error}") from None
    else:
        kwargs = canonical_policy_kwargs(kwargs, "policy_kwargs")
    return resolve_objects(kwargs)


def load_algorithm(algo: str) -> type[BaseAlgorithm]:
    """``"a2c"`` -> ``RecurrentA2C``; ``"ppo"`` -> ``RecurrentPPO``."""
    if algo not in ALGORITHMS:
        raise CLIError(f"unknown algorithm {algo!r}; choices: {', '.join(ALGORITHMS)}")
    module, _, name = ALGORITHMS[algo].partition(":")
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------------------------- run folders
def default_save_dir(root: str | Path, algo: str, env_id: str, policy: str, seed: int) -> Path:
    """``runs/a2c-fw_agents_Catch-N16-M3-v0-fast-weights-s0`` (the env's namespace kept: our MiniGrid ids
    share their names with MiniGrid's)."""
    return Path(root) / f"{algo}-{env_id.replace('/', '_').replace(':', '_')}-{policy}-s{seed}"


def check_save_dir_free(save_dir: Path) -> None:
    """Refuse a folder that already holds something: a run is never overwritten."""
    if save_dir.exists() and (not save_dir.is_dir() or any(save_dir.iterdir())):
        hint = (
            f"continue it with --resume {save_dir}" if (save_dir / CONFIG_NAME).exists() else "it is not a run folder"
        )
        raise CLIError(f"{save_dir} is not empty ({hint}); choose another --save-dir or remove it first")


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


def load_model(
    algo_class: type[BaseAlgorithm], path: Path, env: VecEnv | None, device: str, **kwargs: Any
) -> BaseAlgorithm:
    """``algo_class.load``; a missing, corrupt or mismatched file, or one with non-finite parameters (which
    earlier versions could save after training diverged), is a :class:`CLIError`."""
    from fw_agents.nonfinite import first_non_finite_parameter

    try:
        model = algo_class.load(str(path), env=env, device=device, **kwargs)
    except (
        OSError,
        EOFError,
        AssertionError,  # SB3: "No data found in the saved file"
        KeyError,
        ValueError,
        RuntimeError,
        TypeError,
        AttributeError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
    ) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        raise CLIError(f"cannot load {algo_class.__name__} model {path}: {message}") from None
    name = first_non_finite_parameter(model.policy)
    if name is not None:
        raise CLIError(f"{path} holds non-finite parameters ({name}): its training diverged; use an earlier checkpoint")
    return model


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
