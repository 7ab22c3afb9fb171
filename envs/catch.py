"""Partially observable Catch (Ba et al. 2016, §5; after Mnih et al. 2014).

An ``N x N`` binary screen. A ball starts in a uniformly random column of the top row and falls one row per
step; a paddle on the bottom row moves left / stays / moves right (actions 0 / 1 / 2). When the ball reaches
the bottom row the episode terminates with reward +1 if the paddle is under it, -1 otherwise. The ball is
drawn only in the first ``M`` frames (frame 0 is the observation returned by ``reset``); the paddle is always
drawn. After the blanking the agent must remember where the ball was.

Observation: ``Box(0, 1, (N*N,), float32)``, the screen flattened row by row (row 0 at the top), 1.0 where
the ball or paddle is; ``flatten=False`` gives the ``(N, N)`` screen for convolutional extractors. A float
vector rather than a uint8 image because SB3's image policies (NatureCNN) need at least 36x36 pixels, and SB3's
checker warns about 2-D non-image Boxes; the (recurrent) MLP policies take the ``N*N`` vector as is, which is
what the paper's 128-unit agents see.

Defaults and why: ``size=16, visible_frames=3`` is the paper's easier variant; ``paddle_width=1`` makes a
catch need the exact column (a wider paddle makes guessing pay); ``paddle_start="center"`` removes a source
of randomness so the best memoryless catch rate has the closed form in :meth:`CatchEnv.memoryless_catch_rate`;
``"random"`` is available for harder generalisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.base import MemoryEnv
from envs.rendering import COLORS, paint
from envs.validation import check_choice, check_int

PADDLE_STARTS = ("center", "random")


class CatchEnv(MemoryEnv):
    """Catch on an ``size x size`` screen with the ball visible in the first ``visible_frames`` frames.

    Args:
        size: N, screen side in cells (>= 3). An episode lasts exactly N-1 steps.
        visible_frames: M (>= 1), frames in which the ball is drawn; M >= N-1 is fully observable.
        paddle_width: cells covered by the paddle, in [1, N].
        paddle_start: ``"center"`` (column ``(N - width) // 2``) or ``"random"`` (uniform).
        flatten: observe the ``(N*N,)`` vector (default) or the ``(N, N)`` screen.

    ``reset(options={"ball_column": c, "paddle_column": p})`` fixes the start (scripted evaluation).
    """

    def __init__(
        self,
        size: int = 16,
        visible_frames: int = 3,
        paddle_width: int = 1,
        paddle_start: str = "center",
        flatten: bool = True,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode)
        self.size = check_int("size", size, 3)
        self.visible_frames = check_int("visible_frames", visible_frames, 1)
        self.paddle_width = check_int("paddle_width", paddle_width, 1, self.size)
        self.paddle_start = check_choice("paddle_start", paddle_start, PADDLE_STARTS)
        self.flatten = bool(flatten)
        shape = (self.size * self.size,) if self.flatten else (self.size, self.size)
        self.observation_space = spaces.Box(0.0, 1.0, shape, dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self.ball_row = self.ball_col = self.paddle_col = 0  # paddle_col: leftmost paddle cell

    @property
    def horizon(self) -> int:
        """Steps per episode: the ball needs N-1 steps to reach the bottom row."""
        return self.size - 1

    @property
    def ball_visible(self) -> bool:
        """Whether the current frame (index ``t``) shows the ball."""
        return self.t < self.visible_frames

    def _reset_state(self, options: dict[str, Any]) -> None:
        n, w = self.size, self.paddle_width
        self.ball_row = 0
        self.ball_col = check_int("ball_column", options.get("ball_column", int(self.np_random.integers(n))), 0, n - 1)
        default_paddle = (n - w) // 2 if self.paddle_start == "center" else int(self.np_random.integers(n - w + 1))
        self.paddle_col = check_int("paddle_column", options.get("paddle_column", default_paddle), 0, n - w)

    def _step_state(self, action: int) -> tuple[float, bool, bool | None]:
        # Move the paddle first, then let the ball fall: the last move still counts for the catch.
        self.paddle_col = min(max(self.paddle_col + action - 1, 0), self.size - self.paddle_width)
        self.ball_row += 1
        if self.ball_row < self.size - 1:
            return 0.0, False, None
        caught = self.paddle_col <= self.ball_col < self.paddle_col + self.paddle_width
        return (1.0 if caught else -1.0), True, caught

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.size, self.size), dtype=np.float32)
        obs[-1, self.paddle_col : self.paddle_col + self.paddle_width] = 1.0
        if self.ball_visible:
            obs[self.ball_row, self.ball_col] = 1.0
        return obs.reshape(-1) if self.flatten else obs

    def _render_cells(self) -> np.ndarray:
        cells = paint((self.size, self.size))
        cells[-1, self.paddle_col : self.paddle_col + self.paddle_width] = COLORS["paddle"]
        # A person watching should see the hidden ball too, dimmed, to judge what the agent remembers.
        cells[self.ball_row, self.ball_col] = COLORS["ball" if self.ball_visible else "ball_hidden"]
        return cells

    def _render_text(self) -> str:
        """``.`` empty, ``=`` paddle, ``O`` visible ball, ``o`` hidden ball (not in the observation)."""
        grid = [["."] * self.size for _ in range(self.size)]
        for c in range(self.paddle_col, self.paddle_col + self.paddle_width):
            grid[-1][c] = "="
        grid[self.ball_row][self.ball_col] = "O" if self.ball_visible else "o"
        return "\n".join("".join(row) for row in grid) + "\n"

    def memoryless_catch_rate(self) -> float:
        """Upper bound on the catch rate of ANY memoryless policy (paddle_start="center").

        Why: the ball is seen for M frames, so at most k = min(M, N-1) moves can depend on its column; after
        that every observation shows only the paddle, so the rest of the episode - and the final paddle
        position - depends on the ball column only through the paddle column p_k after those k moves. p_k takes
        at most ``n_p = min(2k+1, N-w+1)`` values, and for each value the best final placement covers at most
        ``w`` of the N equally likely columns: P(catch) <= n_p * w / N. Moving towards the ball while it is
        visible and then staying attains the bound when w = 1.
        """
        if self.paddle_start != "center":
            raise ValueError("memoryless_catch_rate is derived for paddle_start='center' only")
        k = min(self.visible_frames, self.horizon)
        n_positions = min(2 * k + 1, self.size - self.paddle_width + 1)
        return min(1.0, n_positions * self.paddle_width / self.size)
