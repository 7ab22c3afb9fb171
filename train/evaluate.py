"""``python -m train.evaluate MODEL``: evaluate a saved agent, optionally recording an episode as a GIF.

The algorithm, env and normalisation are read from the run's ``config.yml`` next to the model (or one folder
up, for checkpoints); ``--env``/``--algo`` name them for models made elsewhere. Episodes run through SB3's
``evaluate_policy``, which threads the memory ``state`` and ``episode_start`` from step to step.

:func:`load_run` is the same loading for Python code (a notebook, a script). Thread the state there too:
``action, state = model.predict(obs, state=state, episode_start=episode_start)``; fw-agents' models warn
(``fw_agents.predict_guard.StatelessPredictWarning``) when ``predict`` is called again without it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from fw_agents import atomic
from fw_agents.nonfinite import CheckFiniteVecEnv, EnvError, NonFiniteError
from train import runs
from train.cli import (
    ArgumentParser,
    CLIError,
    add_threads_argument,
    check_int,
    check_output_path,
    cli_main,
    load_yaml,
    seed_int,
)
from train.experiment import EVAL_EPISODE_STEPS, evaluate
from train.spec import ALGORITHMS, check_device, import_object, load_algorithm, resolve_env_id


def load_run(
    model: str | Path,
    n_envs: int = 1,
    seed: int = 0,
    device: str = "cpu",
    algo: str | None = None,
    env: str | None = None,
    trust_pickle: bool = False,
) -> tuple[BaseAlgorithm, VecEnv, dict[str, Any]]:
    """Load a saved model with its evaluation env (frozen ``VecNormalize`` if the run normalised).

    The algorithm, env and hyperparameters come from the run's ``config.yml`` (next to the model, or one folder up
    for checkpoints), ``algo`` and ``env`` overriding them.

    :param model: a model ``.zip``, a run folder (its ``model.zip``), or an rl-zoo3 log folder (its model, with the
        ``VecNormalize`` statistics rl-zoo3 keeps in ``<env>/vecnormalize.pkl``).
    :param trust_pickle: unpickle what the model file holds (runs code in it): for a model without its run's config,
        whose pickled items (policy class, spaces, schedules) nothing else can stand in for.
    :return: the model, the env, the run settings (``algorithm``, ``env_id``, ``hyperparams``, ``model_path``).
    """
    zoo = runs.zoo_run(Path(model)) if Path(model).is_dir() else None
    model_path = Path(zoo["zoo"]["model"]) if zoo else runs.locate_model(model)
    config_path = None if zoo else runs.find_run_config(model_path)
    config = zoo or (load_yaml(config_path, "run config") if config_path else {})
    if algo and config.get("algorithm") not in (None, algo):
        raise CLIError(f"{model_path} was trained with {config['algorithm']}, not {algo}: leave --algo out")
    settings = {"algorithm": algo or config.get("algorithm"), "env_id": env or config.get("env_id")}
    if not settings["algorithm"] or not settings["env_id"]:
        raise CLIError(f"no {runs.CONFIG_NAME} next to {model_path}: pass --algo and --env")
    for package in config.get("gym_packages", []):  # rl-zoo3's --gym-packages, imported to register its envs
        importlib.import_module(package)
    algo_class = (
        import_object(runs.ZOO_ALGORITHMS[settings["algorithm"]]) if zoo else load_algorithm(settings["algorithm"])
    )
    settings.update(env_id=resolve_env_id(settings["env_id"]), hyperparams=config.get("hyperparams") or {},
                    seed=config.get("seed", 0), model_path=str(model_path))  # fmt: skip
    stats = Path(zoo["zoo"]["vecnormalize"]) if zoo else None
    loaded, venv = runs.load_run_model(model_path, algo_class, settings["env_id"], settings["hyperparams"], n_envs,
                                       seed, device, False, stats, config.get("policy"), trust_pickle)  # fmt: skip
    return loaded, venv, settings


def play_episode(
    model: BaseAlgorithm, env: gym.Env, obs: Any, deterministic: bool = True
) -> Iterator[tuple[Any, float]]:
    """Play the episode a plain (non-vectorised) ``env`` has just been reset to (``obs``: its first observation),
    threading the memory state and passing observations through the model's frozen ``VecNormalize``, if any.

    Yields each step's action and reward once the env has taken it, so that the caller can look at the env then: a
    plain env keeps the state after the final step, which a VecEnv would have reset already.
    """
    vec_normalize = model.get_vec_normalize_env()
    state, episode_start, done = None, np.ones((1,), dtype=bool), False
    while not done:
        model_obs = vec_normalize.normalize_obs(obs) if vec_normalize is not None else obs
        action, state = model.predict(model_obs, state=state, episode_start=episode_start, deterministic=deterministic)
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_start = np.zeros((1,), dtype=bool)
        done = terminated or truncated
        yield action, float(reward)


def record_episode(
    model: BaseAlgorithm,
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    path: Path,
    seed: int,
    deterministic: bool = True,
) -> tuple[float, int]:
    """Play one episode in an ``rgb_array`` env (:func:`play_episode`: the last frame, after the final step, is
    kept) and write it as an animated GIF."""
    # pygame-rendered envs (CartPole) need no display for rgb_array; without this SDL complains on headless hosts.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        env = gym.make(env_id, render_mode="rgb_array", **(env_kwargs or {}))
    except (TypeError, ValueError, gym.error.Error) as error:
        raise CLIError(f"cannot record {env_id}: it does not render rgb_array frames ({error})") from None
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    episode_return = 0.0
    for _, reward in play_episode(model, env, obs, deterministic):
        episode_return += reward
        frames.append(env.render())
    fps = env.metadata.get("render_fps") or 4
    env.close()
    if frames[0] is None:
        raise CLIError(f"cannot record {env_id}: render() returned no frame")
    images = [Image.fromarray(np.asarray(frame, dtype=np.uint8)) for frame in frames]
    # Hold the last frame a little longer so the outcome is visible before the GIF loops.
    durations = [int(1000 / fps)] * (len(images) - 1) + [int(3000 / fps)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as temporary:  # a kill while writing leaves an earlier file of that name whole
        images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return episode_return, len(frames) - 1


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m train.evaluate",
        description="Evaluate a saved agent: mean ± std return and success rate, deterministic and sampled; "
        "optionally record an episode as a GIF.",
    )
    parser.add_argument("model", metavar="MODEL", help="a saved model .zip, or a run folder (its model.zip)")
    parser.add_argument("--episodes", type=int, default=100, metavar="N", help="episodes per evaluation (default: 100)")
    parser.add_argument("--seed", type=seed_int, default=12345, metavar="N", help="env seed (default: 12345)")
    parser.add_argument("--record", metavar="OUT.gif", help="also write one deterministic episode as a GIF")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--algo", choices=list(ALGORITHMS), help="algorithm, for a model without a run's config.yml")
    parser.add_argument("--env", metavar="ID", help="env id (default: the run's)")
    parser.add_argument("--trust-pickle", action="store_true", help="unpickle what the model file holds, which runs "
                        "code in it: only for a file you trust whose run's config.yml is missing")  # fmt: skip
    add_threads_argument(parser)
    return parser


def run_evaluation(args: argparse.Namespace) -> int:
    n_episodes = check_int("--episodes", args.episodes)
    check_device(args.device)
    record = None if args.record is None else check_output_path(args.record, "--record", "file")
    if record is not None and record.suffix.lower() != ".gif":
        raise CLIError(f"--record writes an animated GIF: give a file name ending in .gif, got {args.record!r}")
    model, venv, settings = load_run(args.model, min(n_episodes, 16), args.seed, args.device, args.algo, args.env,
                                     args.trust_pickle)  # fmt: skip
    print(f"{settings['model_path']} ({settings['algorithm']}) on {settings['env_id']}")
    venv = CheckFiniteVecEnv(venv, "evaluation env", None, EVAL_EPISODE_STEPS)
    try:
        for deterministic in (True, False):
            result = evaluate(model, venv, n_episodes, deterministic)
            print(f"  {'deterministic' if deterministic else 'sampled':13s} {result.summary()}")
    except (EnvError, NonFiniteError) as error:
        raise CLIError(str(error)) from None
    finally:
        venv.close()
    if record is not None:
        env_kwargs = settings["hyperparams"].get("env_kwargs")
        episode_return, length = record_episode(model, settings["env_id"], env_kwargs, record, args.seed)
        print(f"  recorded {record}: {length} steps, return {episode_return:.3f}")
    return 0


#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = cli_main(build_parser, run_evaluation)


if __name__ == "__main__":
    sys.exit(main())
