"""Stopping training at the first non-finite value, with a message that names where it came from.

One NaN reward or observation that reaches a gradient makes every parameter NaN, and SB3's ``learn()`` would
still finish normally. The tools here stop training before that, and say what to fix:

* :class:`NonFiniteError` (a ``ValueError``): raised by all of them and by :class:`fw_agents.RecurrentA2C`'s own
  checks, so that a caller can tell a non-finite value from other errors.
* :class:`CheckFiniteVecEnv`: SB3's ``VecCheckNan`` that always raises, naming the value (observation, reward,
  or the model's action), the env index and the timestep. It checks each step's ``n_envs`` values: cheap. It also
  turns an env's own failure (an exception in its ``reset`` or ``step``, wrong observation shapes or Dict keys,
  a reward of None) and, where asked, an episode that never ends into an :class:`EnvError` that says so.
* :class:`FiniteParametersCallback`: at the start of each rollout (that is, after each update), stops if the
  update made a parameter non-finite, before the model acts, is evaluated or is saved with it.
* :func:`first_non_finite_parameter`: the check itself, also used before every save (``fw_agents.atomic``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecCheckNan, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn


class NonFiniteError(ValueError):
    """A NaN or infinite value in training data, a loss or a model's parameters; the message names its source.

    :param diverged: True when the model itself produced it (a loss, a parameter, an action) from finite data:
        the training diverged. False when the data came in non-finite (an env's observation or reward).
    """

    def __init__(self, message: str, diverged: bool = False) -> None:
        super().__init__(message)
        self.diverged = diverged


class EnvError(RuntimeError):
    """An env failed: its ``reset`` or ``step`` raised (or returned what the vectorised env cannot hold), or one of
    its episodes ran past a step guard. The message names the env, the timestep and the error; the cause is chained."""


#: ``VecCheckNan``'s names of what it checks -> the name of one value in a message. ``dones`` are booleans.
_SOURCES = {"observations": "observation", "rewards": "reward", "actions": "action"}


def _named_arrays(name: str, value: Any) -> list[tuple[str, np.ndarray]]:
    """``(label, array (n_envs, ...))`` for a checked value: one array, or one per key of a Dict/Tuple space."""
    label = _SOURCES.get(name, name)
    if isinstance(value, dict):
        return [(f"{label}[{key!r}]", np.asarray(item)) for key, item in value.items()]
    if isinstance(value, tuple):
        return [(f"{label}[{index}]", np.asarray(item)) for index, item in enumerate(value)]
    return [(label, np.asarray(value))]


def first_non_finite_env(array: np.ndarray) -> int | None:
    """Index of the first env whose entry of ``array`` (shape ``(n_envs, ...)``) is not finite, or None.
    Integer and boolean arrays cannot hold one and are skipped."""
    if not np.issubdtype(array.dtype, np.floating) or array.ndim == 0:
        return None
    finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def _kind(values: np.ndarray) -> str:
    """``nan``, ``inf`` or ``-inf``: the first non-finite kind in ``values``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    bad = values[~np.isfinite(values)]
    return str(bad[0]) if len(bad) else "finite"


class CheckFiniteVecEnv(VecCheckNan):
    """SB3's ``VecCheckNan`` (observations at reset and step, rewards, and the actions given to the env) that
    raises a :class:`NonFiniteError` naming the value, the env index and the timestep.

    :param venv: the vectorised env to check. Wrap the training env and its evaluation env alike: SB3's
        ``sync_envs_normalization`` walks both wrapper stacks side by side.
    :param name: what the env is called in messages (``"env"``, ``"evaluation env"``).
    :param start_timestep: the timestep count before the first step (a resumed model's ``num_timesteps``), so
        that messages count steps as the model does; None: no count (an evaluation env).
    """

    def __init__(
        self, venv: VecEnv, name: str = "env", start_timestep: int | None = 0, max_episode_steps: int | None = None
    ) -> None:
        super().__init__(venv, raise_exception=True, warn_once=False, check_inf=True)
        self.name = name
        self.num_timesteps = start_timestep
        # Evaluation waits for whole episodes: one that never ends would hang it without a word.
        self.max_episode_steps = max_episode_steps
        self.episode_steps = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self) -> Any:
        self.episode_steps[:] = 0
        return self._env_call("reset", super().reset)

    def step_wait(self) -> VecEnvStepReturn:
        if self.num_timesteps is not None:
            self.num_timesteps += self.num_envs  # as the algorithm counts it once the step returns
        observations, rewards, dones, infos = self._env_call("step", super().step_wait)
        if self.max_episode_steps is None:  # training: rollouts end by themselves, nothing to count
            return observations, rewards, dones, infos
        self.episode_steps = np.where(dones, 0, self.episode_steps + 1)
        if (self.episode_steps >= self.max_episode_steps).any():
            env = int(np.argmax(self.episode_steps >= self.max_episode_steps))
            raise EnvError(
                f"an episode of {self.name} {env} ran {self.max_episode_steps} steps without ending; episodes must "
                "end to be evaluated: give the env a time limit (max_episode_steps, gymnasium.wrappers.TimeLimit)"
            )
        return observations, rewards, dones, infos

    def _env_call(self, event: str, call: Any) -> Any:
        """``call()``, with an exception of the env (not a non-finite value: that is ours) as an :class:`EnvError`."""
        try:
            return call()
        except NonFiniteError:
            raise
        except Exception as error:
            at = "" if self.num_timesteps is None else f" at timestep {self.num_timesteps}"
            detail = " ".join(str(error).split()) or "(no message)"
            raise EnvError(f"{self.name} failed in {event}{at}: {type(error).__name__}: {detail}") from error

    def _check_val(self, event: str, **kwargs: Any) -> None:
        for name, value in kwargs.items():
            for label, array in _named_arrays(name, value):
                env = first_non_finite_env(array)
                if env is not None:
                    message = self._message(event, label, env, _kind(array[env]))
                    raise NonFiniteError(message, diverged=event == "step_async")

    def _message(self, event: str, label: str, env: int, kind: str) -> str:
        at = "" if self.num_timesteps is None else f" at timestep {self.num_timesteps}"
        if event == "step_async":
            return (
                f"the model gave a non-finite {label} ({kind}) to {self.name} {env}{at}: the policy's outputs are "
                "not finite; lower the learning rate or max_grad_norm"
            )
        when = " at reset" if event == "reset" else at or " after a step"
        return (
            f"a non-finite {label} ({kind}) from {self.name} {env}{when}, stopped before it reached the model; "
            f"fix the environment (or the scaling of its {label}s)"
        )


def first_non_finite_parameter(module: th.nn.Module) -> str | None:
    """The name of the first parameter of ``module`` holding a NaN or infinity, or None.
    One host synchronisation for the whole module; names are looked up only when one is found."""
    parameters = list(module.named_parameters())
    if not parameters or th.stack([th.isfinite(p).all() for _, p in parameters]).all().item():
        return None
    return next(name for name, p in parameters if not th.isfinite(p).all().item())


class FiniteParametersCallback(BaseCallback):
    """Raises :class:`NonFiniteError` at the start of a rollout if the update before it made one of the policy's
    parameters non-finite: before the model acts, is evaluated or is saved with it. One check per rollout.

    With finite observations and rewards (see :class:`CheckFiniteVecEnv`) this means the training diverged.
    """

    def _on_rollout_start(self) -> None:
        name = first_non_finite_parameter(self.model.policy)
        if name is not None:
            raise NonFiniteError(
                f"the update before timestep {self.num_timesteps} made the policy's parameter {name!r} non-finite; "
                "lower the learning rate or max_grad_norm, or keep layer_norm on",
                diverged=True,
            )

    def _on_step(self) -> bool:
        return True
