"""The fast-weights policy's own defaults (gated, learned rates, balanced η) and models saved before them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch as th
from sb3_contrib import RecurrentPPO

import envs  # noqa: F401  (registers the fw_agents/ ids)
from fw_agents import FastWeightsActorCriticPolicy, RecurrentA2C
from fw_agents.memory.fast_weights import balanced_fast_learning_rate

ENV = "fw_agents/CartPoleNoVel-v1"


def test_policy_defaults_are_ours_and_the_paper_is_one_option_set_away() -> None:
    model = RecurrentA2C(FastWeightsActorCriticPolicy, ENV, n_steps=4, policy_kwargs={"hidden_size": 16})
    core = model.policy.memory_cores()[0]
    assert core.gated and core.learn_rates
    assert core.fast_learning_rate == pytest.approx(balanced_fast_learning_rate(16, 0.95))
    th.testing.assert_close(core.layer_norm.weight, th.full((16,), 0.3))  # an output of an LSTM's scale
    paper = {"gated": False, "learn_rates": False, "fast_learning_rate": 0.5, "layer_norm_gain": 1.0}
    model = RecurrentA2C(FastWeightsActorCriticPolicy, ENV, n_steps=4, policy_kwargs={"hidden_size": 16, **paper})
    core = model.policy.memory_cores()[0]
    assert not core.gated and not core.learn_rates and core.fast_learning_rate == 0.5
    th.testing.assert_close(core.layer_norm.weight, th.ones(16))


@pytest.mark.parametrize("algorithm", [RecurrentA2C, RecurrentPPO])
def test_model_saved_with_the_old_defaults_loads_as_it_was(
    algorithm: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fw-agents 0.1 built the paper's cell when no memory option was given; such a zip must load as that cell."""
    with monkeypatch.context() as patch:
        patch.setattr(FastWeightsActorCriticPolicy, "default_memory_kwargs", {})
        old = algorithm(FastWeightsActorCriticPolicy, ENV, n_steps=8, policy_kwargs={"hidden_size": 8}, seed=0)
        old.learn(16)
        old.save(tmp_path / "old.zip")
    loaded = algorithm.load(tmp_path / "old.zip", env=old.get_env())
    core = loaded.policy.memory_cores()[0]
    assert not core.gated and not core.learn_rates and core.fast_learning_rate == 0.5
    for (name, a), b in zip(old.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True):
        th.testing.assert_close(a, b, msg=name)
    loaded.learn(16)  # the optimizer holds the rebuilt parameters
    # and a model saved now keeps the new defaults through a round trip
    new = algorithm(FastWeightsActorCriticPolicy, ENV, n_steps=8, policy_kwargs={"hidden_size": 8}, seed=0)
    new.save(tmp_path / "new.zip")
    assert algorithm.load(tmp_path / "new.zip").policy.memory_cores()[0].gated
