"""How many steps separate the last look at the cue from the choice, on MiniGrid's MemoryS7/S9 with a 3x3 view.

For each start column, a breadth-first search over (cell, direction, cue seen) finds the shortest way to see the
cue and reach the junction; the choice is the turn there (the step after it ends the episode). With BPTT chunks
of L steps, the loss at the choice can train how the cue was stored only when both steps fall in one chunk. The
script prints that fraction of episodes (start columns are equally likely) for chunks cut at fixed rollout steps
(an episode starts at a uniformly random offset) and for chunks counted from the episode's start.

    python docs/results/minigrid/cue_choice_distance.py
"""

from __future__ import annotations

import collections

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
import numpy as np

MOVES = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid's directions: east, south, west, north


def look_and_choice_steps(size: int) -> list[tuple[int, int, int]]:
    """Per start column: (column, step whose observation shows the cue, step of the choice at the junction)."""
    env = gym.make(f"MiniGrid-MemoryS{size}-v0", agent_view_size=3).unwrapped
    env.reset(seed=0)
    row, junction_x = size // 2, size - 2  # the hallway's row; the column of the split
    cue = (1, row - 1)

    def sees_cue(pos: tuple[int, int], direction: int) -> bool:
        env.agent_pos, env.agent_dir = np.array(pos), direction
        coords = env.relative_coords(*cue)
        return coords is not None and bool(env.gen_obs_grid()[1][coords])

    out = []
    for x in range(1, junction_x):
        first = ((x, row), 0, sees_cue((x, row), 0))
        queue = collections.deque([(first, 0, 0 if first[2] else None)])
        visited = {first}
        while queue:
            (pos, direction, seen), t, t_look = queue.popleft()
            if seen and pos == (junction_x, row):
                out.append((x, t_look, t))
                break
            for action in range(3):  # left, right, forward
                new_pos, new_dir = pos, direction
                if action < 2:
                    new_dir = (direction + (1 if action else -1)) % 4
                else:
                    ahead = (pos[0] + MOVES[direction][0], pos[1] + MOVES[direction][1])
                    cell = env.grid.get(*ahead)
                    if cell is not None and not cell.can_overlap():
                        continue
                    new_pos = ahead
                looks = sees_cue(new_pos, new_dir)
                state = (new_pos, new_dir, seen or looks)
                if state not in visited:
                    visited.add(state)
                    queue.append((state, t + 1, t + 1 if looks and not seen else t_look))
    return out


if __name__ == "__main__":
    for size in (7, 9):
        rows = look_and_choice_steps(size)
        print(f"MemoryS{size}: (start column, step of the look, step of the choice):", rows)
        for length in (8, 16):
            fixed = np.mean([max(0, length - (choice - look)) / length for _, look, choice in rows])
            aligned = np.mean([look // length == choice // length for _, look, choice in rows])
            print(f"  chunks of {length}: both in one, fixed steps {fixed:.2f}, from the start {aligned:.2f}")
