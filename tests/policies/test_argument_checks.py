"""Bad policy arguments: a ValueError naming the argument when the policy is built, not NaN at the first step."""

import gymnasium as gym
import numpy as np
import pytest

from fw_agents.policies import FastWeightsActorCriticPolicy, GRUActorCriticPolicy

OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
ACT = gym.spaces.Discrete(2)

BAD = [
    (FastWeightsActorCriticPolicy, {"fast_learning_rate": 1e300}, "fast_learning_rate"),
    (FastWeightsActorCriticPolicy, {"fast_learning_rate": float("inf")}, "fast_learning_rate"),
    (FastWeightsActorCriticPolicy, {"decay_rate": float("nan")}, "decay_rate"),
    (FastWeightsActorCriticPolicy, {"decay_rate": "0.9"}, "decay_rate"),
    (FastWeightsActorCriticPolicy, {"layer_norm": "maybe"}, "layer_norm"),
    (FastWeightsActorCriticPolicy, {"gated": "no"}, "gated"),
    (FastWeightsActorCriticPolicy, {"recurrent_init_scale": float("nan")}, "recurrent_init_scale"),
    (FastWeightsActorCriticPolicy, {"net_arch": [0]}, "net_arch"),
    (FastWeightsActorCriticPolicy, {"net_arch": [64, -1]}, "net_arch"),
    (FastWeightsActorCriticPolicy, {"net_arch": {"pi": [8], "vf": [0]}}, "net_arch"),
    (FastWeightsActorCriticPolicy, {"net_arch": {"pi": [8], "value": [8]}}, "net_arch"),
    (FastWeightsActorCriticPolicy, {"net_arch": 64}, "net_arch"),
    (GRUActorCriticPolicy, {"dropout": float("nan"), "num_layers": 2}, "dropout"),
    (GRUActorCriticPolicy, {"net_arch": [8.5]}, "net_arch"),
]


@pytest.mark.parametrize(("policy_class", "kwargs", "name"), BAD, ids=[f"{c.__name__}-{k}" for c, k, _ in BAD])
def test_bad_policy_arguments_raise_value_error(policy_class, kwargs, name):
    with pytest.raises(ValueError, match=name):
        policy_class(OBS, ACT, lambda _: 1e-3, hidden_size=8, **kwargs)


def test_good_net_arch_still_builds():
    FastWeightsActorCriticPolicy(OBS, ACT, lambda _: 1e-3, hidden_size=8, net_arch={"pi": [8], "vf": [4, 4]})
    FastWeightsActorCriticPolicy(OBS, ACT, lambda _: 1e-3, hidden_size=8, net_arch=[])
