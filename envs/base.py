"""Common base of the hand-written memory environments: render-mode handling and episode bookkeeping.

Subclasses implement ``_reset_state()``, ``_step_state(action) -> (reward, terminated, success | None)``,
``_observe()``, ``_render_cells()`` (a colour-per-cell array) or ``_render_rgb()``, and ``_render_text()``.
The base class owns seeding (through ``gymnasium.Env.np_random``), the step counter, the
``info["is_success"]`` flag at episode end, and the ``render()`` dispatch, so none of it is repeated.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.rendering import CELL_PX, upscale
from envs.validation import check_choice

RENDER_MODES = ["rgb_array", "ansi"]


class MemoryEnv(gym.Env):
    """Episodic environment with a finite horizon; ``info["is_success"]`` is set on the last step."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": RENDER_MODES, "render_fps": 4}
    #: Pixels per cell of ``rgb_array`` frames.
    cell_px: ClassVar[int] = CELL_PX

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode is not None:
            check_choice("render_mode", render_mode, RENDER_MODES)
        self.render_mode = render_mode
        self.t = 0  # steps taken in the current episode

    # --- to implement -------------------------------------------------------------------------------------
    def _reset_state(self, options: dict[str, Any]) -> None:
        raise NotImplementedError

    def _step_state(self, action: int) -> tuple[float, bool, bool | None]:
        """Advance the hidden state; return (reward, terminated, success or None while running)."""
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        raise NotImplementedError

    def _render_cells(self) -> np.ndarray:
        """``(H, W, 3)`` uint8, one colour per cell; the default ``_render_rgb`` upscales it."""
        raise NotImplementedError

    def _render_text(self) -> str:
        raise NotImplementedError

    # --- gymnasium API ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        self._reset_state(options or {})
        return self._observe(), {}

    def step(self, action: int):
        # Cheaper than Discrete.contains (half the step time of the small envs); same verdict for ints.
        a = int(action)
        if a != action or not 0 <= a < self.action_space.n:
            raise ValueError(f"action must be in {self.action_space}, got {action!r}")
        self.t += 1
        reward, terminated, success = self._step_state(a)
        info: dict[str, Any] = {}
        if terminated:
            info["is_success"] = bool(success)
        return self._observe(), float(reward), terminated, False, info

    def render(self) -> np.ndarray | str | None:
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        if self.render_mode == "ansi":
            return self._render_text()
        return None

    def _render_rgb(self) -> np.ndarray:
        return upscale(self._render_cells(), self.cell_px)
