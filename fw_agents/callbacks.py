"""Stable-Baselines3 callbacks for recurrent-memory agents: memory diagnostics and run bookkeeping.

* :class:`MemoryStatsCallback` logs, for fast-weights policies, the size of the fast-weight memory
  (``memory/fast_weights_norm``: mean Frobenius norm ‖A‖), how much the fast weights contribute next to
  the slow weights (``memory/fast_slow_ratio``: mean ‖A h‖ / ‖W h + C x‖), λ and η as they are (``memory/decay_rate``,
  ``memory/fast_learning_rate``: learned ones move), and the update gate (``memory/gate_mean``: mean z;
  ``memory/gate_slow_fraction``: the share of units keeping their state 10 steps or more, z < 0.1).
* :class:`RunConfigCallback` writes a run's configuration as YAML (atomically), as TensorBoard text and to
  TensorBoard's HParams tab.
* :class:`SaveVecNormalizeCallback` saves ``VecNormalize`` statistics next to a model (e.g. the best one),
  atomically.

All work with any algorithm that keeps its live memory state in ``_last_lstm_states``, its observations in
``_last_obs`` and ``_last_episode_starts``, and updates them after calling ``on_step`` (sb3-contrib's
RecurrentPPO and fw-agents' RecurrentA2C).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch as th
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam, TensorBoardOutputFormat
from stable_baselines3.common.utils import obs_as_tensor

from fw_agents import atomic


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one flat mapping with dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class MemoryStatsCallback(BaseCallback):
    """Logs fast-weight memory statistics to the SB3 logger, every ``every_n_rollouts`` rollouts.

    During a measured rollout it runs the memory cores of the policy, at up to ``samples_per_rollout`` evenly
    spaced steps, one extra time without gradients, on exactly the input of the step just taken (the envs'
    observations and memory state before it), with ``collect_stats`` on for that call only; the logged values
    are the means over those steps and the envs. Spreading the samples over the rollout matters: a rollout
    as long as the episodes (all envs in step) would otherwise always be measured at the same episode phase.
    No action is sampled, so the random streams, and hence a seeded run, are unchanged.

    Tags: ``memory/fast_weights_norm`` (mean ‖A‖ after the step's write) and ``memory/fast_slow_ratio``
    (mean ‖A h‖ / ‖W h + C x‖) for the actor's core, ``memory/critic_…`` likewise when the critic has a
    fast-weights core of its own. Policies without a fast-weights core log nothing and cost nothing, and neither does
    a logger that writes nowhere.

    :param every_n_rollouts: rollouts between two measurements. Use the algorithm's ``log_interval`` so that
        each measurement lands in the log dump that follows it (the logger keeps only the last value).
    :param samples_per_rollout: most steps measured in a measured rollout.
    """

    def __init__(self, every_n_rollouts: int = 1, samples_per_rollout: int = 8, verbose: int = 0) -> None:
        super().__init__(verbose)
        if every_n_rollouts < 1 or samples_per_rollout < 1:
            raise ValueError(
                f"every_n_rollouts and samples_per_rollout must be >= 1, got {every_n_rollouts}, {samples_per_rollout}"
            )
        self.every_n_rollouts = every_n_rollouts
        self.samples_per_rollout = samples_per_rollout
        self.n_rollouts = 0
        self._step = 0
        self._active = False
        self._samples: list[dict[str, float]] = []

    def _on_rollout_start(self) -> None:
        self.n_rollouts += 1
        # Nothing to measure for where no output will ever see it (verbose 0 and no TensorBoard: a suite's cells).
        logged = bool(self.logger.output_formats)
        self._active = self.n_rollouts % self.every_n_rollouts == 0 and logged and bool(self._stat_layouts())
        self._step = 0
        self._samples = []

    def _on_step(self) -> bool:
        if self._active:
            stride = max(1, getattr(self.model, "n_steps", 1) // self.samples_per_rollout)
            if self._step % stride == 0:
                sample = self.measure()
                if sample:
                    self._samples.append(sample)
            self._step += 1
        return True

    def _on_rollout_end(self) -> None:
        if self._samples:
            for key in self._samples[0]:
                self.logger.record(f"memory/{key}", float(np.mean([sample[key] for sample in self._samples])))
        self._samples = []

    def _stat_layouts(self) -> list[tuple[str, Any, list[Any]]]:
        """``(prefix, state-layout module, its cores that collect stats)`` for each memory of the policy that has
        such cores: the core itself, or every layer of a stacked memory (``num_layers > 1``)."""
        policy = self.model.policy
        found = []
        for prefix, layout in (
            ("", getattr(policy, "lstm_actor", None)),
            ("critic_", getattr(policy, "lstm_critic", None)),
        ):
            core = getattr(layout, "core", None)
            stat_cores = [module for module in core.modules() if hasattr(module, "collect_stats")] if core else []
            if stat_cores:
                found.append((prefix, layout, stat_cores))
        return found

    def measure(self) -> dict[str, float]:
        """Stats of one step from the model's current observations and memory state (inside ``on_step``: the
        input of the step just taken); ``{}`` if the policy has no fast-weights core or there is no state yet.
        Layers of a stacked memory are told apart by a ``layer<i>_`` prefix, bottom layer 0."""
        layouts = self._stat_layouts()
        states = getattr(self.model, "_last_lstm_states", None)
        last_obs = getattr(self.model, "_last_obs", None)
        if not layouts or states is None or last_obs is None:
            return {}
        policy = self.model.policy
        device = policy.device
        results: dict[str, float] = {}
        with th.no_grad():
            obs = obs_as_tensor(last_obs, device)
            starts = th.as_tensor(self.model._last_episode_starts, dtype=th.float32, device=device)
            features = policy.extract_features(obs)
            pi_features, vf_features = features if isinstance(features, tuple) else (features, features)
            for prefix, layout, cores in layouts:
                is_critic = prefix == "critic_"
                try:
                    for core in cores:
                        core.collect_stats = True
                        core.stats = {}
                    layout(vf_features if is_critic else pi_features, states.vf if is_critic else states.pi, starts)
                    for i, core in enumerate(cores):
                        layer = f"layer{i}_" if len(cores) > 1 else ""
                        results.update({prefix + layer + key: float(value) for key, value in core.stats.items()})
                finally:
                    # Never leave stats on: they cost a host sync per step in the hot path.
                    for core in cores:
                        core.collect_stats = False
        return results


def _tensorboard_writer(logger: Any) -> Any | None:
    for output in getattr(logger, "output_formats", []):
        if isinstance(output, TensorBoardOutputFormat):
            return output.writer
    return None


class RunConfigCallback(BaseCallback):
    """Writes a run's configuration when training starts: to ``path`` as YAML and as TensorBoard text.

    The TensorBoard folder is only known once ``learn()`` has set up its logger, so it is filled in here
    as ``config["tensorboard_dir"]`` (None without TensorBoard).

    :param config: a YAML-serialisable dict (plain types only).
    :param path: where to write ``config.yml`` (None: TensorBoard only).
    :param tag: TensorBoard text tag.
    """

    #: The scalars the HParams tab shows against each run's hyperparameters.
    HPARAM_METRICS = ("rollout/ep_rew_mean", "eval/mean_reward", "eval/success_rate")

    def __init__(self, config: dict[str, Any], path: str | os.PathLike | None = None, tag: str = "config") -> None:
        super().__init__()
        self.config = dict(config)
        self.path = path
        self.tag = tag

    def hparams(self) -> dict[str, bool | str | float | int]:
        """The config's settings as TensorBoard's HParams tab takes them: flat, ``hyperparams.policy_kwargs.x``, with
        plain values (anything else, such as a list, as its text)."""

        keys = ("algorithm", "env_id", "policy", "seed", "hyperparams")
        flat = flatten({key: self.config[key] for key in keys if key in self.config})
        return {
            key: value if isinstance(value, bool | str | float | int) else str(value)
            for key, value in flat.items()
            if value is not None
        }

    def _on_training_start(self) -> None:
        self.config["tensorboard_dir"] = self.logger.get_dir() if _tensorboard_writer(self.logger) else None
        text = yaml.safe_dump(self.config, sort_keys=False)
        if self.path is not None:
            atomic.write_text(self.path, text)  # a kill while writing leaves the previous version whole
        writer = _tensorboard_writer(self.logger)
        if writer is not None:
            # Indented by four spaces: TensorBoard renders text as Markdown, and this keeps it a code block.
            writer.add_text(self.tag, "\n".join("    " + line for line in text.splitlines()), self.num_timesteps)
            writer.flush()
            metrics = dict.fromkeys(self.HPARAM_METRICS, 0.0)  # the tab reads the runs' own scalars of these tags
            self.logger.record("hparams", HParam(self.hparams(), metrics), exclude=("stdout", "log", "json", "csv"))

    def _on_step(self) -> bool:
        return True


class SaveVecNormalizeCallback(BaseCallback):
    """Saves the model's ``VecNormalize`` statistics to ``path`` whenever it is triggered.

    Meant as ``EvalCallback(callback_on_new_best=...)``, so that ``best_model.zip`` has the normalisation it
    was evaluated with; does nothing if the training env is not normalised.
    """

    def __init__(self, path: str | os.PathLike, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.path = path

    def _on_step(self) -> bool:
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:
            atomic.save_vecnormalize(vec_normalize, self.path)
            if self.verbose >= 1:
                print(f"Saving VecNormalize to {self.path}")
        return True
