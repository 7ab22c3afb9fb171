"""One training run of a :class:`~train.spec.RunSpec`, from Python or a command line: ``Experiment(spec).run()``.

:class:`Experiment` owns a run's setup (env, model or resumed model, evaluation env, logger, callbacks), its
learning, its files and its summary, after the manner of rl-zoo3's ``ExperimentManager``. A run folder holds
``config.yml`` (written by :meth:`Experiment.write_config` only: when training starts, so that an interrupted run
can be resumed, and with the result at the end), ``model.zip``, ``best_model.zip``, ``evaluations.npz``,
``checkpoints/`` and, when the run normalises, ``*_vecnormalize*.pkl`` beside each model. Every one of them is
written to a temporary name and renamed (:mod:`fw_agents.atomic`), so a kill at any instant leaves the previous
version whole; what ``--resume`` continues from and how a run stops are :mod:`train.safety`'s.
"""

from __future__ import annotations

import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.utils import configure_logger
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from fw_agents import atomic
from fw_agents.atomic import AtomicCheckpointCallback, AtomicEvalCallback
from fw_agents.callbacks import MemoryStatsCallback, RunConfigCallback
from fw_agents.nonfinite import CheckFiniteVecEnv, FiniteParametersCallback, NonFiniteError
from train import common, safety
from train.argtypes import CLIError
from train.spec import RunSpec


def save_model(model: BaseAlgorithm, save_dir: Path) -> Path:
    """``model.zip``, and ``model_vecnormalize.pkl`` if the env is normalised, each written atomically; a
    :class:`~fw_agents.nonfinite.NonFiniteError` (nothing written) if the model is not finite."""
    model_path = save_dir / common.MODEL_NAME
    atomic.save_with_statistics(model, model_path, common.vecnormalize_path(model_path))
    return model_path


def restore_evaluations(callback: EvalCallback, save_dir: Path, num_timesteps: int) -> None:
    """Reload a resumed run's evaluations up to ``num_timesteps``, so that ``evaluations.npz`` keeps its history
    and ``best_model.zip`` is only replaced by a better model than the run's best so far. A damaged file (earlier
    versions wrote it in place) is set aside with a warning (:func:`safety.read_evaluations`)."""
    arrays = safety.read_evaluations(save_dir / safety.EVALUATIONS_NAME)
    if arrays is None:
        return
    arrays = safety.evaluations_up_to(arrays, num_timesteps)
    callback.evaluations_timesteps = arrays["timesteps"].tolist()
    callback.evaluations_results = arrays["results"].tolist()
    callback.evaluations_length = arrays["ep_lengths"].tolist()
    if "successes" in arrays and len(arrays["successes"]) == len(arrays["timesteps"]):
        callback.evaluations_successes = arrays["successes"].tolist()
    if callback.evaluations_results:
        callback.best_mean_reward = max(float(np.mean(r)) for r in callback.evaluations_results)


def make_callbacks(
    spec: RunSpec, config: dict[str, Any], eval_env: VecEnv, log_interval: int, resumed_at: int | None
) -> list[BaseCallback]:
    """The config as TensorBoard text, memory statistics, a stop on non-finite parameters, checkpoints, and
    evaluations with the best model kept (every file written atomically)."""
    save_dir, n_envs, n_timesteps = spec.save_dir, spec.hyperparams["n_envs"], spec.n_timesteps
    callbacks: list[BaseCallback] = [
        RunConfigCallback(config, path=None),
        MemoryStatsCallback(every_n_rollouts=log_interval),
        FiniteParametersCallback(),
    ]
    checkpoint_freq = n_timesteps // 5 if spec.checkpoint_freq is None else spec.checkpoint_freq
    if checkpoint_freq > 0:
        # SB3 counts callback calls, one per vectorised step: n_envs env steps each.
        callbacks.append(
            AtomicCheckpointCallback(
                max(checkpoint_freq // n_envs, 1),
                str(save_dir / "checkpoints"),
                name_prefix="model",
                save_vecnormalize=True,
                verbose=spec.verbose,
            )
        )
    eval_freq = n_timesteps // 10 if spec.eval_freq is None else spec.eval_freq
    if eval_freq > 0:
        evaluation = AtomicEvalCallback(
            eval_env,
            n_eval_episodes=spec.eval_episodes,
            eval_freq=max(eval_freq // n_envs, 1),
            log_path=str(save_dir),
            best_model_save_path=str(save_dir),
            deterministic=spec.deterministic_eval,
            verbose=spec.verbose,
        )
        if resumed_at is not None:
            restore_evaluations(evaluation, save_dir, resumed_at)
        callbacks.append(evaluation)
    return callbacks


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Experiment:
    """Sets up, trains, saves and evaluates the run of ``spec`` (a new run, or ``spec.resume``'s).

    ``run()`` does it all and returns the run's config (as written to ``config.yml``, with its ``result``); the
    trained model is then :attr:`model`. Ctrl-C and SIGTERM save ``model.zip`` (resumable) and are re-raised (as
    ``KeyboardInterrupt``); a non-finite observation, reward or parameter stops the run with a :class:`CLIError`
    naming it, and nothing non-finite is saved.
    """

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.model: BaseAlgorithm | None = None
        self.venv: VecEnv | None = None
        self.eval_env: VecEnv | None = None
        self.config: dict[str, Any] = {}
        self.resumed_at: int | None = None  # steps of the model a resumed run starts from
        self.callbacks: list[BaseCallback] = []
        self.log_interval = 1

    def run(self) -> dict[str, Any]:
        """Set up, learn, save, evaluate and summarise; returns the run's config."""
        self.setup()
        try:
            wall_time = self.learn()
            return self.finish(wall_time)
        finally:
            self.close()

    # ------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """The model (new, or loaded to continue) and its envs, then the run folder, logger and callbacks.
        Everything that can refuse the spec runs before anything is written."""
        spec = self.spec
        env_seed = self._make_model() if spec.resume is None else self._load_model()
        # Checked like the training env (sync_envs_normalization walks both wrapper stacks side by side).
        self.eval_env = CheckFiniteVecEnv(
            spec.make_env(min(max(spec.eval_episodes, spec.final_eval_episodes), 16), env_seed + 10_000, False),
            "evaluation env",
            start_timestep=None,
        )
        # The folder, with what the spec planned to set aside (a never-saved run's leftovers, --archive-newer).
        safety.prepare_run_dir(spec.save_dir, spec.archive)
        # The logger is made here rather than in learn(), so that config.yml can name its TensorBoard folder from
        # the start; same folder as SB3 would choose (<run folder name>_<n>, the last one when resuming).
        logger = configure_logger(spec.verbose, spec.tensorboard_log, spec.save_dir.name, self.resumed_at is None)
        self.model.set_logger(logger)
        self.config["tensorboard_dir"] = logger.get_dir() if spec.tensorboard_log is not None else None
        self.write_config()
        self.log_interval = self._log_interval()
        self.callbacks = make_callbacks(spec, self.config, self.eval_env, self.log_interval, self.resumed_at)

    def _make_model(self) -> int:
        """A new model on a new env; returns the env seed."""
        spec = self.spec
        params = spec.hyperparams
        # A non-finite observation or reward stops training, naming the env and step.
        self.venv = CheckFiniteVecEnv(spec.make_env(params["n_envs"], spec.seed))
        policy_alias, policy_class = common.select_policy(
            spec.policy, self.venv.observation_space, self.venv.action_space
        )
        algo_class = common.load_algorithm(spec.algo)
        try:
            self.model = algo_class(
                policy_class, self.venv, policy_kwargs=spec.policy_kwargs(), seed=spec.seed, device=spec.device,
                verbose=spec.verbose, **spec.algorithm_kwargs(),
            )  # fmt: skip
        except (ValueError, TypeError, AssertionError, RuntimeError) as error:
            raise CLIError(
                f"cannot build {algo_class.__name__} with {policy_class.__name__} on this env: {error}"
            ) from None
        self.config = {
            "algorithm": spec.algo, "algorithm_class": f"{algo_class.__module__}.{algo_class.__name__}",
            "env_id": spec.env_id, "policy": spec.policy, "policy_alias": policy_alias,
            "policy_class": f"{policy_class.__module__}.{policy_class.__name__}", "seed": spec.seed,
            "device": spec.device, "threads": spec.threads, "hyperparams": params,
            "hyperparams_sources": spec.hyperparams_sources, "eval_episodes": spec.eval_episodes,
            "deterministic_eval": spec.deterministic_eval, "save_dir": str(spec.save_dir),
            "tensorboard_log": spec.tensorboard_log, "command": spec.command,
            "started": _now(), "versions": common.versions(),
        }  # fmt: skip
        return spec.seed

    def _load_model(self) -> int:
        """The model to continue, on an env with its normalisation; returns the env seed."""
        spec = self.spec
        self.config = dict(spec.run_config or common.load_yaml(spec.save_dir / common.CONFIG_NAME, "run config"))
        self.model, venv = common.load_run_model(
            spec.resume,
            spec.algo,
            spec.gym_id,
            spec.hyperparams,
            spec.hyperparams["n_envs"],
            spec.seed,
            spec.device,
            training=True,
            verbose=spec.verbose,
        )
        self.resumed_at = self.model.num_timesteps
        self.venv = CheckFiniteVecEnv(venv, start_timestep=self.resumed_at)
        self.model.set_env(self.venv)
        # Another env seed than the run's start (set_random_seed seeds the envs too), so that a resumed run does
        # not replay its first episodes; SB3's load resets the envs when learning starts.
        env_seed = spec.seed + self.resumed_at
        self.model.set_random_seed(env_seed)
        self.config.setdefault("eval_episodes", spec.eval_episodes)
        self.config.setdefault("resumed", []).append(
            {"from": str(spec.resume), "at_step": self.resumed_at, "command": spec.command, "started": _now()}
        )
        return env_seed

    def _log_interval(self) -> int:
        """Rollouts between log dumps: the spec's, else about 100 dumps over the run."""
        if self.spec.log_interval is not None:
            return self.spec.log_interval
        return max(1, round(self.spec.n_timesteps / (self.model.n_steps * self.model.n_envs) / 100))

    def write_config(self) -> None:
        """``config.yml``: the one writer of it (atomically: a kill leaves the previous version whole)."""
        atomic.write_text(self.spec.save_dir / common.CONFIG_NAME, yaml.safe_dump(self.config, sort_keys=False))

    # ------------------------------------------------------------------------------------------- learn
    def learn(self) -> float:
        """Train for the spec's steps; returns the wall time. Ctrl-C or SIGTERM saves the model, says how to
        continue, and is re-raised; a non-finite value is a :class:`CLIError` naming it."""
        spec, model = self.spec, self.model
        progress_bar = spec.progress_bar
        if progress_bar:
            from tqdm import TqdmExperimentalWarning

            # SB3's bar is tqdm.rich, which warns "rich is experimental/alpha" on every run.
            warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
        start = time.perf_counter()
        try:
            with safety.sigterm_as_interrupt():  # a scheduler's SIGTERM saves like Ctrl-C
                model.learn(
                    spec.n_timesteps,
                    callback=self.callbacks,
                    log_interval=self.log_interval,
                    reset_num_timesteps=self.resumed_at is None,
                    progress_bar=progress_bar,
                )
        except KeyboardInterrupt as interrupt:
            self._save_interrupted(interrupt)
            raise
        except ValueError as error:  # a non-finite value: one line naming it and the newest intact state
            raise safety.stop_error(error, model, spec.save_dir, spec.algo) from None
        return time.perf_counter() - start

    def _save_interrupted(self, interrupt: KeyboardInterrupt) -> None:
        """Save what there is after Ctrl-C or SIGTERM, so that the run can be resumed (unless it is not finite)."""
        spec, model = self.spec, self.model
        what = "terminated (SIGTERM)" if isinstance(interrupt, safety.Terminated) else "interrupted"
        with safety.signals_ignored():  # a second signal while saving would stop the save
            try:
                model_path = save_model(model, spec.save_dir)
            except NonFiniteError as problem:
                note = safety.newest_note(spec.save_dir, spec.algo)
                print(f"{what} at step {model.num_timesteps}; {problem}; {note}", file=sys.stderr)
            else:
                print(
                    f"{what} at step {model.num_timesteps}; saved {model_path}; continue with "
                    f"python -m train.{spec.algo} --resume {spec.save_dir}",
                    file=sys.stderr,
                )

    # ------------------------------------------------------------------------------------------- finish
    def finish(self, wall_time: float) -> dict[str, Any]:
        """Save the model, run the final evaluation, record the result in ``config.yml`` and print a summary."""
        spec = self.spec
        try:
            model_path = save_model(self.model, spec.save_dir)
        except NonFiniteError as error:  # the last update diverged: the last good checkpoint stays the newest
            raise safety.stop_error(error, self.model, spec.save_dir, spec.algo) from None
        # Both ways of acting, whichever the periodic evaluations use: where the best memoryless play is random
        # (POPGym's Concentration, bandits) a deterministic policy without memory is stuck, and only sampled actions
        # show what it can do.
        finals: dict[str, common.EvalResult | None] = {"deterministic": None, "stochastic": None}
        if spec.final_eval_episodes:
            sync_envs_normalization(self.venv, self.eval_env)
            for mode in finals:
                finals[mode] = common.evaluate(
                    self.model, self.eval_env, spec.final_eval_episodes, deterministic=mode == "deterministic"
                )
        self.config["result"] = {
            "num_timesteps": int(self.model.num_timesteps),
            "wall_time_s": round(wall_time, 1),
            **{f"final_eval_{mode}": final.as_dict() if final else None for mode, final in finals.items()},
        }
        self.write_config()
        self.print_summary(model_path, wall_time, finals)
        return self.config

    def print_summary(self, model_path: Path, wall_time: float, finals: dict[str, common.EvalResult | None]) -> None:
        config, save_dir = self.config, self.spec.save_dir
        best = save_dir / common.BEST_MODEL_NAME
        lines = [
            f"{config['algorithm']} {config['policy']} ({config.get('policy_alias')}) on {config['env_id']}, "
            f"seed {config['seed']}: {config['result']['num_timesteps']} steps in {wall_time:.1f} s",
            *(
                f"  final evaluation ({mode}): {final.summary() if final else 'skipped'}"
                for mode, final in finals.items()
            ),
            f"  model:       {model_path}" + (f"  (best: {best})" if best.exists() else ""),
            f"  config:      {save_dir / common.CONFIG_NAME}",
            f"  tensorboard: {config.get('tensorboard_dir') or 'off'}",
        ]
        print("\n".join(lines))

    def close(self) -> None:
        for env in (self.venv, self.eval_env):
            if env is not None:
                env.close()
