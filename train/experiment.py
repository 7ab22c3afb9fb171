"""One training run of a :class:`~train.spec.RunSpec`, from Python or a command line: ``Experiment(spec).run()``.

:class:`Experiment` owns a run's setup (env, model or resumed model, evaluation env, logger, callbacks), its learning,
its files and its summary, after the manner of rl-zoo3's ``ExperimentManager``. The model is built first, so that
the policy's and the memory core's own checks run before anything is written; ``config.yml`` (the spec as recorded,
with the run's facts) is written when training starts, so that an interrupted run can be resumed, and with the result
at the end. What ``--resume`` continues from and what a run folder holds are :mod:`train.runs`'.
"""

from __future__ import annotations

import importlib.metadata
import platform
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import configure_logger
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from fw_agents import atomic
from fw_agents.atomic import AtomicCheckpointCallback, AtomicEvalCallback
from fw_agents.callbacks import MemoryStatsCallback, RunConfigCallback
from fw_agents.nonfinite import CheckFiniteVecEnv, EnvError, FiniteParametersCallback, NonFiniteError
from fw_agents.registry import get_memory
from train import runs
from train.cli import CLIError, Terminated, interruption, signals, terminate
from train.spec import RunSpec, load_algorithm


# ----------------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalResult:
    """Returns, lengths and successes of evaluation episodes."""

    returns: list[float]
    lengths: list[int]
    successes: list[bool]

    @property
    def success_rate(self) -> float | None:
        """None where the env reports no ``info["is_success"]``."""
        return float(np.mean(self.successes)) if self.successes else None

    def summary(self) -> str:
        success = "n/a" if self.success_rate is None else f"{100 * self.success_rate:.1f}%"
        return (
            f"return {np.mean(self.returns):.3f} ± {np.std(self.returns):.3f}, success {success} "
            f"({len(self.returns)} episodes)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean_return": float(np.mean(self.returns)),
            "std_return": float(np.std(self.returns)),
            "success_rate": self.success_rate,
            "episodes": len(self.returns),
            "mean_length": float(np.mean(self.lengths)),
        }


def evaluate(model: BaseAlgorithm, env: VecEnv, n_episodes: int, deterministic: bool) -> EvalResult:
    """SB3's ``evaluate_policy`` (which threads the recurrent state and resets it per episode), plus the success
    flags that envs report in ``info["is_success"]`` at episode end."""
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


# ----------------------------------------------------------------------------------------------- stopping
#: An evaluation episode that has not ended after this many steps is reported (an env without a time limit).
EVAL_EPISODE_STEPS = 100_000


def stop_error(error: ValueError, model: BaseAlgorithm, save_dir: Path, algo: str) -> Exception:
    """The one-line :class:`CLIError` for a run stopped by a non-finite value (``error`` itself otherwise, a bug)."""
    message = " ".join(str(error).split()).rstrip(".")
    if isinstance(error, NonFiniteError) and not error.diverged:  # from the env: resume once it is fixed
        return CLIError(
            f"{message}. Training stopped at step {model.num_timesteps}; {runs.newest_note(save_dir, algo)}"
        )
    if not isinstance(error, NonFiniteError):
        if "nan" not in message.lower():
            return error  # a bug: keeps its traceback
        # torch.distributions rejects NaN logits: huge (finite) weights made the policy's outputs NaN.
        message = "the policy's outputs became NaN; lower the learning rate or max_grad_norm, or keep layer_norm on"
    # The same settings would diverge again: a new run with others, rather than a resume.
    note = runs.newest_note(save_dir, algo, resumable=False)
    return CLIError(f"training diverged: {message}. Training stopped at step {model.num_timesteps}; {note}")


def write_error(error: OSError, model: BaseAlgorithm, save_dir: Path, algo: str) -> CLIError:
    """The one-line :class:`CLIError` for a run that could not write (disk full, a read-only folder): saves are
    atomic, so the files saved before are whole."""
    where = error.filename or f"in {save_dir} or its TensorBoard folder"
    return CLIError(
        f"cannot write {where}: {error.strerror or error}. Training stopped at step {model.num_timesteps}; "
        f"{runs.newest_note(save_dir, algo)}"
    )


def save_model(model: BaseAlgorithm, save_dir: Path) -> Path:
    """``model.zip`` and its ``VecNormalize`` statistics, atomically; NonFiniteError (nothing written) if not finite."""
    model_path = save_dir / runs.MODEL_NAME
    atomic.save_with_statistics(model, model_path, runs.vecnormalize_path(model_path))
    return model_path


# ----------------------------------------------------------------------------------------------- the run
class Experiment:
    """Sets up, trains, saves and evaluates the run of ``spec`` (a new run, or ``spec.resume``'s).

    ``run()`` does it all and returns the run's config (as written to ``config.yml``, with its ``result``); the trained
    model is then :attr:`model`. Ctrl-C and SIGTERM save ``model.zip`` (resumable) and are re-raised (as
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
        self.lock: Any = None  # the run folder's lock (runs.lock_run_dir), held until close()

    def run(self) -> dict[str, Any]:
        """Set up, learn, save, evaluate and summarise; returns the run's config."""
        th.set_num_threads(self.spec.threads)  # torch's one thread per core makes small recurrent models slower
        self.setup()
        try:
            return self.finish(self.learn())
        finally:
            self.close()

    def close(self) -> None:
        for env in (self.venv, self.eval_env):
            if env is not None:
                env.close()
        if self.lock is not None:
            self.lock.close()  # the folder's lock goes with it

    # ------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """The model (new, or loaded to continue) and its envs, then the run folder, logger and callbacks. Everything
        that can refuse the spec runs before anything is written."""
        spec = self.spec
        env_seed = self._make_model() if spec.resume is None else self._load_model()
        n_eval_envs = min(max(spec.eval_episodes, spec.final_eval_episodes), 16)
        self.eval_env = CheckFiniteVecEnv(
            spec.make_env(n_eval_envs, env_seed + 10_000, False), "evaluation env", None, EVAL_EPISODE_STEPS
        )
        # One writer per run folder: taken once nothing can refuse the spec any more, and checked again under the lock
        # (another run may have written into the folder since this one's checks).
        self.lock = runs.lock_run_dir(spec.save_dir)
        if spec.resume is None:
            runs.check_new_run_dir(spec.save_dir)
        elif runs.model_steps(spec.resume) != self.resumed_at or (
            not spec.archive_newer and runs.newest_steps(spec.save_dir) != self.resumed_at
        ):
            raise CLIError(f"{spec.save_dir} changed while this command started (another run wrote in it); retry")
        if spec.resume_message:
            print(spec.resume_message)
        runs.prepare_run_dir(spec.save_dir, spec.archive)
        # Made here rather than in learn(), so that config.yml names its TensorBoard folder from the start; the folder
        # SB3 would choose (<run folder name>_<n>, the last one when resuming).
        logger = configure_logger(spec.verbose, spec.tensorboard_log, spec.save_dir.name, self.resumed_at is None)
        self.model.set_logger(logger)
        self.config["tensorboard_dir"] = logger.get_dir() if spec.tensorboard_log is not None else None
        self.write_config()
        self.callbacks = self._callbacks()

    def _make_model(self) -> int:
        """A new model on a new env; the policy's and the core's checks run here. Returns the env seed."""
        spec = self.spec
        self.venv = CheckFiniteVecEnv(spec.make_env(spec.hyperparams["n_envs"], spec.seed))
        algo_class = load_algorithm(spec.algo)
        try:
            alias, policy_class = get_memory(spec.policy).policy_for(
                self.venv.observation_space, self.venv.action_space
            )
            self.model = algo_class(policy_class, self.venv, **spec.model_kwargs())
        except (ValueError, TypeError, AssertionError, RuntimeError) as error:
            self.venv.close()
            message = " ".join(str(error).split()) or type(error).__name__
            raise CLIError(f"cannot build {algo_class.__name__} with the {spec.policy} policy (policy_kwargs "
                           f"{spec.hyperparams['policy_kwargs']}) on {spec.env_id}: {message}") from None  # fmt: skip
        self.config = {
            **spec.record(),
            "policy_alias": alias,
            "policy_class": f"{policy_class.__module__}.{policy_class.__name__}",
            "algorithm_class": f"{algo_class.__module__}.{algo_class.__name__}",
            "started": _now(),
            "versions": versions(),
        }
        return spec.seed

    def _load_model(self) -> int:
        """The model to continue, on an env with its normalisation; returns the env seed."""
        spec = self.spec
        self.config = runs.run_record(spec.resume)
        self.model, venv = runs.load_run_model(
            spec.resume,
            load_algorithm(spec.algo),
            spec.gym_id,
            spec.hyperparams,
            spec.hyperparams["n_envs"],
            spec.seed,
            spec.device,
            training=True,
            policy=spec.policy,
            verbose=spec.verbose,
        )
        self.resumed_at = self.model.num_timesteps
        self.venv = CheckFiniteVecEnv(venv, start_timestep=self.resumed_at)
        self.model.set_env(self.venv)
        # Another env seed than the run's start, so that a resumed run does not replay its first episodes.
        env_seed = spec.seed + self.resumed_at
        self.model.set_random_seed(env_seed)
        self.config["save_dir"] = str(spec.save_dir)
        self.config.setdefault("resumed", []).append(
            {"from": str(spec.resume), "at_step": self.resumed_at, "command": spec.command, "started": _now()}
        )
        return env_seed

    def _callbacks(self) -> list[BaseCallback]:
        """The config as TensorBoard text and HParams, memory statistics, a stop on non-finite parameters,
        checkpoints, and evaluations with the best model kept (every file written atomically)."""
        spec, save_dir, n_envs = self.spec, self.spec.save_dir, self.spec.hyperparams["n_envs"]
        log_interval = self.log_interval
        callbacks: list[BaseCallback] = [
            RunConfigCallback(self.config, path=None),
            MemoryStatsCallback(every_n_rollouts=log_interval),
            FiniteParametersCallback(),
        ]
        checkpoint_freq = spec.n_timesteps // 5 if spec.checkpoint_freq is None else spec.checkpoint_freq
        if checkpoint_freq > 0:  # SB3 counts callback calls, one per vectorised step: n_envs env steps each
            callbacks.append(
                AtomicCheckpointCallback(
                    max(checkpoint_freq // n_envs, 1),
                    str(save_dir / runs.CHECKPOINTS),
                    name_prefix="model",
                    save_vecnormalize=True,
                    verbose=spec.verbose,
                )
            )
        eval_freq = spec.n_timesteps // 10 if spec.eval_freq is None else spec.eval_freq
        if eval_freq > 0:
            evaluation = AtomicEvalCallback(
                self.eval_env,
                n_eval_episodes=spec.eval_episodes,
                eval_freq=max(eval_freq // n_envs, 1),
                log_path=str(save_dir),
                best_model_save_path=str(save_dir),
                deterministic=spec.deterministic_eval,
                verbose=spec.verbose,
            )
            if self.resumed_at is not None:
                restore_evaluations(evaluation, save_dir, self.resumed_at)
            callbacks.append(evaluation)
        return callbacks

    @property
    def log_interval(self) -> int:
        """Rollouts between log dumps: the spec's, else about 100 dumps over the run."""
        if self.spec.log_interval is not None:
            return self.spec.log_interval
        return max(1, round(self.spec.n_timesteps / (self.model.n_steps * self.model.n_envs) / 100))

    def write_config(self) -> None:
        """``config.yml``: the one writer of it (atomically: a kill leaves the previous version whole)."""
        atomic.write_text(self.spec.save_dir / runs.CONFIG_NAME, yaml.safe_dump(self.config, sort_keys=False))

    # ------------------------------------------------------------------------------------------- learn
    def learn(self) -> float:
        """Train for the spec's steps; returns the wall time. Ctrl-C or SIGTERM saves the model, says how to continue,
        and is re-raised; a non-finite value is a :class:`CLIError` naming it."""
        spec, model = self.spec, self.model
        if spec.progress_bar:
            from tqdm import TqdmExperimentalWarning

            warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)  # SB3's bar is tqdm.rich's
        start = time.perf_counter()
        try:
            with signals(terminate, signal.SIGTERM):  # a scheduler's SIGTERM saves like Ctrl-C
                model.learn(
                    spec.n_timesteps,
                    callback=self.callbacks,
                    log_interval=self.log_interval,
                    reset_num_timesteps=self.resumed_at is None,
                    progress_bar=spec.progress_bar,
                )
        except KeyboardInterrupt as interrupt:
            self._interrupted(interrupt)
        except EnvError as error:  # the env's fault: the state before it is saved, to continue once it is fixed
            raise CLIError(f"{error}. Training stopped at step {model.num_timesteps}; {self._save_now()}") from None
        except ValueError as error:  # a non-finite value: one line naming it and the newest intact state
            raise stop_error(error, model, spec.save_dir, spec.algo) from None
        except OSError as error:  # disk full, a folder made read-only: what was saved before stays whole
            raise write_error(error, model, spec.save_dir, spec.algo) from None
        except RuntimeError as error:  # an interrupt inside torch.save comes out as one (train.cli.interruption)
            interrupt = interruption(error)
            if interrupt is None:
                raise
            self._interrupted(interrupt)  # (the file it was writing is left as it was: fw_agents.atomic)
        return time.perf_counter() - start

    def _interrupted(self, interrupt: KeyboardInterrupt) -> NoReturn:
        """Ctrl-C or SIGTERM: save, say how to continue, and raise it again."""
        what = "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"{what} at step {self.model.num_timesteps}; {self._save_now()}", file=sys.stderr)
        raise interrupt from None

    def _save_now(self) -> str:
        """Save what there is (Ctrl-C, SIGTERM, an env's failure), so that the run can be resumed (unless it is not
        finite or cannot be written); returns what was saved and how to continue."""
        spec, model = self.spec, self.model
        with signals(signal.SIG_IGN, signal.SIGINT, signal.SIGTERM):  # a second signal would stop the save
            try:
                model_path = save_model(model, spec.save_dir)
            except (NonFiniteError, OSError) as problem:
                return f"not saved ({problem}); {runs.newest_note(spec.save_dir, spec.algo)}"
        return f"saved {model_path}; continue with python -m train.{spec.algo} --resume {spec.save_dir}"

    # ------------------------------------------------------------------------------------------- finish
    def finish(self, wall_time: float) -> dict[str, Any]:
        """Save the model, run the final evaluation, record the result in ``config.yml`` and print a summary."""
        spec = self.spec
        try:
            model_path = save_model(self.model, spec.save_dir)
        except NonFiniteError as error:  # the last update diverged: the last good checkpoint stays the newest
            raise stop_error(error, self.model, spec.save_dir, spec.algo) from None
        except OSError as error:
            raise write_error(error, self.model, spec.save_dir, spec.algo) from None
        # Both ways of acting, whichever the periodic evaluations use: where the best memoryless play is random
        # (POPGym's Concentration, bandits) a deterministic policy without memory is stuck, and only sampled actions
        # show what it can do.
        finals: dict[str, EvalResult | None] = {"deterministic": None, "stochastic": None}
        if spec.final_eval_episodes:
            sync_envs_normalization(self.venv, self.eval_env)
            try:
                for mode in finals:
                    deterministic = mode == "deterministic"
                    finals[mode] = evaluate(self.model, self.eval_env, spec.final_eval_episodes, deterministic)
            except EnvError as error:
                raise CLIError(f"{error}; the trained model is saved: {model_path}") from None
        self.config["result"] = {
            "num_timesteps": int(self.model.num_timesteps),
            "wall_time_s": round(wall_time, 1),
            **{f"final_eval_{mode}": final.as_dict() if final else None for mode, final in finals.items()},
        }
        self.write_config()
        best = spec.save_dir / runs.BEST_MODEL_NAME
        print(
            "\n".join(
                [
                    f"{spec.algo} {spec.policy} ({self.config.get('policy_alias')}) on {spec.env_id}, seed {spec.seed}:"
                    " "
                    f"{self.model.num_timesteps} steps in {wall_time:.1f} s",
                    *(
                        f"  final evaluation ({mode}): {final.summary() if final else 'skipped'}"
                        for mode, final in finals.items()
                    ),
                    f"  model:       {model_path}" + (f"  (best: {best})" if best.exists() else ""),
                    f"  config:      {spec.save_dir / runs.CONFIG_NAME}",
                    f"  tensorboard: {self.config.get('tensorboard_dir') or 'off'}",
                ]
            )
        )
        return self.config


def restore_evaluations(callback: EvalCallback, save_dir: Path, num_timesteps: int) -> None:
    """Reload a resumed run's evaluations up to ``num_timesteps``, so that ``evaluations.npz`` keeps its history and
    ``best_model.zip`` is only replaced by a better model than the run's best so far."""
    arrays = runs.read_evaluations(save_dir / runs.EVALUATIONS_NAME)
    if arrays is None:
        return
    arrays = runs.evaluations_up_to(arrays, num_timesteps)
    callback.evaluations_timesteps = arrays["timesteps"].tolist()
    callback.evaluations_results = arrays["results"].tolist()
    callback.evaluations_length = arrays["ep_lengths"].tolist()
    if "successes" in arrays and len(arrays["successes"]) == len(arrays["timesteps"]):
        callback.evaluations_successes = arrays["successes"].tolist()
    if callback.evaluations_results:
        callback.best_mean_reward = max(float(np.mean(r)) for r in callback.evaluations_results)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
