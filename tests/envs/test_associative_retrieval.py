"""Associative retrieval: sequence format, optimal return with memory, chance without."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.associative_retrieval import VOCAB, AssociativeRetrievalEnv
from tests.envs.helpers import LookupPolicy, binomial_upper, run_episode


def decode(obs: np.ndarray) -> str:
    return VOCAB[int(np.argmax(obs))] if obs.any() else ""


class Remembering:
    """Perfect memory: store each key/value pair, answer the value of the key after ``??``."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, obs: np.ndarray) -> int:
        self.seen.append(decode(obs))
        if self.seen[-3:-1] == ["?", "?"]:
            pairs = dict(zip(self.seen[0:-3:2], self.seen[1:-3:2], strict=True))
            return int(pairs[self.seen[-1]])
        return 0


@pytest.mark.parametrize("k", [4, 8])
def test_sequence_format(k: int) -> None:
    env = gym.make(f"fw_agents/AssociativeRetrieval-K{k}-v0")
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (37,), np.float32)
    assert env.action_space == gym.spaces.Discrete(10)
    episode = run_episode(env, lambda _obs: 0, seed=k)
    symbols = [decode(o) for o in episode.observations]
    assert len(episode.rewards) == 2 * k + 3 and symbols[-1] == ""  # all-zero observation after the end
    keys, values, query = symbols[0 : 2 * k : 2], symbols[1 : 2 * k : 2], symbols[2 * k + 2]
    assert all(c.isalpha() for c in keys) and len(set(keys)) == k
    assert all(c.isdigit() for c in values)
    assert symbols[2 * k : 2 * k + 2] == ["?", "?"] and query in keys
    for obs in episode.observations[:-1]:
        assert obs.dtype == np.float32 and obs.sum() == 1.0
    assert episode.rewards[:-1] == [0.0] * (2 * k + 2), "earlier actions are ignored"


@pytest.mark.parametrize("k", [1, 4, 8, 26])
def test_perfect_memory_is_optimal(k: int) -> None:
    env = AssociativeRetrievalEnv(num_pairs=k)
    episodes = [run_episode(env, Remembering(), seed=s) for s in range(50)]
    assert all(e.ret == 1.0 and e.info["is_success"] for e in episodes)


def test_memoryless_is_at_chance() -> None:
    # A memoryless policy answers from the query key alone; the queried value is uniform over 10 digits and
    # independent of the key, so any such policy is right with probability exactly 1/10. Measure it.
    env = AssociativeRetrievalEnv(num_pairs=4)
    n = 3000
    policy = LookupPolicy(10, seed=0)
    wins = sum(run_episode(env, policy, seed=s).ret for s in range(n))
    assert abs(wins / n - 0.1) < binomial_upper(0.1, n) - 0.1
    # The premise: one and the same query observation goes with many different answers.
    answers: dict[int, set[int]] = {}
    for s in range(1000):
        env.reset(seed=s)
        answers.setdefault(int(env.sequence[-1]), set()).add(env.answer)
    assert min(len(v) for v in answers.values()) >= 5


@pytest.mark.parametrize("k", [0, 27, -1])
def test_bad_num_pairs(k: int) -> None:
    with pytest.raises(ValueError, match=r"num_pairs must be in \[1, 26\]"):
        AssociativeRetrievalEnv(num_pairs=k)


def test_rejects_out_of_range_action() -> None:
    env = AssociativeRetrievalEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(10)
