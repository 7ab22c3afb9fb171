"""MiniGrid memory tasks: wrapped observations, and evidence that a 3x3 view makes memory necessary."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from minigrid.core.world_object import Ball, Key

import envs
from envs.minigrid_memory import MINIGRID_MEMORY_IDS, SYMBOL_SIZES, SymbolicObsWrapper, make_minigrid_env
from tests.envs.helpers import binomial_upper, run_episode
from tests.envs.minigrid_agents import LEFT, WEST, Scripted


def cue_revealing_states(env_id: str, view_size: int, seed: int = 0) -> set[tuple[int, int, int]]:
    """All agent states (x, y, direction) whose observation differs between a key and a ball as the cue.

    Same layout (same seed, so same end objects and hallway); only the start-room object is swapped.
    """
    env = make_minigrid_env(env_id, view_size=view_size)
    env.reset(seed=seed)
    u, symbolic = env.unwrapped, env.env
    assert isinstance(symbolic, SymbolicObsWrapper)
    cue_pos = (1, u.height // 2 - 1)  # where MiniGrid's MemoryEnv puts the start-room object
    views: dict[tuple[int, int, int], list[bytes]] = {}
    for cue in (Key, Ball):
        u.grid.set(*cue_pos, cue("green"))
        for x in range(1, u.width - 1):
            for y in range(1, u.height - 1):
                cell = u.grid.get(x, y)
                if cell is not None and not cell.can_overlap():
                    continue
                for d in range(4):
                    u.agent_pos, u.agent_dir = np.array((x, y)), d
                    image = symbolic.observation(u.gen_obs())["image"]
                    views.setdefault((x, y, d), []).append(image.tobytes())
    return {state for state, (a, b) in views.items() if a != b}


@pytest.mark.parametrize("env_id", ["MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS11-v0", "MiniGrid-MemoryS17Random-v0"])
def test_3x3_view_hides_the_cue_outside_the_start_room(env_id: str) -> None:
    # The start room spans x = 1..3; its doorway is at x = 4. With a 3x3 view the cue can only be seen from
    # inside the room, so every observation in the hallway and at the split is identical whichever object was
    # shown: a memoryless policy's choice at the split cannot depend on the cue (success 1/2).
    revealing = cue_revealing_states(env_id, view_size=3)
    assert revealing, "the cue must be visible from somewhere"
    assert max(x for x, _, _ in revealing) <= 3


def test_7x7_view_shows_the_cue_from_the_split() -> None:
    # Why not MiniGrid's default view: in MemoryS7 an agent at the split that looks west sees the cue (and,
    # sideways, both candidate objects), so a memoryless policy can solve the task.
    revealing = cue_revealing_states("MiniGrid-MemoryS7-v0", view_size=7)
    assert (5, 3, WEST) in revealing  # (5, 3) is the split cell of MemoryS7


@pytest.mark.parametrize("env_id", ["fw_agents/MiniGrid-MemoryS7-v0", "fw_agents/MiniGrid-MemoryS13Random-v0"])
def test_memory_solves_it_memoryless_is_at_chance(env_id: str) -> None:
    env = gym.make(env_id)
    n = 300
    with_memory = [run_episode(env, Scripted(env, memory=True), seed=s).info["is_success"] for s in range(n)]
    without = [run_episode(env, Scripted(env, memory=False), seed=s).info["is_success"] for s in range(n)]
    assert all(with_memory)
    assert abs(np.mean(without) - 0.5) < binomial_upper(0.5, n) - 0.5


@pytest.mark.parametrize("env_id", MINIGRID_MEMORY_IDS)
def test_registered_ids_use_3x3_view_and_dict_obs(env_id: str) -> None:
    env = gym.make(f"{envs.NAMESPACE}/{env_id}")
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict) and set(space.spaces) == {"image", "direction"}
    assert space["image"].shape == (3, 3, 3) and space["image"].dtype == np.uint8
    assert space["image"].high[0, 0].tolist() == [s - 1 for s in SYMBOL_SIZES]
    assert space["direction"] == gym.spaces.Discrete(4)
    obs, _ = env.reset(seed=0)
    assert space.contains(obs)


def test_flat_one_hot_matches_dict() -> None:
    dict_env = make_minigrid_env(view_size=5)
    flat_env = make_minigrid_env(view_size=5, flat=True)
    assert flat_env.observation_space.shape == (5 * 5 * sum(SYMBOL_SIZES) + 4,)
    d, _ = dict_env.reset(seed=3)
    f, _ = flat_env.reset(seed=3)
    cells = f[:-4].reshape(25, sum(SYMBOL_SIZES))
    assert (cells.sum(axis=1) == 3).all()  # one id per channel per cell
    np.testing.assert_array_equal(cells[:, : SYMBOL_SIZES[0]].argmax(1), d["image"][..., 0].ravel())
    assert f[-4:].argmax() == d["direction"]


def test_success_flag() -> None:
    env = gym.make("fw_agents/MiniGrid-MemoryS7-v0")
    episode = run_episode(env, Scripted(env, memory=True), seed=0)
    assert episode.info["is_success"] is True and episode.ret > 0
    episode = run_episode(env, lambda _obs: LEFT, seed=0)  # spins until MiniGrid's time limit
    assert episode.info["is_success"] is False


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"env_id": "MiniGrid-Empty-5x5-v0"}, "env_id"),
        ({"view_size": 2}, "view_size"),
        ({"view_size": 4}, "view_size"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_minigrid_env(**kwargs)


def test_n_actions_keeps_minigrids_first_actions() -> None:
    env = gym.make("fw_agents/MiniGrid-MemoryS7-v0", n_actions=3)
    assert env.action_space == gym.spaces.Discrete(3)
    env.reset(seed=0)
    direction = env.unwrapped.agent_dir
    env.step(1)  # MiniGrid's "turn right"
    assert env.unwrapped.agent_dir == (direction + 1) % 4
    with pytest.raises(ValueError, match="n_actions"):
        gym.make("fw_agents/MiniGrid-MemoryS7-v0", n_actions=2)
