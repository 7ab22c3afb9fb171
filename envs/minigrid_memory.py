"""MiniGrid memory tasks (``MiniGrid-Memory*``) with observations SB3 policies can take.

MiniGrid observes a Dict ``{"image": (v, v, 3) uint8, "direction": Discrete(4), "mission": str}``. SB3
cannot take the mission string, and it would treat a ``(v, v, 3)`` uint8 Box with bounds 0..255 as an RGB image
(NatureCNN, which needs >= 36x36). :class:`SymbolicObsWrapper` therefore keeps

* ``"image"``: ``Box(0, [10, 5, 2], (v, v, 3), uint8)`` - per cell (object id, colour id, state id) as in
  ``minigrid.core.constants``; the tight upper bounds make SB3 see a plain Box (flattened by the default
  ``CombinedExtractor``) rather than an image; :class:`fw_agents.extractors.MiniGridSymbolicExtractor`
  embeds the ids instead;
* ``"direction"``: ``Discrete(4)`` (0 east, 1 south, 2 west, 3 north), one-hot encoded by SB3;

and drops the mission (constant within a task). Use ``MultiInputPolicy`` / ``MultiInputLstmPolicy``.
``flat=True`` instead gives one ``Box(0, 1, (v*v*20 + 4,), float32)`` one-hot vector (11 object + 6 colour +
3 state ids per cell, then the direction) for MLP / recurrent MLP policies.

Why ``view_size=3`` by default: with MiniGrid's own 7x7 view, the cue in the start room of MemoryS7 is in
view from the junction (turn around and look), so the task can be solved without memory. With a 3x3 view
every observation in the hallway and at the junction is the same whichever object was shown at the start
(``tests/envs/test_minigrid.py`` enumerates every state to show it), so a memoryless policy's choice at the
split is independent of the cue: success probability 1/2.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

from envs.validation import check_choice, check_int

#: The memory tasks of MiniGrid this module wraps (and registers in our namespace).
MINIGRID_MEMORY_IDS: tuple[str, ...] = (
    "MiniGrid-MemoryS7-v0",
    "MiniGrid-MemoryS9-v0",
    "MiniGrid-MemoryS11-v0",
    "MiniGrid-MemoryS13-v0",
    "MiniGrid-MemoryS13Random-v0",
    "MiniGrid-MemoryS17Random-v0",
)
DEFAULT_ENV_ID = "MiniGrid-MemoryS7-v0"
DEFAULT_VIEW_SIZE = 3

#: Number of distinct ids per channel of a symbolic cell: object, colour, state.
SYMBOL_SIZES: tuple[int, int, int] = (len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX))


class SymbolicObsWrapper(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """MiniGrid Dict observation -> ``{"image": (v, v, 3) uint8 ids, "direction": int}`` or a flat one-hot."""

    def __init__(self, env: gym.Env, flat: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, flat=flat)  # lets gymnasium re-create the env from its spec
        gym.ObservationWrapper.__init__(self, env)
        self.flat = bool(flat)
        h, w, c = env.observation_space["image"].shape
        if self.flat:
            self._offsets = np.cumsum((0, *SYMBOL_SIZES[:-1]))  # one-hot block start of each channel
            n = h * w * sum(SYMBOL_SIZES) + 4
            self.observation_space = spaces.Box(0.0, 1.0, (n,), dtype=np.float32)
        else:
            high = np.broadcast_to(np.array(SYMBOL_SIZES, dtype=np.uint8) - 1, (h, w, c)).copy()
            self.observation_space = spaces.Dict(
                {"image": spaces.Box(np.zeros_like(high), high, dtype=np.uint8), "direction": spaces.Discrete(4)}
            )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any] | np.ndarray:
        image = observation["image"]
        direction = int(observation["direction"])
        if not self.flat:
            return {"image": image, "direction": direction}
        h, w, _ = image.shape
        onehot = np.zeros((h * w, sum(SYMBOL_SIZES)), dtype=np.float32)
        rows = np.arange(h * w)[:, None]
        onehot[rows, image.reshape(h * w, 3) + self._offsets] = 1.0
        return np.concatenate([onehot.reshape(-1), np.eye(4, dtype=np.float32)[direction]])


class SuccessInfoWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Sets ``info["is_success"]`` at episode end: MiniGrid pays a positive reward only on success."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action: int):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info["is_success"] = bool(terminated and reward > 0)
        return obs, reward, terminated, truncated, info


class FirstActionsWrapper(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Keeps MiniGrid's first ``n_actions`` actions (3: turn left, turn right, forward; the rest of the memory
    tasks' 7 do nothing there), so that the agent does not spend its exploration on no-ops."""

    def __init__(self, env: gym.Env, n_actions: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, n_actions=n_actions)
        gym.ActionWrapper.__init__(self, env)
        self.action_space = spaces.Discrete(n_actions)

    def action(self, action: int) -> int:
        return int(action)


def make_minigrid_env(
    env_id: str = DEFAULT_ENV_ID,
    view_size: int = DEFAULT_VIEW_SIZE,
    flat: bool = False,
    n_actions: int = 7,
    render_mode: str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Make a MiniGrid memory task with a ``view_size x view_size`` egocentric view and SB3-ready observations.

    Args:
        env_id: one of :data:`MINIGRID_MEMORY_IDS`.
        view_size: odd, >= 3 (MiniGrid's requirement); 3 makes the task need memory (see module docstring).
        flat: one flat one-hot float32 vector instead of the ``{"image", "direction"}`` Dict.
        n_actions: MiniGrid's first ``n_actions`` actions, 3 to 7 (3: turn left, turn right, forward, the only
            ones that do anything in the memory tasks).
        render_mode: ``"rgb_array"`` (the whole grid, 32 px per cell, view highlighted), ``"human"`` or ``None``.
        **kwargs: passed to the MiniGrid constructor (e.g. ``max_steps``).
    """
    check_choice("env_id", env_id, MINIGRID_MEMORY_IDS)
    check_int("view_size", view_size, 3)
    check_int("n_actions", n_actions, 3, 7)
    if view_size % 2 == 0:
        raise ValueError(f"view_size must be odd and >= 3, got {view_size}")
    # The outer gymnasium.make (our registered id) adds its own checker; don't stack two.
    env = gym.make(env_id, agent_view_size=view_size, render_mode=render_mode, disable_env_checker=True, **kwargs)
    if n_actions < 7:
        env = FirstActionsWrapper(env, n_actions)
    return SuccessInfoWrapper(SymbolicObsWrapper(env, flat=flat))
