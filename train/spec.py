"""One training run, specified and checked: :class:`RunSpec`, the one thing the commands pass to each other.

A spec is a pydantic model: its fields are typed and bounded, every value is checked when it is made, before any
work starts (nothing written, no env stepped, no policy built), and a bad one is a ``ValueError`` naming it and what
is allowed. It is written as is into the run's ``config.yml`` (:meth:`RunSpec.record`) and read back the same
(:meth:`RunSpec.from_record`), so grids and tuners hand their cells specs (``spec.model_copy(update=...)``), never
argv. Made in three ways:

* ``RunSpec(algo="a2c", env_id="fw_agents/Catch-N16-M3-v0", policy="fast-weights", ...)``: exactly what is given;
  ``hyperparams`` left out means the algorithm's ``train/hyperparams.yml`` entry for the env.
* :meth:`RunSpec.build`: the command lines' sources, merged in one order of precedence (later wins):
  ``train/hyperparams.yml`` (the algorithm's ``default``, then the env's entry) < ``config`` (``--config``: a flat
  mapping, ``{env id: mapping}`` as rl-zoo3's hyperparameter files, or a run's ``config.yml``) < ``hparams``
  (``--hparams``) < the flags ``n_envs``, ``total_timesteps``, ``hidden_size``, ``policy_kwargs``. Nested mappings
  merge key by key; policy options may use fw-agents' names or sb3-contrib's in every source
  (:func:`fw_agents.canonical_policy_kwargs`), and ``memory_kwargs[policy]`` (one ``--policy``'s options) is folded
  into ``policy_kwargs`` after every source's ``policy_kwargs``, with the flags' options last.
* :meth:`RunSpec.resumed`: a run's ``config.yml``, to continue it from its newest intact state.

Values a library checks itself (the policy's and the memory core's options, the env's arguments) are checked by it
when :class:`~train.experiment.Experiment` builds the model, which also comes before any work.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import torch as th
import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    model_validator,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from fw_agents.policies import canonical_policy_kwargs, policy_kwargs_for_class
from fw_agents.registry import get_memory, memory_names
from train import runs
from train.cli import MAX_SEED, CLIError, check_output_path, load_yaml, one_line

HYPERPARAMS_FILE = Path(__file__).with_name("hyperparams.yml")
#: Algorithms by name, as ``module:Class`` (imported on use).
ALGORITHMS: dict[str, str] = {"a2c": "fw_agents.a2c:RecurrentA2C", "ppo": "fw_agents.ppo:RecurrentPPO"}
#: Default env per algorithm. A2C: the paper's partially observable Catch (N=16, M=3), where fast weights learn in
#: the fewest steps (docs/results.md); PPO: CartPole without velocities, with rl-zoo3's RecurrentPPO settings.
DEFAULT_ENVS = {"a2c": "fw_agents/Catch-N16-M3-v0", "ppo": "fw_agents/CartPoleNoVel-v1"}
DEFAULT_POLICY = "fast-weights"
#: Episodes per periodic evaluation; a resumed run keeps its own, so that evaluations.npz stays one array.
DEFAULT_EVAL_EPISODES = 20
#: Bounds of sizes from any source (flag, file, hyperparameter): beyond them a run exhausts memory or time before
#: it fails. 4096 envs is 32x Catch's 128; 10^12 steps, years on any machine.
MAX_ENVS, MAX_TIMESTEPS = 4096, 10**12
#: Hyperparameter keys the run handles itself; every other key goes to the algorithm's constructor.
RUN_KEYS = ("n_envs", "n_timesteps", "normalize", "env_kwargs", "policy_kwargs", "memory_kwargs")
#: Arguments of the algorithms that the run sets from its own fields, never from hyperparameters.
SET_BY_THE_RUN = {"seed": "seed", "device": "device", "verbose": "verbose", "tensorboard_log": "tensorboard_log"}


# ----------------------------------------------------------------------------------------------- value types
def _integral(value: Any) -> Any:
    """YAML reads ``1e6`` (and rl-zoo3's ``!!float 1e5``) as a float: an integral one counts as an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _schedule(value: Any) -> float | str:
    """A number > 0, or ``lin_<x>``: rl-zoo3's linear decay from x > 0 to 0 (made by :func:`to_schedule`)."""
    try:
        number = float(value[4:] if isinstance(value, str) and value.startswith("lin_") else value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or not 0 < number < float("inf"):
        raise ValueError("must be a number > 0 or a schedule lin_<number> (e.g. lin_7e-4)")
    return value


def Int(low: int, high: int | None = None) -> Any:  # noqa: N802  (a type)
    """An int in ``[low, high]``: strict (no bool, no string), an integral float accepted."""
    return Annotated[int, Field(strict=True, ge=low, le=high), BeforeValidator(_integral)]


def Float(**bounds: float) -> Any:  # noqa: N802
    """A finite float within ``bounds`` (pydantic's ``ge``, ``gt``, ``le``): strict (an int counts, a bool does not)."""
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]


Schedule = Annotated[float | str, BeforeValidator(_schedule)]


def to_schedule(value: Any) -> Any:
    """``"lin_7e-4"`` -> a linear decay from 7e-4 to 0; anything else unchanged."""
    return LinearSchedule(float(value[4:]), 0.0, 1.0) if isinstance(value, str) else value


class NormalizeOptions(BaseModel):
    """``normalize`` given as ``VecNormalize``'s keyword arguments (``training`` is the run's to set)."""

    model_config = ConfigDict(extra="forbid")
    norm_obs: StrictBool = True
    norm_reward: StrictBool = True
    clip_obs: Float(gt=0) = 10.0
    clip_reward: Float(gt=0) = 10.0
    gamma: Float(ge=0, le=1) = 0.99
    epsilon: Float(gt=0) = 1e-8
    norm_obs_keys: list[str] | None = None


class Hyperparams(BaseModel):
    """Every hyperparameter the algorithms (RecurrentA2C, RecurrentPPO) or the run take, typed and bounded; other
    keys are checked against the algorithm's signature by :class:`RunSpec`, and their values by the algorithm."""

    model_config = ConfigDict(extra="allow")
    n_envs: Int(1, MAX_ENVS) = 1
    n_timesteps: Int(1, MAX_TIMESTEPS) | None = None
    normalize: StrictBool | NormalizeOptions = False
    env_kwargs: dict[str, Any] = {}
    policy_kwargs: dict[str, Any] = {}
    n_steps: Int(1, 10**6) | None = None
    batch_size: Int(1, 10**7) | None = None
    n_epochs: Int(1, 10**4) | None = None
    stats_window_size: Int(1, 10**6) | None = None
    sequence_length: Int(1, 10**6) | None = None
    sde_sample_freq: Int(-1) | None = None
    gamma: Float(ge=0, le=1) | None = None
    gae_lambda: Float(ge=0, le=1) | None = None
    max_grad_norm: Float(gt=0) | None = None
    rms_prop_eps: Float(gt=0) | None = None
    target_kl: Float(gt=0) | None = None
    ent_coef: Float(ge=0) | None = None
    vf_coef: Float(ge=0) | None = None
    use_rms_prop: StrictBool | None = None
    use_sde: StrictBool | None = None
    normalize_advantage: StrictBool | None = None
    learning_rate: Schedule | None = None
    clip_range: Schedule | None = None
    clip_range_vf: Schedule | None = None


# ----------------------------------------------------------------------------------------------- sources
def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested mappings key by key."""
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = merge(merged[key], value) if both else value
    return merged


def canonical_source(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One source of hyperparameters with its policy options in our names (``policy_kwargs`` and each
    ``memory_kwargs`` entry), rl-zoo3's ``policy_kwargs`` and ``normalize`` strings read first."""
    params = dict(params)
    for key in ("policy_kwargs", "normalize"):  # rl-zoo3 writes these as Python expressions in strings
        if isinstance(params.get(key), str) and params[key].lstrip().startswith(("dict(", "{")):
            params[key] = zoo_expression(params[key], f"{where}: {key}")

    def canonical(kwargs: Any, name: str) -> Any:
        try:
            return canonical_policy_kwargs(kwargs) if isinstance(kwargs, Mapping) else kwargs
        except ValueError as error:
            raise CLIError(f"{where}: {name}: {error}") from None

    if "policy_kwargs" in params:
        params["policy_kwargs"] = canonical(params["policy_kwargs"], "policy_kwargs")
    if isinstance(params.get("memory_kwargs"), Mapping):
        params["memory_kwargs"] = {c: canonical(k, f"memory_kwargs.{c}") for c, k in params["memory_kwargs"].items()}
    return params


def zoo_expression(text: str, where: str) -> dict[str, Any]:
    """rl-zoo3's ``"dict(net_arch=[64], activation_fn=nn.ReLU)"`` read without running it: literals stay values,
    dotted names (``nn.ReLU``) become the names :func:`import_object` imports."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            return {keyword.arg: value(keyword.value) for keyword in node.keywords}
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, ast.List | ast.Tuple):
            return [value(element) for element in node.elts]
        return ast.unparse(node) if isinstance(node, ast.Name | ast.Attribute) else ast.literal_eval(node)

    try:
        return dict(value(ast.parse(text.strip(), mode="eval").body))
    except (SyntaxError, ValueError, TypeError) as error:
        raise CLIError(f"{where}: {text!r} is not a dict of literals and names ({error})") from None


def config_file_params(path: str | Path, env_id: str) -> dict[str, Any]:
    """A ``--config`` file: a run's ``config.yml`` (its ``hyperparams``), a file of entries per env (rl-zoo3's
    hyperparameter files: the entry of ``env_id``, with or without its namespace; its ``policy`` line names the
    policy rl-zoo3 trains, and its ``MemoryStatsCallback`` our runs have already), or a flat mapping."""
    data = load_yaml(path, "config file")
    if isinstance(data.get("hyperparams"), dict):
        return data["hyperparams"]
    name = env_id.rpartition(":")[2]
    entry = next((data[key] for key in (name, name.rpartition("/")[2]) if isinstance(data.get(key), dict)), None)
    per_env = data and all(isinstance(v, dict) for v in data.values()) and not set(data) & set(Hyperparams.model_fields)
    if entry is None and per_env:
        raise CLIError(f"--config {path} has no entry for {name}; its entries: {', '.join(map(str, data))}")
    params = {key: value for key, value in (entry or data).items() if key != "policy"}
    callbacks = params.pop("callback", [])
    names = [
        next(iter(c)) if isinstance(c, dict) else c for c in (callbacks if isinstance(callbacks, list) else [callbacks])
    ]
    if not all(str(name).endswith(".MemoryStatsCallback") for name in names):
        raise CLIError(f"--config {path}: callback {callbacks!r} is rl-zoo3's to run; train with rl-zoo3 for it")
    return params


def fold_memory_kwargs(params: dict[str, Any], policy: str) -> dict[str, Any]:
    """``params`` with ``memory_kwargs[policy]`` merged into ``policy_kwargs`` and ``memory_kwargs`` dropped, so that
    the run's config shows what the policy got."""
    params = dict(params)
    memory_kwargs = params.pop("memory_kwargs", None) or {}
    unknown = sorted(set(memory_kwargs) - set(memory_names())) if isinstance(memory_kwargs, Mapping) else None
    if unknown or unknown is None or not all(isinstance(v, Mapping | None) for v in memory_kwargs.values()):
        raise CLIError(f"memory_kwargs must map --policy choices ({', '.join(memory_names())}) to mappings of "
                       f"options, got {memory_kwargs!r}")  # fmt: skip
    policy_kwargs = params.get("policy_kwargs") or {}
    if not isinstance(policy_kwargs, Mapping):
        raise CLIError(f"policy_kwargs must be a mapping (e.g. {{hidden_size: 64}}), got {policy_kwargs!r}")
    params["policy_kwargs"] = merge(policy_kwargs, memory_kwargs.get(policy) or {})
    return params


# ----------------------------------------------------------------------------------------------- envs, algorithms
def resolve_env_id(env_id: str) -> str:
    """The registered id of ``env_id`` (after importing our ``envs`` and MiniGrid; ``module:Id`` imports ``module``
    first, as ``gymnasium.make`` does); a :class:`CLIError` naming the memory envs if it is unknown."""
    import minigrid  # noqa: F401  (registers MiniGrid-...)

    import envs  # registers fw_agents/...

    module, sep, name = env_id.rpartition(":")
    try:
        if sep:
            importlib.import_module(module)
    except (ImportError, TypeError, ValueError) as error:  # TypeError, ValueError: not a module name ("../x")
        raise CLIError(f"cannot import {module!r} for environment {env_id!r}: {error}") from None
    if name not in gym.registry:
        raise CLIError(f"unknown environment {name!r}; memory environments: {', '.join(envs.registered_ids())} "
                       "(or any registered Gymnasium id)")  # fmt: skip
    return name


def make_env(
    env_id: str, n_envs: int, seed: int | None, env_kwargs: dict[str, Any] | None = None,
    normalize: bool | dict[str, Any] = False, stats_path: str | Path | None = None, training: bool = True,
) -> VecEnv:  # fmt: skip
    """SB3's ``make_vec_env`` (Monitor-wrapped DummyVecEnv), in ``VecNormalize`` if ``normalize`` (from the saved
    statistics at ``stats_path``); ``training=False`` freezes the statistics and returns raw rewards (evaluation)."""
    try:
        venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    except (TypeError, ValueError, gym.error.Error) as error:
        raise CLIError(f"cannot make environment {env_id!r} with {env_kwargs or {}}: {error}") from None
    if stats_path is not None:
        venv = runs.load_vecnormalize(stats_path, venv)
    elif normalize:
        venv = VecNormalize(venv, **(normalize if isinstance(normalize, dict) else {}))
    if isinstance(venv, VecNormalize) and not training:
        venv.training, venv.norm_reward = False, False
    return venv


def load_algorithm(algo: str) -> type:
    """``"a2c"`` -> ``RecurrentA2C``; ``"ppo"`` -> ``RecurrentPPO``."""
    if algo not in ALGORITHMS:
        raise CLIError(f"unknown algorithm {algo!r}; choices: {', '.join(ALGORITHMS)}")
    return import_object(ALGORITHMS[algo])


def algorithm_arguments(algo_class: type) -> set[str]:
    """The constructor arguments of ``algo_class`` that hyperparameters may set (a subclass that passes ``**kwargs``
    on takes its own arguments and its base class's)."""
    taken: set[str] = set()
    for cls in (c for c in algo_class.__mro__ if "__init__" in vars(c)):
        parameters = inspect.signature(cls.__init__).parameters.values()
        taken |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if all(p.kind is not p.VAR_KEYWORD for p in parameters):
            break
    return taken - {"self", "policy", "env", "policy_kwargs", "_init_setup_model", *SET_BY_THE_RUN}


def policy_kwargs_for(policy_class: type, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``kwargs`` in the names ``policy_class`` takes (ours; sb3-contrib's for its LSTM policies), with
    ``activation_fn`` and ``*_class`` names imported (each checked to be the kind of class it must be)."""
    try:
        kwargs = policy_kwargs_for_class(policy_class, kwargs or {})
    except ValueError as error:
        raise CLIError(f"policy_kwargs: {error}") from None
    for key, value in kwargs.items():
        if isinstance(value, str) and (key == "activation_fn" or key.endswith("_class")):
            kwargs[key] = import_object(value)
            base = {"activation_fn": th.nn.Module, "features_extractor_class": BaseFeaturesExtractor,
                    "optimizer_class": th.optim.Optimizer}.get(key, object)  # fmt: skip
            if not (isinstance(kwargs[key], type) and issubclass(kwargs[key], base)):
                raise CLIError(f"policy_kwargs.{key} must name a {base.__name__} class, got {value!r}")
    return kwargs


def policy_class_for(policy: str, venv: VecEnv, algo_class: type) -> type:
    """The policy class a saved model was trained with: a ``--policy`` choice (the registry's class for the env's
    spaces), or what rl-zoo3 records, an alias of the algorithm (``MlpLstmPolicy``) or a policy class's dotted name."""
    if policy in memory_names():
        return get_memory(policy).policy_for(venv.observation_space, venv.action_space)[1]
    found = getattr(algo_class, "policy_aliases", {}).get(policy) or import_object(policy)
    if not (isinstance(found, type) and issubclass(found, BasePolicy)):
        raise CLIError(f"the run's policy {policy!r} is not a policy class")
    return found


def check_device(device: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``)."""
    try:
        th.device("cpu" if device == "auto" else device)
    except (RuntimeError, TypeError):
        raise CLIError(f"unknown device {device!r}; e.g. cpu, cuda, cuda:0, auto") from None
    if device.startswith("cuda") and not th.cuda.is_available():
        raise CLIError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    return device


def import_object(name: str) -> Any:
    """``"nn.ReLU"``, ``"th.optim.RMSprop"``, ``"package.module.Name"`` or ``"package.module:Name"`` -> object."""
    full = "torch." + name[3:] if name.startswith("th.") else "torch." + name if name.startswith("nn.") else name
    module_name, _, attribute = full.partition(":") if ":" in full else full.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise CLIError(f"cannot import {name!r}") from None


# ----------------------------------------------------------------------------------------------- the spec
class RunSpec(BaseModel):
    """Everything one training run needs, checked when made (see the module docstring).

    :param algo: ``"a2c"`` (:class:`fw_agents.RecurrentA2C`) or ``"ppo"`` (:class:`fw_agents.RecurrentPPO`).
    :param env_id: a registered Gymnasium id, ``module:Id`` to import ``module`` first (default: per algorithm).
    :param policy: the memory, a ``--policy`` choice; the policy class follows the env's observation space.
    :param hyperparams: the effective hyperparameters (None: ``train/hyperparams.yml``'s for the algorithm and env).
    :param total_timesteps: env steps to train now (None: ``hyperparams["n_timesteps"]``); resuming, steps to add.
    :param save_dir: the run folder, new or empty (None: ``runs/<algo>-<env>-<policy>-s<seed>``).
    :param tensorboard_log: TensorBoard root, None for none.
    :param eval_freq: env steps between evaluations (None: 1/10 of the run; 0: none).
    :param deterministic_eval: the periodic evaluations (and the best model) act deterministically; False: with
        sampled actions. The final evaluation records both.
    :param checkpoint_freq: env steps between checkpoints (None: 1/5 of the run; 0: none).
    :param log_interval: rollouts between log dumps (None: about 100 dumps per run).
    :param resume: a model of a run to continue (set by :meth:`resumed`).
    :param archive_newer: with ``resume``, an older model or checkpoint of a run that has later ones: move the later
        files into ``RUN/archive-<time>/`` when training starts (refused otherwise).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Recorded as "algorithm" (config.yml's name for it since fw-agents 0.1).
    algo: str = Field("a2c", validation_alias=AliasChoices("algo", "algorithm"), serialization_alias="algorithm")
    env_id: str | None = None
    policy: str = DEFAULT_POLICY
    seed: Int(0, MAX_SEED) = 0
    hyperparams: dict[str, Any] | None = None
    hyperparams_sources: list[str] = Field(default_factory=list)
    total_timesteps: Int(1, MAX_TIMESTEPS) | None = None
    save_dir: Path | None = None
    tensorboard_log: str | None = "runs"
    device: str = "cpu"
    threads: Int(1, os.cpu_count() or 1) = 1
    eval_freq: Int(0) | None = None
    eval_episodes: Int(1, 10**6) = DEFAULT_EVAL_EPISODES
    deterministic_eval: StrictBool = True
    final_eval_episodes: Int(0, 10**6) = 100
    checkpoint_freq: Int(0) | None = None
    log_interval: Int(1) | None = None
    progress_bar: StrictBool = False
    verbose: Int(0, 2) = 1
    command: str | None = None
    resume: Path | None = None
    archive_newer: StrictBool = False
    _archive: runs.Archive | None = PrivateAttr(default=None)
    _resume_message: str = PrivateAttr(default="")

    def __init__(self, **fields: Any) -> None:
        """Check every field (module docstring); a bad value is a one-line ``ValueError`` (:class:`CLIError`)."""
        try:
            super().__init__(**fields)
        except ValidationError as error:
            raise CLIError(one_line(error)) from None

    @model_validator(mode="after")
    def _check(self) -> RunSpec:
        """The defaults that depend on other fields; the hyperparameters against the algorithm; device and paths."""
        algo_class = load_algorithm(self.algo)
        if self.policy not in memory_names():
            raise CLIError(f"unknown policy {self.policy!r}; choices: {', '.join(memory_names())}")
        self.env_id = self.env_id or DEFAULT_ENVS[self.algo]
        if self.hyperparams is None:
            self.hyperparams, source = default_hyperparams(self.algo, resolve_env_id(self.env_id))
            self.hyperparams_sources = [source]
        else:
            resolve_env_id(self.env_id)
        params = fold_memory_kwargs(canonical_source(self.hyperparams, "hyperparams"), self.policy)
        owned = sorted(set(params) & set(SET_BY_THE_RUN))
        if owned:
            raise CLIError(
                f"{', '.join(owned)} cannot be set as a hyperparameter: use the run's own option (--{owned[0]})"
            )
        accepted = algorithm_arguments(algo_class)
        unknown = sorted(set(params) - accepted - set(RUN_KEYS))
        if unknown:
            raise CLIError(f"unknown hyperparameter(s) {', '.join(unknown)} for {self.algo}; it takes "
                           f"{', '.join(sorted(accepted))} and {', '.join(RUN_KEYS)}")  # fmt: skip
        checked = Hyperparams.model_validate(params)
        self.hyperparams = {
            **params,
            **checked.model_dump(exclude_unset=True, exclude_none=True),
            "n_envs": checked.n_envs,
        }
        try:
            yaml.safe_dump(self.hyperparams)
        except yaml.YAMLError:
            raise CLIError("hyperparameters must be plain values (numbers, strings, lists, mappings) so that the run's "
                           "config.yml can record them; give classes by name (activation_fn: nn.ReLU) and schedules "
                           "as lin_<number>") from None  # fmt: skip
        if self.total_timesteps is None and checked.n_timesteps is None:
            raise CLIError("the number of timesteps must be a positive integer: set n_timesteps or --total-timesteps")
        check_device(self.device)
        name = f"{self.algo}-{self.env_id.replace('/', '_').replace(':', '_')}-{self.policy}-s{self.seed}"
        self.save_dir = Path("runs") / name if self.save_dir is None else self.save_dir
        if self.resume is None:
            if self.archive_newer:
                raise CLIError("--archive-newer only applies with --resume (of an older model or checkpoint of a run)")
            runs.check_new_run_dir(check_output_path(self.save_dir, "--save-dir", "folder"))
        if self.tensorboard_log is not None:
            check_output_path(self.tensorboard_log, "--tensorboard-log", "folder")
        return self

    # ------------------------------------------------------------------------------------------- derived
    @property
    def gym_id(self) -> str:
        """The registered id (``env_id`` without its ``module:`` part)."""
        return self.env_id.rpartition(":")[2]

    @property
    def n_timesteps(self) -> int:
        """Env steps this run trains for."""
        return self.total_timesteps or self.hyperparams["n_timesteps"]

    @property
    def resume_message(self) -> str:
        """What a resumed spec continues from, said once the run holds its folder (by the Experiment)."""
        return self._resume_message

    @property
    def archive(self) -> runs.Archive | None:
        """Files to set aside when training starts (an older state resumed with ``archive_newer``, or the leftovers of
        a run that stopped before its first save); nothing is moved before then."""
        return runs.never_saved_archive(self.save_dir) if self.resume is None else self._archive

    def make_env(self, n_envs: int, seed: int, training: bool = True, stats_path: Path | None = None) -> VecEnv:
        """``n_envs`` copies of the run's env from ``seed``, in ``VecNormalize`` if the run normalises (frozen, raw
        rewards, unless ``training``)."""
        params, gym_id = self.hyperparams, self.env_id.rpartition(":")[2]
        return make_env(gym_id, n_envs, seed, params.get("env_kwargs"), params.get("normalize"), stats_path, training)

    def model_kwargs(self) -> dict[str, Any]:
        """The algorithm's keyword arguments: the hyperparameters it takes (schedules made: ``lin_7e-4``), and
        ``policy_kwargs`` as the ``--policy``'s classes take them (:func:`policy_kwargs_for`)."""
        policy_kwargs = policy_kwargs_for(get_memory(self.policy).policy("Mlp"), self.hyperparams["policy_kwargs"])
        algorithm = {key: to_schedule(value) for key, value in self.hyperparams.items() if key not in RUN_KEYS}
        return {**algorithm, "policy_kwargs": policy_kwargs, "seed": self.seed, "device": self.device,
                "verbose": self.verbose}  # fmt: skip

    # ------------------------------------------------------------------------------------------- records
    def record(self) -> dict[str, Any]:
        """The spec as the run's ``config.yml`` holds it (plain values; read back by :meth:`from_record`)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"resume", "archive_newer"})

    @classmethod
    def from_record(cls, record: Mapping[str, Any], **update: Any) -> RunSpec:
        """A spec from :meth:`record`'s mapping (a run's ``config.yml`` or a grid cell's file), with ``update``."""
        names = {name for key, f in cls.model_fields.items() for name in (key, f.serialization_alias)}
        return cls(**{**{key: value for key, value in record.items() if key in names}, **update})

    @classmethod
    def build(
        cls, algo: str, env_id: str | None = None, policy: str | None = None, *, config: str | Path | None = None,
        hparams: dict[str, Any] | None = None, n_envs: int | None = None, total_timesteps: int | None = None,
        hidden_size: int | None = None, policy_kwargs: dict[str, Any] | None = None, **options: Any,
    ) -> RunSpec:  # fmt: skip
        """A new run from the command lines' sources, in the order of precedence of the module docstring.

        :param options: the other fields (``seed``, ``save_dir``, ``device``, ...).
        """
        load_algorithm(algo)
        env_id, policy = env_id or DEFAULT_ENVS[algo], policy or DEFAULT_POLICY
        params, source = default_hyperparams(algo, resolve_env_id(env_id))
        sources = [source]
        for name, given in ((f"--config {config}", config), ("--hparams", hparams)):
            if given:
                given = config_file_params(config, env_id) if given is config else given
                params, sources = merge(params, canonical_source(given, name)), [*sources, name]
        flags = {"n_envs": n_envs, "n_timesteps": _integral(total_timesteps)}
        params.update({key: value for key, value in flags.items() if value is not None})
        flags = {} if hidden_size is None else {"hidden_size": hidden_size}
        flag_kwargs = canonical_source({"policy_kwargs": {**flags, **(policy_kwargs or {})}}, "--policy-kwargs")[
            "policy_kwargs"
        ]
        if flag_kwargs:  # as this policy's memory_kwargs: after every source's policy_kwargs and memory_kwargs
            memory_kwargs = params.get("memory_kwargs") if isinstance(params.get("memory_kwargs"), dict) else {}
            params["memory_kwargs"] = merge(memory_kwargs, {policy: flag_kwargs})
        return cls(algo=algo, env_id=env_id, policy=policy, hyperparams=params, hyperparams_sources=sources, **options)

    @classmethod
    def resumed(cls, path: str | Path, algo: str, total_timesteps: int | None = None, archive_newer: bool = False,
                **options: Any) -> RunSpec:  # fmt: skip
        """Continue the run of ``path`` with its own settings: a run folder from its newest intact state, a model file
        from that file (:func:`train.runs.resume_target`; which one, the run says on stdout once it holds the folder).

        :param options: the fields that do not change the model (``device``, ``eval_freq``, ...); ``eval_episodes``
            and ``deterministic_eval`` must be the run's, so that ``evaluations.npz`` stays one kind of array;
            ``tensorboard_log``, when given, moves the continuation's TensorBoard logging (default: the run's root).
        """
        target = runs.resume_target(path, archive_newer)
        record = runs.run_record(target.model_path)
        if record["algorithm"] != algo:
            raise CLIError(f"{target.model_path} was trained with {record['algorithm']!r}, not {algo!r}: resume it "
                           f"with python -m train.{record['algorithm']}")  # fmt: skip
        for name, flag in (("eval_episodes", "--eval-episodes"), ("deterministic_eval", "--stochastic-eval")):
            if options.get(name) not in (None, record.get(name, cls.model_fields[name].default)):
                raise CLIError(f"{flag} cannot be changed when resuming (evaluations.npz keeps one kind of array)")
            options.pop(name, None)
        spec = cls.from_record(record, total_timesteps=total_timesteps, save_dir=target.run_dir,
                               resume=target.model_path, archive_newer=archive_newer, **options)  # fmt: skip
        spec._archive, spec._resume_message = target.archive, target.message
        return spec


def default_hyperparams(algo: str, env_id: str) -> tuple[dict[str, Any], str]:
    """``train/hyperparams.yml``: the algorithm's ``default`` section updated by the env's entry, and its name."""
    table = load_yaml(HYPERPARAMS_FILE, "hyperparameter file").get(algo, {})
    source, params = f"{HYPERPARAMS_FILE.name}:{algo}.default", table.get("default", {})
    if env_id in table:
        source, params = f"{HYPERPARAMS_FILE.name}:{algo}.{env_id}", merge(params, table[env_id])
    return canonical_source(params, source), source
