"""Learning check (marker ``slow``; CI runs it): the bar sb3-contrib sets for its own LSTM policy.

RecurrentPPO with the fast-weights policy must reach a mean evaluation return of 450 on CartPole without
velocities within 100k steps, where a memoryless policy stays near 50. Figures for the README come from
``python -m tests.learning_check`` (same code).
"""

import pytest

from tests.learning_check import RL_MEMORY_KWARGS, run


@pytest.mark.slow
def test_fast_weights_policy_solves_cartpole_without_velocities():
    result = run("fast-weights", seed=0, budget=100_000, memory_kwargs=RL_MEMORY_KWARGS)
    print(result)
    assert result.steps_to_threshold is not None, result
    assert result.best_mean_reward >= 450


@pytest.mark.slow
def test_memoryless_policy_cannot():
    result = run("mlp", seed=0, budget=50_000)
    print(result)
    assert result.steps_to_threshold is None
    assert result.best_mean_reward < 150, result
