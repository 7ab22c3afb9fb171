"""Scripted agents for the MiniGrid memory tasks (3x3 view): the evidence that memory is needed, and the returns
that the suite's MiniGrid scores are normalised by."""

from __future__ import annotations

import gymnasium as gym
from minigrid.core.constants import OBJECT_TO_IDX

LEFT, RIGHT, FORWARD = 0, 1, 2
EAST, SOUTH, WEST, NORTH = range(4)
CUE_OBJECTS = (OBJECT_TO_IDX["key"], OBJECT_TO_IDX["ball"])


class Scripted:
    """Look at the cue from (2, mid) facing west, walk to the split, face north, pick the matching side.

    Navigation reads the agent's position from the env (that is not what has to be remembered); the cue and
    the candidate objects are read from the 3x3 observations only. ``memory=False`` does not keep the cue
    after leaving the room and always goes north: the natural memoryless policy.
    """

    def __init__(self, env: gym.Env, memory: bool) -> None:
        self.u, self.memory = env.unwrapped, memory
        self.cue: int | None = None
        self.phase = "look"

    def _go(self, x: int, direction: int) -> int | None:
        """Next action towards cell x of the middle row facing ``direction``; None once there."""
        ax, ad = int(self.u.agent_pos[0]), int(self.u.agent_dir)
        want = direction if ax == x else (EAST if x > ax else WEST)
        if ad != want:
            return RIGHT
        return None if ax == x else FORWARD

    def __call__(self, obs: dict) -> int:
        seen = [int(i) for i in obs["image"][..., 0].ravel() if i in CUE_OBJECTS]
        if self.phase == "look":
            action = self._go(2, WEST)
            if action is not None:
                return action
            self.cue, self.phase = (seen[0] if self.memory else None), "walk"
        if self.phase == "walk":
            action = self._go(int(self.u.success_pos[0]), NORTH)  # only the x of the split is used
            if action is not None:
                return action
            # Facing north at the split: the north candidate is in view.
            self.phase = "south" if self.cue is not None and seen[0] != self.cue else "north"
        if self.phase == "south" and int(self.u.agent_dir) != SOUTH:
            return RIGHT
        return FORWARD


class OracleRusher(Scripted):
    """Straight to the split, then to the right object (known from the env): the return a rushing agent gets
    when its guess is right; a memoryless agent guesses right half the time, so its best is half of that."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env, memory=False)
        self.phase = "walk"

    def __call__(self, obs: dict) -> int:
        action = super().__call__(obs)
        if self.phase == "north" and self.u.success_pos[1] > self.u.agent_pos[1]:
            self.phase = "south"
            return super().__call__(obs)
        return action
