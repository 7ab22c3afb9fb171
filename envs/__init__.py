"""Memory environments for fw-agents, registered with Gymnasium under the ``fw_agents`` namespace.

``import envs`` registers every id in :data:`SPECS`; then ``gymnasium.make("fw_agents/<Name>")`` works.
See ``envs/README.md`` for the table of ids, observations, rewards and chance / optimal returns.

Modules: ``cartpole`` (CartPole without velocities), ``catch`` (partially observable Catch),
``associative_retrieval``, ``tmaze`` (passive / active T-maze), ``minigrid_memory`` (MiniGrid memory tasks
with SB3-ready observations); ``base`` / ``rendering`` / ``validation`` hold what they share.

``popgym`` wraps POPGym's tasks (an optional dependency, ``pip install fw-agents[popgym]``) with POPGym's own
wrappers; they are registered as ``fw_agents/popgym-<Task>-v0`` (:data:`POPGYM_SPECS`) apart from :data:`SPECS`,
since they are POPGym's envs, with its rewards and rendering (no ``is_success``), not ours.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym

from envs.associative_retrieval import AssociativeRetrievalEnv
from envs.cartpole import CartPoleNoVelEnv
from envs.catch import CatchEnv
from envs.minigrid_memory import (
    DEFAULT_ENV_ID,
    DEFAULT_VIEW_SIZE,
    MINIGRID_MEMORY_IDS,
    SymbolicObsWrapper,
    make_minigrid_env,
)
from envs.popgym import POPGYM_IDS, make_popgym_env
from envs.tmaze import TMazeEnv, shortest_path_length

#: Gymnasium namespace of every id registered here.
NAMESPACE = "fw_agents"


class EnvSpec(NamedTuple):
    """One registered id: name inside the namespace, entry point, constructor kwargs, TimeLimit (or None)."""

    name: str
    entry_point: str
    kwargs: dict[str, Any]
    max_episode_steps: int | None = None


#: Every registered id; one table, one registration loop. Envs other than CartPole end their episodes
#: themselves (their horizon is part of the task), so they get no TimeLimit.
SPECS: tuple[EnvSpec, ...] = (
    EnvSpec("CartPoleNoVel-v1", "envs.cartpole:CartPoleNoVelEnv", {}, 500),
    EnvSpec("Catch-N16-M3-v0", "envs.catch:CatchEnv", {"size": 16, "visible_frames": 3}),
    EnvSpec("Catch-N24-M5-v0", "envs.catch:CatchEnv", {"size": 24, "visible_frames": 5}),
    EnvSpec("Catch-N16-Full-v0", "envs.catch:CatchEnv", {"size": 16, "visible_frames": 16}),
    EnvSpec("Catch-N24-Full-v0", "envs.catch:CatchEnv", {"size": 24, "visible_frames": 24}),
    EnvSpec("AssociativeRetrieval-K4-v0", "envs.associative_retrieval:AssociativeRetrievalEnv", {"num_pairs": 4}),
    EnvSpec("AssociativeRetrieval-K8-v0", "envs.associative_retrieval:AssociativeRetrievalEnv", {"num_pairs": 8}),
    *(
        EnvSpec(
            f"TMaze{variant.title()}-L{length}-v0",
            "envs.tmaze:TMazeEnv",
            {"corridor_length": length, "variant": variant},
        )
        for variant in ("passive", "active")
        for length in (10, 50)
    ),
    # v1: twice the path length and a penalty only for steps without progress, so on-policy agents reach the
    # junction (envs/tmaze.py says why); the suite's T-mazes.
    *(
        EnvSpec(
            f"TMaze{variant.title()}-L{length}-v1",
            "envs.tmaze:TMazeEnv",
            {
                "corridor_length": length,
                "variant": variant,
                "penalty": "progress",
                "horizon": 2 * shortest_path_length(length, variant) - 1,
            },
        )
        for variant in ("passive", "active")
        for length in (10, 50)
    ),
    # MiniGrid's names, in our namespace, with our 3x3 view.
    *(
        EnvSpec(env_id, "envs.minigrid_memory:make_minigrid_env", {"env_id": env_id, "view_size": DEFAULT_VIEW_SIZE})
        for env_id in MINIGRID_MEMORY_IDS
    ),
)

#: POPGym's tasks with POPGym's wrappers (:mod:`envs.popgym`), under POPGym's names in our namespace. Registered
#: whether or not POPGym is installed: making one without it is an ImportError saying how to install it.
POPGYM_SPECS: tuple[EnvSpec, ...] = tuple(
    EnvSpec(popgym_id, "envs.popgym:make_popgym_env", {"env_id": popgym_id}) for popgym_id in POPGYM_IDS
)


def _register_all() -> None:
    for spec in (*SPECS, *POPGYM_SPECS):
        env_id = f"{NAMESPACE}/{spec.name}"
        if env_id in gym.registry:  # re-import (e.g. importlib.reload) must not warn or fail
            continue
        gym.register(
            id=env_id, entry_point=spec.entry_point, kwargs=spec.kwargs, max_episode_steps=spec.max_episode_steps
        )


def registered_ids() -> list[str]:
    """The ids of this package's own environments (:data:`SPECS`), in table order."""
    return [f"{NAMESPACE}/{spec.name}" for spec in SPECS]


def popgym_ids() -> list[str]:
    """The ids of POPGym's tasks as registered here (:data:`POPGYM_SPECS`): ``fw_agents/popgym-<Task>-v0``."""
    return [f"{NAMESPACE}/{spec.name}" for spec in POPGYM_SPECS]


_register_all()

__all__ = [
    "DEFAULT_ENV_ID",
    "DEFAULT_VIEW_SIZE",
    "MINIGRID_MEMORY_IDS",
    "NAMESPACE",
    "POPGYM_IDS",
    "POPGYM_SPECS",
    "SPECS",
    "AssociativeRetrievalEnv",
    "CartPoleNoVelEnv",
    "CatchEnv",
    "EnvSpec",
    "SymbolicObsWrapper",
    "TMazeEnv",
    "make_minigrid_env",
    "make_popgym_env",
    "popgym_ids",
    "registered_ids",
]
