"""Memory environments for fw-agents, registered with Gymnasium under the ``fw_agents`` namespace.

``import envs`` registers every id below; then ``gymnasium.make("fw_agents/<Name>-v<k>")`` works.
See ``envs/README.md`` for the table of ids, observations, rewards and chance / optimal returns.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.cartpole import CartPoleNoVelEnv

#: Gymnasium namespace of every id registered here.
NAMESPACE = "fw_agents"

#: (name, entry point, kwargs, max_episode_steps) for every registered id; one table, one loop.
_SPECS: list[tuple[str, str, dict[str, Any], int | None]] = [
    ("CartPoleNoVel-v1", "envs.cartpole:CartPoleNoVelEnv", {}, 500),
]


def _register_all() -> None:
    for name, entry_point, kwargs, max_steps in _SPECS:
        env_id = f"{NAMESPACE}/{name}"
        if env_id in gym.registry:  # re-import (e.g. importlib.reload) must not warn or fail
            continue
        gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs, max_episode_steps=max_steps)


def registered_ids() -> list[str]:
    """All ids this package registers, in table order."""
    return [f"{NAMESPACE}/{name}" for name, *_ in _SPECS]


_register_all()

__all__ = ["NAMESPACE", "CartPoleNoVelEnv", "registered_ids"]
