"""T-maze (Bakker 2002), passive and active variants as in Ni et al. 2023 ("When do transformers shine in RL?").

Layout (``o`` oracle, ``s`` start, ``j`` junction, ``G`` the two goal candidates)::

    passive (start = oracle)          active (oracle one step left of the start)
                 G                                  G
    s---------- j    (L cells to j)    o s---------- j    (L cells from s to j)
                 G                                  G

The oracle cell shows the goal side (up or down) the first time the agent stands on it - at reset in the
passive variant; the active variant starts next to it, so the agent must first step left to see the cue.
Corridor cells all look alike, so after the cue the agent must remember it over the whole corridor.

Reward scheme (Ni et al.'s, simplified so the episode ends at the decision):
  * turning up/down at the junction ends the episode: +1 if it is the cued side, 0 otherwise;
  * a per-step penalty ``lag_penalty`` (default 1/T) makes walking right learnable without changing the optimal
    policy, whose return is exactly 1. ``penalty="lag"`` (Ni et al., the ``-v0`` ids) charges each step on which
    the agent is behind the fastest cue-then-junction schedule (``x < t - o``, ``o`` = 1 for active, 0 for
    passive); ``penalty="progress"`` (the ``-v1`` ids) charges each step that does not move it towards the
    junction, except steps left towards the oracle before the cue has been seen;
  * the horizon ``T`` defaults to the optimal path length ``L + 2o + 1`` (as in Ni et al.); running out of time
    terminates with no goal reward (the time limit is part of the task, so it is a termination).

Why ``-v1`` exists: with ``-v0``'s exact horizon one wrong step anywhere in the corridor makes the junction
unreachable, so an on-policy agent (A2C, PPO) must walk right almost deterministically before it ever reaches the
junction, and by then its turn probability there has collapsed too: no policy-gradient agent, memoryless or not,
learned to turn at all (success 0 in every suite run). ``-v1`` gives twice the path length (``T = 2(L + 2o) + 1``)
and charges only steps without progress, so a few exploratory steps still reach the junction; its optimal and
best memoryless returns are ``-v0``'s (1 and 1/2).

Observation: ``Box(0, 1, (3,), float32)`` = ``[cue_up, cue_down, at_junction]``. Actions: ``Discrete(4)``
= left, right, up, down (up/down only do something at the junction). At the junction the observation is the
same whichever side is cued, so a memoryless policy succeeds with probability at most 1/2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.base import MemoryEnv
from envs.rendering import COLORS, paint
from envs.validation import check_choice, check_int

VARIANTS = ("passive", "active")
PENALTIES = ("lag", "progress")
LEFT, RIGHT, UP, DOWN = range(4)
GOAL_SIDES = ("up", "down")


def shortest_path_length(corridor_length: int, variant: str) -> int:
    """Steps of the optimal episode, ``L + 2o + 1``: (active: one step left and back,) walk to the junction, turn;
    ``-v0``'s horizon."""
    return corridor_length + 2 * VARIANTS.index(variant) + 1


class TMazeEnv(MemoryEnv):
    """T-maze with corridor length ``corridor_length`` (L >= 1) and ``variant`` "passive" or "active".

    ``penalty`` ("lag" or "progress") picks the per-step penalty rule and ``horizon`` (at least the optimal path
    length ``L + 2o + 1``, its default) the time limit; see the module docstring.

    ``reset(options={"goal": "up" | "down"})`` fixes the cued side (scripted evaluation).
    """

    metadata = {**MemoryEnv.metadata, "render_fps": 8}
    cell_px = 24  # the maze is only 3 cells high

    def __init__(
        self,
        corridor_length: int = 10,
        variant: str = "passive",
        lag_penalty: float | None = None,
        penalty: str = "lag",
        horizon: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode)
        self.corridor_length = check_int("corridor_length", corridor_length, 1)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.oracle_offset = VARIANTS.index(self.variant)  # o: start cell minus oracle cell
        self.junction = self.oracle_offset + self.corridor_length
        self.penalty = check_choice("penalty", penalty, PENALTIES)
        shortest = shortest_path_length(self.corridor_length, self.variant)
        self.horizon = shortest if horizon is None else check_int("horizon", horizon, shortest)
        self.lag_penalty = 1.0 / self.horizon if lag_penalty is None else float(lag_penalty)
        if not 0.0 <= self.lag_penalty <= 1.0:
            raise ValueError(f"lag_penalty must be in [0, 1], got {lag_penalty}")
        self.observation_space = spaces.Box(0.0, 1.0, (3,), dtype=np.float32)
        self.action_space = spaces.Discrete(4)
        self.x = 0
        self.goal = 0  # index into GOAL_SIDES
        self.cue_visible = False
        self._oracle_seen = False

    def _reset_state(self, options: dict[str, Any]) -> None:
        goal = options.get("goal")
        if goal is None:
            self.goal = int(self.np_random.integers(2))
        else:
            self.goal = GOAL_SIDES.index(check_choice("goal", goal, GOAL_SIDES))
        self.x = self.oracle_offset
        self._oracle_seen = False
        self._update_cue()

    def _update_cue(self) -> None:
        # The cue shows on the first arrival at the oracle only (Ni et al.): standing still there reveals nothing.
        self.cue_visible = self.x == 0 and not self._oracle_seen
        self._oracle_seen = self._oracle_seen or self.x == 0

    def _step_state(self, action: int) -> tuple[float, bool, bool | None]:
        if action in (UP, DOWN) and self.x == self.junction:
            correct = GOAL_SIDES[self.goal] == ("up" if action == UP else "down")
            self.cue_visible = False
            return float(correct), True, correct
        x_before, oracle_seen_before = self.x, self._oracle_seen
        if action == LEFT:
            self.x = max(self.x - 1, 0)
        elif action == RIGHT:
            self.x = min(self.x + 1, self.junction)
        self._update_cue()
        if self.penalty == "lag":
            penalised = self.x < self.t - self.oracle_offset
        else:  # "progress": towards the junction, or towards the oracle while its cue is still unseen
            penalised = not (self.x > x_before or (self.x < x_before and not oracle_seen_before))
        reward = -self.lag_penalty if penalised else 0.0
        return reward, self.t >= self.horizon, False

    def _observe(self) -> np.ndarray:
        obs = np.zeros(3, dtype=np.float32)
        if self.cue_visible:
            obs[self.goal] = 1.0
        obs[2] = float(self.x == self.junction)
        return obs

    def _render_cells(self) -> np.ndarray:
        cells = paint((3, self.junction + 1), "wall")
        cells[1, :] = COLORS["floor"]
        cells[[0, 2], self.junction] = COLORS["floor"]
        # The cue colour marks the oracle and the goal (bright while the agent can see it); a person sees both.
        cue = "cue_a" if self.goal == 0 else "cue_b"
        cells[1, 0] = COLORS[cue] if self.cue_visible else np.array(COLORS[cue]) // 2
        cells[0 if self.goal == 0 else 2, self.junction] = np.array(COLORS[cue]) // 2
        cells[1, self.x] = COLORS["agent"]
        return cells

    def _render_text(self) -> str:
        """``#`` wall, ``.`` corridor, ``A`` agent, ``G`` the cued goal, ``U``/``D`` the cue on the oracle
        (lower case once the agent can no longer see it)."""
        rows = [["#"] * (self.junction + 1), ["."] * (self.junction + 1), ["#"] * (self.junction + 1)]
        rows[0][self.junction] = rows[2][self.junction] = "."
        rows[0 if self.goal == 0 else 2][self.junction] = "G"
        rows[1][0] = "UD"[self.goal] if self.cue_visible else "ud"[self.goal]
        rows[1][self.x] = "A"
        return "\n".join("".join(r) for r in rows) + "\n"
