"""One training run, specified and checked: :class:`RunSpec`.

A spec is built in one of three ways, and every value is checked when it is made, before any work starts
(nothing is written, no env stepped): a bad value is a :class:`~train.argtypes.CLIError` (a ``ValueError``)
naming it and what is allowed.

* ``RunSpec(algo="a2c", env_id="fw_agents/Catch-N16-M3-v0", policy="fast-weights", …)``: exactly what is given;
  ``hyperparams`` left out means the algorithm's ``train/hyperparams.yml`` entry for the env.
* :meth:`RunSpec.build`: the command lines' sources, merged in one order of precedence (later wins):

  1. ``train/hyperparams.yml``: the algorithm's ``default`` section, then the env's entry;
  2. ``config``, a YAML file (``--config``): a flat mapping, ``{env id: mapping}``, or a run's ``config.yml``;
  3. ``hparams`` (``--hparams key=value …``);
  4. the flags ``n_envs``, ``total_timesteps`` (-> ``n_timesteps``), ``hidden_size``, ``policy_kwargs``
     (``--n-envs``, ``--total-timesteps``, ``--hidden-size``, ``--policy-kwargs``).

  Nested mappings (``policy_kwargs``, ``env_kwargs``, ``memory_kwargs``) merge key by key. Every source may
  spell policy options in fw-agents' names or sb3-contrib's (:func:`fw_agents.canonical_policy_kwargs`), and is
  put in ours before merging, so a later source overrides an earlier one whichever spelling each uses. Last,
  ``memory_kwargs[policy]`` (options for one ``--policy`` only) is folded into ``policy_kwargs``; the flags'
  policy options are folded with it, so they win.
* :meth:`RunSpec.resumed`: a run's ``config.yml``, to continue it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
import yaml
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv

from fw_agents.registry import get_memory, memory_names
from train import common, safety
from train.argtypes import MAX_SEED, CLIError, check_int, check_number, check_output_path

HYPERPARAMS_FILE = Path(__file__).with_name("hyperparams.yml")
#: Default env per algorithm. A2C: the paper's partially observable Catch (N=16, M=3), which memory agents
#: learn in about 1.5M steps (~3 min on a CPU core) with hyperparams.yml's settings and where fast weights
#: learn in the fewest steps (docs/results.md). PPO: CartPole without velocities, which RecurrentPPO learns
#: with rl-zoo3's settings in 100k steps; no Catch settings are tuned for it.
DEFAULT_ENVS = {"a2c": "fw_agents/Catch-N16-M3-v0", "ppo": "fw_agents/CartPoleNoVel-v1"}
DEFAULT_POLICY = "fast-weights"
#: Episodes per periodic evaluation; a resumed run keeps its own, so that evaluations.npz stays one array.
DEFAULT_EVAL_EPISODES = 20
#: The run's own counts: (field, lowest, highest), checked as the command line's flag of the same name.
RUN_COUNTS = [
    ("total_timesteps", 1, None), ("threads", 1, None), ("eval_freq", 0, None), ("checkpoint_freq", 0, None),
    ("eval_episodes", 1, None), ("final_eval_episodes", 0, None), ("log_interval", 1, None), ("verbose", 0, 2),
]  # fmt: skip
#: Keys of a run's config.yml that resuming it needs.
RESUME_KEYS = ("algorithm", "env_id", "policy", "seed", "hyperparams")
#: Arguments of the algorithms that the run sets from its own fields, never from hyperparameters.
SET_BY_THE_RUN = {"seed": "seed", "device": "device", "verbose": "verbose", "tensorboard_log": "tensorboard_log"}


# ----------------------------------------------------------------------------------------------- value checks
Check = Callable[[str, Any], Any]  # (name, value) -> the value as kept, or CLIError naming it
_unit_interval: Check = partial(check_number, low=0.0, high=1.0)
_positive: Check = partial(check_number, low=0.0, low_inclusive=False)
_non_negative: Check = partial(check_number, low=0.0)


def _optional(check: Check) -> Check:
    return lambda name, value: None if value is None else check(name, value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise CLIError(f"{name} must be true or false, got {value!r}")
    return value


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CLIError(f"{name} must be a mapping (e.g. {{key: value}}), got {value!r}")
    return dict(value)


def to_schedule(value: Any) -> Any:
    """``"lin_7e-4"`` -> a linear decay from 7e-4 to 0 (rl-zoo3's notation); anything else unchanged."""
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            return LinearSchedule(float(value[4:]), 0.0, 1.0)
        except ValueError:
            raise CLIError(f"bad schedule {value!r}: expected lin_<number>, e.g. lin_7e-4") from None
    return value


def _positive_or_schedule(name: str, value: Any) -> Any:
    """A number > 0, or ``lin_<number > 0>``: a linear decay to 0 (learning_rate, clip_range)."""
    if not isinstance(value, str):
        return _positive(name, value)
    schedule = to_schedule(value)
    if not isinstance(schedule, LinearSchedule):
        raise CLIError(f"{name} must be a number > 0 or a schedule lin_<number>, e.g. lin_7e-4; got {value!r}")
    _positive(name, schedule.start)
    return value


#: VecNormalize's options as ``normalize`` takes them (``training`` is the run's to set).
_NORMALIZE_CHECKS: dict[str, Check] = {
    **dict.fromkeys(("norm_obs", "norm_reward"), _flag),
    **dict.fromkeys(("clip_obs", "clip_reward", "epsilon"), _positive),
    "gamma": _unit_interval,
    "norm_obs_keys": _optional(lambda name, value: [str(key) for key in value]),
}


def _normalize(name: str, value: Any) -> bool | dict[str, Any]:
    """``normalize``: false, true, or ``VecNormalize`` keyword arguments."""
    if isinstance(value, bool):
        return value
    options = _mapping(name, value)
    unknown = sorted(set(options) - set(_NORMALIZE_CHECKS))
    if unknown:
        raise CLIError(f"{name}: unknown VecNormalize option(s) {unknown}; it takes {sorted(_NORMALIZE_CHECKS)}")
    return {key: _NORMALIZE_CHECKS[key](f"{name}.{key}", option) for key, option in options.items()}


#: A check for every hyperparameter the algorithms (RecurrentA2C, RecurrentPPO) or the run take. A key an algorithm
#: takes that is missing here passes unchecked; a test keeps the table complete.
HYPERPARAMETER_CHECKS: dict[str, Check] = {
    **dict.fromkeys(("n_envs", "n_timesteps", "n_steps", "batch_size", "n_epochs", "stats_window_size"), check_int),
    **dict.fromkeys(("gamma", "gae_lambda"), _unit_interval),
    **dict.fromkeys(("max_grad_norm", "rms_prop_eps"), _positive),
    **dict.fromkeys(("ent_coef", "vf_coef"), _non_negative),
    **dict.fromkeys(("use_rms_prop", "use_sde", "normalize_advantage"), _flag),
    **dict.fromkeys(("env_kwargs", "policy_kwargs", "memory_kwargs"), _mapping),
    "learning_rate": _positive_or_schedule,
    "clip_range": _positive_or_schedule,
    "clip_range_vf": _optional(_positive_or_schedule),
    "target_kl": _optional(_positive),
    "sequence_length": _optional(check_int),
    "sde_sample_freq": partial(check_int, low=-1),
    "normalize": _normalize,
}
#: Hyperparameter keys the run handles itself; every other key goes to the algorithm's constructor.
RUN_KEYS = ("n_envs", "n_timesteps", "normalize", "env_kwargs", "policy_kwargs", "memory_kwargs")


def algorithm_arguments(algo_class: type) -> set[str]:
    """The constructor arguments of ``algo_class`` that hyperparameters may set (a subclass that passes
    ``*args, **kwargs`` on takes its own arguments and its base class's)."""
    taken: set[str] = set()
    for cls in algo_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters
        kinds = {parameter.kind for parameter in parameters.values()}
        taken |= {name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            break
    return taken - {"self", "policy", "env", "policy_kwargs", "_init_setup_model", *SET_BY_THE_RUN}


def check_hyperparams(algo_class: type, params: dict[str, Any]) -> dict[str, Any]:
    """Every key known to ``algo_class`` (or the run) and every value of the right type and range."""
    accepted = algorithm_arguments(algo_class)
    owned = sorted(set(params) & set(SET_BY_THE_RUN))
    if owned:
        raise CLIError(f"{', '.join(owned)} cannot be set as a hyperparameter: use the run's own option (--{owned[0]})")
    unknown = sorted(set(params) - accepted - set(RUN_KEYS))
    if unknown:
        raise CLIError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for {algo_class.__name__}; it takes "
            f"{', '.join(sorted(accepted))} and {', '.join(RUN_KEYS)}"
        )
    checked = {key: HYPERPARAMETER_CHECKS.get(key, lambda _, value: value)(key, value) for key, value in params.items()}
    try:
        yaml.safe_dump(checked)
    except yaml.YAMLError:
        raise CLIError(
            "hyperparameters must be plain values (numbers, strings, lists, mappings) so that the run's config.yml "
            "can record them; give classes by name (activation_fn: nn.ReLU) and schedules as lin_<number>"
        ) from None
    return checked


def check_device(device: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``)."""
    try:
        th.device("cpu" if device == "auto" else device)
    except (RuntimeError, TypeError):
        raise CLIError(f"unknown device {device!r}; e.g. cpu, cuda, cuda:0, auto") from None
    if device.startswith("cuda") and not th.cuda.is_available():
        raise CLIError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    return device


# ----------------------------------------------------------------------------------------------- sources
def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested mappings key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def canonical_policy_kwargs(kwargs: Any, where: str) -> Any:
    """Policy options in fw-agents' names (:func:`fw_agents.canonical_policy_kwargs`, the one table of them);
    anything but a mapping is returned as is, for :func:`check_hyperparams` to refuse."""
    from fw_agents.policies import canonical_policy_kwargs as canonical

    if not isinstance(kwargs, Mapping):
        return kwargs
    try:
        return canonical(kwargs)
    except ValueError as error:
        raise CLIError(f"{where}: {error}") from None


def canonical_source(params: dict[str, Any], where: str) -> dict[str, Any]:
    """One source of hyperparameters with its ``policy_kwargs`` and each ``memory_kwargs`` entry in our names."""
    params = dict(params)
    if "policy_kwargs" in params:
        params["policy_kwargs"] = canonical_policy_kwargs(params["policy_kwargs"], f"{where}: policy_kwargs")
    if isinstance(params.get("memory_kwargs"), Mapping):
        params["memory_kwargs"] = {
            choice: canonical_policy_kwargs(kwargs, f"{where}: memory_kwargs.{choice}")
            for choice, kwargs in params["memory_kwargs"].items()
        }
    return params


def default_hyperparams(algo: str, env_id: str) -> tuple[dict[str, Any], str]:
    """``train/hyperparams.yml``: the algorithm's ``default`` section updated by the env's entry, and its name."""
    table = common.load_yaml(HYPERPARAMS_FILE, "hyperparameter file").get(algo, {})
    source = f"{HYPERPARAMS_FILE.name}:{algo}.default"
    params = canonical_source(table.get("default", {}), source)
    if env_id in table:
        source = f"{HYPERPARAMS_FILE.name}:{algo}.{env_id}"
        params = merge(params, canonical_source(table[env_id], source))
    return params, source


def config_file_params(path: str | Path, env_id: str) -> dict[str, Any]:
    """A ``--config`` file: a run's ``config.yml`` (its ``hyperparams``), an rl-zoo3-style ``{env id: {...}}``
    file, or a flat mapping of hyperparameters."""
    data = common.load_yaml(path, "config file")
    if isinstance(data.get("hyperparams"), dict):
        return data["hyperparams"]
    if isinstance(data.get(env_id), dict):
        return data[env_id]
    return data


def fold_memory_kwargs(params: dict[str, Any], policy: str) -> dict[str, Any]:
    """``params`` with ``memory_kwargs[policy]`` merged into ``policy_kwargs`` and ``memory_kwargs`` dropped, so
    that the run's config shows what the policy got."""
    params = dict(params)
    memory_kwargs = _mapping("memory_kwargs", params.pop("memory_kwargs", None))
    unknown = sorted(set(memory_kwargs) - set(memory_names()))
    if unknown:
        raise CLIError(f"memory_kwargs: unknown policy {unknown}; its keys are --policy choices {memory_names()}")
    for choice, kwargs in memory_kwargs.items():
        _mapping(f"memory_kwargs.{choice}", kwargs)
    params["policy_kwargs"] = merge(
        _mapping("policy_kwargs", params.get("policy_kwargs")), memory_kwargs.get(policy) or {}
    )
    return params


# ----------------------------------------------------------------------------------------------- policy options
def import_object(name: str) -> Any:
    """``"nn.ReLU"``, ``"th.optim.RMSprop"``, ``"package.module.Name"`` or ``"package.module:Name"`` -> object."""
    full = name
    for short, long in (("nn.", "torch.nn."), ("th.", "torch.")):
        if name.startswith(short):
            full = long + name[len(short) :]
    module_name, _, attribute = full.partition(":") if ":" in full else full.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise CLIError(f"cannot import {name!r}") from None


def policy_kwargs_for(policy: str, policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` in the names the ``--policy``'s classes take (ours; sb3-contrib's for its LSTM policies,
    by the same table, :func:`fw_agents.policies.policy_kwargs_for_class`), with ``activation_fn`` and
    ``*_class`` names imported."""
    from fw_agents.policies import policy_kwargs_for_class

    try:  # every kind (Mlp, Cnn, MultiInput) of a memory's policy takes the same names
        kwargs = policy_kwargs_for_class(get_memory(policy).policy("Mlp"), policy_kwargs)
    except ValueError as error:
        raise CLIError(f"policy_kwargs: {error}") from None
    return {
        key: import_object(value)
        if isinstance(value, str) and (key == "activation_fn" or key.endswith("_class"))
        else value
        for key, value in kwargs.items()
    }


def check_env_and_policy(env_id: str, env_kwargs: dict[str, Any], policy: str, policy_kwargs: dict[str, Any]) -> None:
    """Make the env once and build the policy on its spaces, on the CPU: every check of the env's arguments, the
    policy's and the memory core's (:mod:`fw_agents.memory.base`) runs here, before any work."""
    try:
        env = gym.make(env_id, **env_kwargs)
    except (TypeError, ValueError, gym.error.Error) as error:
        raise CLIError(f"cannot make environment {env_id!r} with {env_kwargs}: {error}") from None
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    _, policy_class = common.select_policy(policy, observation_space, action_space)
    kwargs = policy_kwargs_for(policy, policy_kwargs)
    try:
        policy_class(observation_space, action_space, lambda _: 1e-3, **kwargs)
    except (ValueError, TypeError, AssertionError, RuntimeError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        raise CLIError(f"cannot build {policy_class.__name__} with policy_kwargs {policy_kwargs}: {message}") from None


# ----------------------------------------------------------------------------------------------- run folders
def default_save_dir(root: str | Path, algo: str, env_id: str, policy: str, seed: int) -> Path:
    """``runs/a2c-fw_agents_Catch-N16-M3-v0-fast-weights-s0`` (the env's namespace kept: our MiniGrid ids
    share their names with MiniGrid's)."""
    return Path(root) / f"{algo}-{env_id.replace('/', '_').replace(':', '_')}-{policy}-s{seed}"


def check_save_dir(save_dir: Path) -> safety.Archive | None:
    """For a new run: refuse a folder that already holds something (a run is never overwritten), except one left
    by a run that stopped before its first save, whose leftovers are archived when the new run starts (the returned
    plan, applied by the :class:`~train.experiment.Experiment`). A folder holding only archives is free."""
    if save_dir.is_dir():
        entries = sorted(path for path in save_dir.iterdir() if not safety.is_archive(path))
        if not entries:
            return None
        if safety.never_saved(save_dir):
            return safety.Archive(save_dir, "the leftovers of a run that stopped before its first save", entries)
    if save_dir.exists() and (not save_dir.is_dir() or any(save_dir.iterdir())):
        hint = (
            f"continue it with --resume {save_dir}"
            if (save_dir / common.CONFIG_NAME).exists()
            else "it is not a run folder"
        )
        raise CLIError(f"{save_dir} is not empty ({hint}); choose another --save-dir or remove it first")
    return None


# ----------------------------------------------------------------------------------------------- the spec
@dataclass
class RunSpec:
    """Everything one training run needs, checked when made (see the module docstring).

    :param algo: ``"a2c"`` (:class:`fw_agents.RecurrentA2C`) or ``"ppo"`` (sb3-contrib's ``RecurrentPPO``).
    :param env_id: a registered Gymnasium id, ``module:Id`` to import ``module`` first (default: per algorithm).
    :param policy: the memory, a ``--policy`` choice; the policy class follows the env's observation space.
    :param hyperparams: the effective hyperparameters (None: ``train/hyperparams.yml``'s for the algorithm and env).
        ``memory_kwargs[policy]`` is folded into ``policy_kwargs``.
    :param total_timesteps: env steps to train now (None: ``hyperparams["n_timesteps"]``); resuming, steps to add.
    :param save_dir: the run folder, new or empty (None: ``runs/<algo>-<env>-<policy>-s<seed>``).
    :param tensorboard_log: TensorBoard root, None for none.
    :param eval_freq: env steps between evaluations (None: 1/10 of the run; 0: none).
    :param deterministic_eval: the periodic evaluations (and the best model) act deterministically; False: with
        sampled actions. The final evaluation records both.
    :param checkpoint_freq: env steps between checkpoints (None: 1/5 of the run; 0: none).
    :param log_interval: rollouts between log dumps (None: about 100 dumps per run).
    :param resume: a model of a run to continue (set by :meth:`resumed`, with ``run_config``).
    :param archive_newer: with ``resume``, an older model or checkpoint of a run that has later ones: move the later
        files into ``RUN/archive-<time>/`` and continue from it (refused otherwise).
    :param archive: files to set aside when training starts (planned by :meth:`resumed` with ``archive_newer``, or
        by the save-dir check for a run that never saved); nothing is moved before then.
    """

    algo: str = "a2c"
    env_id: str | None = None
    policy: str = DEFAULT_POLICY
    seed: int = 0
    hyperparams: dict[str, Any] | None = None
    hyperparams_sources: list[str] = field(default_factory=list)
    total_timesteps: int | None = None
    save_dir: Path | None = None
    tensorboard_log: str | None = "runs"
    device: str = "cpu"
    threads: int = 1
    eval_freq: int | None = None
    eval_episodes: int = DEFAULT_EVAL_EPISODES
    deterministic_eval: bool = True
    final_eval_episodes: int = 100
    checkpoint_freq: int | None = None
    log_interval: int | None = None
    progress_bar: bool = False
    verbose: int = 1
    command: str | None = None
    resume: Path | None = None
    archive_newer: bool = False
    archive: safety.Archive | None = field(default=None, repr=False)
    run_config: dict[str, Any] | None = field(default=None, repr=False)
    #: The registered id (``env_id`` without its ``module:`` part), set on checking.
    gym_id: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        algo_class = common.load_algorithm(self.algo)
        self.env_id = self.env_id or DEFAULT_ENVS[self.algo]
        self.gym_id = common.resolve_env_id(self.env_id)
        if self.policy not in memory_names():
            raise CLIError(f"unknown policy {self.policy!r}; choices: {', '.join(memory_names())}")
        self.seed = check_int("seed", self.seed, low=0, high=MAX_SEED)
        if self.hyperparams is None:
            self.hyperparams, source = default_hyperparams(self.algo, self.gym_id)
            self.hyperparams_sources = [source]
        self.hyperparams_sources = list(self.hyperparams_sources or [])
        params = fold_memory_kwargs(
            canonical_source(_mapping("hyperparams", self.hyperparams), "hyperparams"), self.policy
        )
        params.setdefault("n_envs", 1)
        if self.total_timesteps is None and "n_timesteps" not in params:
            raise CLIError(
                "the number of timesteps must be a positive integer: set hyperparams n_timesteps or --total-timesteps"
            )
        self.hyperparams = check_hyperparams(algo_class, params)
        self.device = check_device(self.device)
        for name, low, high in RUN_COUNTS:
            if getattr(self, name) is not None:
                setattr(self, name, check_int(f"--{name.replace('_', '-')}", getattr(self, name), low, high))
        self._check_paths()
        check_env_and_policy(
            self.gym_id, self.hyperparams.get("env_kwargs") or {}, self.policy, self.hyperparams["policy_kwargs"]
        )

    def _check_paths(self) -> None:
        if self.save_dir is None:
            self.save_dir = default_save_dir("runs", self.algo, self.env_id, self.policy, self.seed)
        self.save_dir = Path(self.save_dir)
        if self.resume is None:
            if self.archive_newer:
                raise CLIError("--archive-newer only applies with --resume (of an older model or checkpoint of a run)")
            check_output_path(self.save_dir, "--save-dir", "folder")
            self.archive = check_save_dir(self.save_dir)  # a run that stopped before its first save may run again
        if self.tensorboard_log is not None:
            check_output_path(self.tensorboard_log, "--tensorboard-log", "folder")

    @property
    def n_timesteps(self) -> int:
        """Env steps this run trains for."""
        return self.total_timesteps or self.hyperparams["n_timesteps"]

    def make_env(self, n_envs: int, seed: int, training: bool = True) -> VecEnv:
        """``n_envs`` copies of the run's env from ``seed``, in ``VecNormalize`` if the run normalises (frozen,
        raw rewards, unless ``training``)."""
        params = self.hyperparams
        return common.make_env(
            self.gym_id, n_envs, seed, params.get("env_kwargs"), params.get("normalize"), training=training
        )

    def algorithm_kwargs(self) -> dict[str, Any]:
        """The hyperparameters that go to the algorithm's constructor, schedules made (``lin_7e-4``)."""
        return {key: to_schedule(value) for key, value in self.hyperparams.items() if key not in RUN_KEYS}

    def policy_kwargs(self) -> dict[str, Any]:
        """``policy_kwargs`` as the policy class takes them (:func:`policy_kwargs_for`)."""
        return policy_kwargs_for(self.policy, self.hyperparams["policy_kwargs"])

    @classmethod
    def build(
        cls,
        algo: str,
        env_id: str | None = None,
        policy: str | None = None,
        *,
        config: str | Path | None = None,
        hparams: dict[str, Any] | None = None,
        n_envs: int | None = None,
        total_timesteps: int | None = None,
        hidden_size: int | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> RunSpec:
        """A new run from the command lines' sources, in the order of precedence of the module docstring.

        :param options: the other fields of :class:`RunSpec` (``seed``, ``save_dir``, ``device``, …).
        """
        env_id = env_id or DEFAULT_ENVS.get(algo)
        policy = policy or DEFAULT_POLICY
        common.load_algorithm(algo)
        params, source = default_hyperparams(algo, common.resolve_env_id(env_id))
        sources = [source]
        if config is not None:
            params = merge(params, canonical_source(config_file_params(config, env_id), f"--config {config}"))
            sources.append(f"--config {config}")
        if hparams:
            params = merge(params, canonical_source(hparams, "--hparams"))
            sources.append("--hparams")
        if total_timesteps is not None:  # named as the user gave it, before it becomes n_timesteps
            check_int("--total-timesteps", total_timesteps)
        flags = {"n_envs": n_envs, "n_timesteps": total_timesteps}
        params.update({key: value for key, value in flags.items() if value is not None})
        flag_kwargs = {} if hidden_size is None else {"hidden_size": hidden_size}
        flag_kwargs.update(canonical_policy_kwargs(policy_kwargs or {}, "--policy-kwargs"))
        if flag_kwargs:
            # Folded as this policy's memory_kwargs: after every source's policy_kwargs and memory_kwargs.
            memory_kwargs = _mapping("memory_kwargs", params.get("memory_kwargs"))
            params["memory_kwargs"] = merge(memory_kwargs, {policy: flag_kwargs})
        return cls(algo=algo, env_id=env_id, policy=policy, hyperparams=params, hyperparams_sources=sources, **options)

    @classmethod
    def resumed(
        cls,
        path: str | Path,
        algo: str,
        total_timesteps: int | None = None,
        archive_newer: bool = False,
        **options: Any,
    ) -> RunSpec:
        """Continue the run of ``path`` with its own settings: a run folder continues from its newest intact state
        (``model.zip`` or a checkpoint), a model file from that file; which one is said on stdout once every check
        has passed (:func:`safety.resume_target`).

        :param archive_newer: continue from an older model or checkpoint of a run that has later ones, moving the
            later files into ``RUN/archive-<time>/`` when training starts (refused otherwise).
        :param options: the fields that do not change the model (``device``, ``eval_freq``, …); ``eval_episodes``
            must be the run's, so that ``evaluations.npz`` stays one array; ``tensorboard_log``, when given, moves
            the continuation's TensorBoard logging (default: the run's root).
        """
        target = safety.resume_target(path, archive_newer)
        model_path = target.model_path
        config_path = common.find_run_config(model_path)
        if config_path is None:
            raise CLIError(f"no {common.CONFIG_NAME} next to {model_path}: only runs made by these CLIs can be resumed")
        config = common.load_yaml(config_path, "run config")
        hyperparams = config.get("hyperparams") or {}
        missing = [key for key in RESUME_KEYS if key not in config]
        missing += [f"hyperparams.{key}" for key in ("n_envs", "n_timesteps") if key not in hyperparams]
        if missing:
            raise CLIError(f"{config_path} has no {missing[0]!r}: an incomplete run config cannot be resumed")
        if config["algorithm"] != algo:
            raise CLIError(
                f"{model_path} was trained with {config['algorithm']!r}, not {algo!r}: "
                f"resume it with python -m train.{config['algorithm']}"
            )
        eval_episodes = config.get("eval_episodes", DEFAULT_EVAL_EPISODES)
        if options.pop("eval_episodes", None) not in (None, eval_episodes):
            raise CLIError(f"--eval-episodes cannot be changed when resuming (the run uses {eval_episodes})")
        deterministic_eval = config.get("deterministic_eval", True)
        if options.pop("deterministic_eval", None) not in (None, deterministic_eval):
            raise CLIError("--stochastic-eval cannot be changed when resuming: evaluations.npz keeps one kind")
        spec = cls(
            algo, config["env_id"], config["policy"], config["seed"], hyperparams, config.get("hyperparams_sources"),
            total_timesteps, save_dir=config_path.parent,  # where the run is now, wherever it was made
            tensorboard_log=options.pop("tensorboard_log", config.get("tensorboard_log")),
            eval_episodes=eval_episodes, deterministic_eval=deterministic_eval, resume=model_path,
            archive_newer=archive_newer, archive=target.archive, run_config=config,
            **options,
        )  # fmt: skip
        if target.message:
            print(target.message)
        return spec
