"""Catch: dynamics, optimal return with memory, and the memoryless bound."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.catch import CatchEnv
from tests.envs.helpers import LookupPolicy, run_episode

VARIANTS = [(16, 3), (24, 5)]


class RememberingCatcher:
    """Perfect memory: note the ball column while it is visible, then steer the paddle under it."""

    def __init__(self, size: int, width: int = 1) -> None:
        self.size, self.width, self.target = size, width, 0

    def __call__(self, obs: np.ndarray) -> int:
        screen = obs.reshape(self.size, self.size)
        ball = np.flatnonzero(screen[:-1].any(axis=0))  # the ball is above the bottom row while visible
        if ball.size:
            self.target = int(ball[0])
        left = int(np.flatnonzero(screen[-1])[0])
        centre = left + (self.width - 1) / 2
        return 1 + int(np.sign(self.target - centre)) if abs(self.target - centre) >= 1 else 1


class ChaseThenStay:
    """Memoryless: move towards the ball while it is visible, stay once it is not."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, obs: np.ndarray) -> int:
        screen = obs.reshape(self.size, self.size)
        ball = np.flatnonzero(screen[:-1].any(axis=0))
        if not ball.size:
            return 1
        return 1 + int(np.sign(ball[0] - np.flatnonzero(screen[-1])[0]))


def catch_rate(env: CatchEnv, make_policy) -> float:
    """Exact catch rate over the N equally likely ball columns (the env is deterministic given the column)."""
    caught = [run_episode(env, make_policy(), options={"ball_column": c}).info["is_success"] for c in range(env.size)]
    return float(np.mean(caught))


@pytest.mark.parametrize(("n", "m"), VARIANTS)
def test_registered_variant_shapes_and_episode(n: int, m: int) -> None:
    env = gym.make(f"fw_agents/Catch-N{n}-M{m}-v0")
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (n * n,), np.float32)
    assert env.action_space == gym.spaces.Discrete(3)
    episode = run_episode(env, lambda _obs: 1, seed=0)
    assert len(episode.rewards) == n - 1  # the ball falls one row per step
    assert episode.rewards[:-1] == [0.0] * (n - 2) and episode.rewards[-1] in (-1.0, 1.0)
    for t, obs in enumerate(episode.observations):
        screen = obs.reshape(n, n)
        assert obs.dtype == np.float32 and set(np.unique(obs)) <= {0.0, 1.0}
        assert screen[-1].sum() == 1, "paddle always visible"
        assert screen[:-1].sum() == (1 if t < m else 0), "ball visible in the first M frames only"


@pytest.mark.parametrize(("n", "m"), VARIANTS)
def test_perfect_memory_is_optimal(n: int, m: int) -> None:
    env = CatchEnv(size=n, visible_frames=m)
    assert catch_rate(env, lambda: RememberingCatcher(n)) == 1.0  # return +1 on every column
    wide = CatchEnv(size=n, visible_frames=m, paddle_width=3, paddle_start="random")
    returns = [run_episode(wide, RememberingCatcher(n, 3), seed=s).ret for s in range(30)]
    assert returns == [1.0] * 30


@pytest.mark.parametrize(("n", "m"), VARIANTS)
def test_blank_observations_do_not_depend_on_ball_column(n: int, m: int) -> None:
    # The premise of the bound: after M frames, two episodes whose paddles moved alike look identical.
    env = CatchEnv(size=n, visible_frames=m)
    runs = [run_episode(env, lambda _obs: 1, options={"ball_column": c}).observations for c in range(n)]
    for t in range(m, n):
        assert all(np.array_equal(runs[0][t], r[t]) for r in runs)


@pytest.mark.parametrize(("n", "m"), VARIANTS)
def test_memoryless_policies_stay_below_bound(n: int, m: int) -> None:
    env = CatchEnv(size=n, visible_frames=m)
    bound = env.memoryless_catch_rate()
    assert bound == pytest.approx((2 * m + 1) / n)
    # The best-known memoryless strategy attains the bound exactly ...
    assert catch_rate(env, lambda: ChaseThenStay(n)) == pytest.approx(bound)

    # ... and 200 random memoryless lookup-table policies never exceed it, whether they act at random
    # throughout or chase the visible ball and act at random (but consistently) once it is hidden.
    def chase_then_lookup(seed: int):
        chase, lookup = ChaseThenStay(n), LookupPolicy(3, seed)
        return lambda obs: chase(obs) if obs[: n * (n - 1)].any() else lookup(obs)

    rates = [catch_rate(env, lambda s=s: LookupPolicy(3, seed=s)) for s in range(100)]
    rates += [catch_rate(env, lambda s=s: chase_then_lookup(s)) for s in range(100)]
    assert max(rates) <= bound + 1e-12
    # Return of the bound, for the README: 2 * rate - 1.
    assert 2 * bound - 1 < 0.0 < 1.0


def test_bound_is_exact_on_a_small_screen_by_exhaustive_search() -> None:
    # N=4, M=1: 4 visible observations and 4 blank ones (paddle position), so 3^8 deterministic memoryless
    # policies. The exhaustive maximum equals the bound (2M+1)/N = 3/4.
    env = CatchEnv(size=4, visible_frames=1)
    best = 0.0
    for visible in itertools.product(range(3), repeat=4):
        for blank in itertools.product(range(3), repeat=4):

            def policy(obs: np.ndarray, visible=visible, blank=blank) -> int:
                top = obs[:12]
                return visible[int(np.argmax(top))] if top.any() else blank[int(np.argmax(obs[12:]))]

            caught = 0
            for c in range(4):
                obs, _ = env.reset(options={"ball_column": c})
                for _ in range(3):
                    obs, reward, *_ = env.step(policy(obs))
                caught += reward > 0
            best = max(best, caught / 4)
    assert best == env.memoryless_catch_rate() == 0.75


def test_full_observability_control() -> None:
    env = gym.make("fw_agents/Catch-N16-Full-v0")
    assert env.unwrapped.memoryless_catch_rate() == 1.0
    assert catch_rate(env.unwrapped, lambda: ChaseThenStay(16)) == 1.0  # no memory needed


def test_paddle_moves_and_clips() -> None:
    env = CatchEnv(size=5, visible_frames=1)
    env.reset(options={"ball_column": 0, "paddle_column": 1})
    env.step(0)
    assert env.paddle_col == 0
    env.step(0)
    assert env.paddle_col == 0  # clipped at the wall
    env.step(2)
    assert env.paddle_col == 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 2}, "size"),
        ({"visible_frames": 0}, "visible_frames"),
        ({"paddle_width": 0}, "paddle_width"),
        ({"size": 5, "paddle_width": 6}, "paddle_width"),
        ({"paddle_start": "left"}, "paddle_start"),
        ({"size": 4.5}, "size"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CatchEnv(**kwargs)


def test_bad_reset_options() -> None:
    with pytest.raises(ValueError, match="ball_column"):
        CatchEnv(size=5).reset(options={"ball_column": 5})
    with pytest.raises(ValueError, match="memoryless_catch_rate"):
        CatchEnv(paddle_start="random").memoryless_catch_rate()
