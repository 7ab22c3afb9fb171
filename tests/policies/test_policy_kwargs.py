"""sb3-contrib's LSTM-policy keyword arguments beside ours: one mapping, every policy, saving and loading."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

from fw_agents import POLICY_ALIASES, RecurrentA2C, canonical_policy_kwargs
from fw_agents.policies import (
    SB3_CONTRIB_KWARG_NAMES,
    FastWeightsActorCriticPolicy,
    GRUActorCriticPolicy,
    NoMemoryActorCriticPolicy,
    sb3_contrib_policy_kwargs,
)
from tests.policies.data.make_saved_models import predictions
from tests.toy_env import CueRecallEnv

DATA = Path(__file__).with_name("data")
PPO_SMALL = dict(n_steps=16, batch_size=32, n_epochs=2, seed=0)
#: One set of options in both spellings; the fast-weights options are given so no default matters.
OURS = dict(hidden_size=8, num_layers=2, shared_memory=False, enable_critic_memory=False, net_arch=[16], dropout=0.5)
THEIRS = dict(
    lstm_hidden_size=8,
    n_lstm_layers=2,
    shared_lstm=False,
    enable_critic_lstm=False,
    net_arch=[16],
    lstm_kwargs=dict(dropout=0.5),
)
FAST_WEIGHTS = dict(decay_rate=0.9, fast_learning_rate=0.3)


def make_env(obs_kind: str = "vector", n_envs: int = 2):
    return make_vec_env(CueRecallEnv, n_envs=n_envs, seed=0, env_kwargs=dict(obs_kind=obs_kind))


def spelled(spelling: str, core_options: dict | None = None) -> dict:
    """OURS or THEIRS, plus core options in that spelling (flat, or in lstm_kwargs)."""
    if spelling == "ours":
        return {**OURS, **(core_options or {})}
    return {**THEIRS, "lstm_kwargs": {**THEIRS["lstm_kwargs"], **(core_options or {})}}


# ----------------------------------------------------------------------------------------------- the mapping
@pytest.mark.parametrize(("theirs", "ours"), sorted(SB3_CONTRIB_KWARG_NAMES.items()))
def test_each_sb3_contrib_name_maps_to_ours(theirs: str, ours: str) -> None:
    assert canonical_policy_kwargs({theirs: 3, "net_arch": [4]}) == {ours: 3, "net_arch": [4]}


def test_lstm_kwargs_become_flat_memory_options() -> None:
    assert canonical_policy_kwargs(spelled("sb3-contrib", FAST_WEIGHTS)) == spelled("ours", FAST_WEIGHTS)
    assert canonical_policy_kwargs(dict(lstm_kwargs=None, hidden_size=4)) == dict(hidden_size=4)
    assert canonical_policy_kwargs(OURS) == OURS  # canonical already: unchanged


def test_back_to_sb3_contrib_names() -> None:
    assert sb3_contrib_policy_kwargs(OURS) == THEIRS
    assert sb3_contrib_policy_kwargs(THEIRS) == THEIRS
    assert canonical_policy_kwargs(sb3_contrib_policy_kwargs(spelled("ours", FAST_WEIGHTS))) == spelled(
        "ours", FAST_WEIGHTS
    )


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        *[({ours: 1, theirs: 1}, (ours, theirs)) for theirs, ours in SB3_CONTRIB_KWARG_NAMES.items()],
        (dict(decay_rate=0.9, lstm_kwargs=dict(decay_rate=0.9)), ("decay_rate", "lstm_kwargs['decay_rate']")),
        (dict(dropout=0.1, lstm_kwargs=dict(dropout=0.1)), ("dropout", "lstm_kwargs['dropout']")),
    ],
)
def test_both_spellings_of_one_option_fail_naming_both(kwargs: dict, names: tuple[str, str]) -> None:
    for check in (canonical_policy_kwargs, sb3_contrib_policy_kwargs):
        with pytest.raises(ValueError, match="two spellings") as error:
            check(kwargs)
        assert all(name in str(error.value) for name in names), str(error.value)


@pytest.mark.parametrize(
    ("lstm_kwargs", "message"),
    [
        (3, "must be a dict"),
        (dict(net_arch=[8]), "'net_arch' is not one of them, give it as a policy argument"),
        (dict(hidden_size=8), "'hidden_size' is not one of them"),
        (dict(n_lstm_layers=2), "'n_lstm_layers' is not one of them"),
        (dict(input_size=8), "'input_size' is not one of them"),
    ],
)
def test_lstm_kwargs_holds_memory_options_only(lstm_kwargs: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        canonical_policy_kwargs(dict(lstm_kwargs=lstm_kwargs))


# ----------------------------------------------------------------------------------------------- the policies
@pytest.mark.parametrize("alias", sorted(POLICY_ALIASES))
def test_every_policy_takes_either_spelling_with_the_same_result(alias: str) -> None:
    policy_class = POLICY_ALIASES[alias]
    obs_kind = {"Mlp": "vector", "Cnn": "image", "Mul": "dict"}[alias[:3]]
    env = CueRecallEnv(obs_kind=obs_kind)
    core_options = FAST_WEIGHTS if "FastWeights" in alias else {}
    policies = []
    for spelling in ("ours", "sb3-contrib"):
        th.manual_seed(0)
        kwargs = spelled(spelling, core_options)
        policies.append(policy_class(env.observation_space, env.action_space, lambda _: 1e-3, **kwargs))
    ours, theirs = policies
    assert ours.num_layers == theirs.num_layers == 2 and ours.hidden_size == theirs.hidden_size == 8
    assert ours.lstm_critic is None and theirs.lstm_critic is None
    # One canonical set of constructor parameters, whichever spelling built the policy.
    canonical = {key: value for key, value in ours._get_constructor_parameters().items() if key != "lr_schedule"}
    assert {k: v for k, v in theirs._get_constructor_parameters().items() if k != "lr_schedule"} == canonical
    assert not any(key in canonical for key in (*SB3_CONTRIB_KWARG_NAMES, "lstm_kwargs"))
    assert canonical["dropout"] == 0.5 and all(canonical[key] == value for key, value in core_options.items())
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert th.equal(a, b), name


STACKABLE = [FastWeightsActorCriticPolicy, GRUActorCriticPolicy, NoMemoryActorCriticPolicy]


@pytest.mark.parametrize("policy_class", STACKABLE)
def test_stacked_layers_train_and_carry_every_layer_state(policy_class: type) -> None:
    kwargs = dict(n_lstm_layers=3, lstm_hidden_size=4)
    model = RecurrentPPO(policy_class, make_env(), policy_kwargs=kwargs, **PPO_SMALL)
    model.learn(32)
    core = model.policy.lstm_actor.core
    single = policy_class(model.observation_space, model.action_space, lambda _: 1e-3, **dict(kwargs, n_lstm_layers=1))
    one_layer = single.lstm_actor.core.state_size
    assert core.state_size == 3 * one_layer  # D grows; the layout still reports one layer of two slots
    assert model.policy.lstm_actor.num_layers == 1
    assert model.policy.lstm_actor.hidden_size == (3 * one_layer + 1) // 2
    _, state = predictions(model.predict, steps=3)
    assert state.shape == (1, 2, model.policy.lstm_actor.hidden_size)


def test_both_spellings_at_construction_fail() -> None:
    kwargs = dict(hidden_size=8, lstm_hidden_size=8)
    with pytest.raises(ValueError, match="'hidden_size' and 'lstm_hidden_size'"):
        RecurrentPPO(FastWeightsActorCriticPolicy, make_env(), policy_kwargs=kwargs, **PPO_SMALL)
    with pytest.raises(ValueError, match="'hidden_size' and 'lstm_hidden_size'"):
        RecurrentA2C(FastWeightsActorCriticPolicy, make_env(), policy_kwargs=kwargs)
    with pytest.raises(ValueError, match=re.escape("'decay_rate' and lstm_kwargs['decay_rate']")):
        FastWeightsActorCriticPolicy(
            *(lambda env: (env.observation_space, env.action_space))(CueRecallEnv()),
            lambda _: 1e-3,
            decay_rate=0.9,
            lstm_kwargs=dict(decay_rate=0.8),
        )


@pytest.mark.parametrize(
    "kwargs", [dict(shared_lstm=True, enable_critic_lstm=True), dict(shared_lstm=True, enable_critic_lstm=False)]
)
def test_rejected_combinations_raise_what_sb3_contrib_raises_too(kwargs: dict) -> None:
    """sb3-contrib asserts on these; ours is a ValueError that is an AssertionError as well."""
    if not kwargs["enable_critic_lstm"]:
        kwargs = dict(kwargs, share_features_extractor=False)
    for expected in (ValueError, AssertionError):
        with pytest.raises(expected, match=r"shared_memory \(shared_lstm\)=True needs"):
            RecurrentPPO(FastWeightsActorCriticPolicy, make_env(), policy_kwargs=kwargs, **PPO_SMALL)


def test_torch_only_lstm_options_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"\['bidirectional'\] are torch.nn.LSTM options"):
        RecurrentPPO(GRUActorCriticPolicy, make_env(), policy_kwargs=dict(lstm_kwargs=dict(bidirectional=True)))


def test_recurrent_a2c_translates_for_sb3_contrib_lstm_policies() -> None:
    model = RecurrentA2C("MlpLstmPolicy", make_env(), policy_kwargs=dict(OURS, num_layers=1, dropout=0.0))
    assert model.policy.lstm_actor.hidden_size == 8 and model.policy.lstm_critic is None
    assert "lstm_hidden_size" in model.policy_kwargs and "hidden_size" not in model.policy_kwargs


# ----------------------------------------------------------------------------------------------- saving, loading
@pytest.mark.parametrize("spelling", ["ours", "sb3-contrib"])
def test_model_and_policy_save_load_round_trip_either_spelling(spelling: str, tmp_path: Path) -> None:
    kwargs = spelled(spelling, FAST_WEIGHTS)
    model = RecurrentPPO(FastWeightsActorCriticPolicy, make_env(), policy_kwargs=kwargs, **PPO_SMALL).learn(32)
    expected = predictions(model.predict)
    model.save(tmp_path / "model.zip")
    model.policy.save(tmp_path / "policy.pt")
    loaded_model = RecurrentPPO.load(tmp_path / "model.zip")
    loaded_policy = FastWeightsActorCriticPolicy.load(tmp_path / "policy.pt")
    saved = {k: v for k, v in model.policy._get_constructor_parameters().items() if k != "lr_schedule"}
    for loaded in (loaded_model.policy, loaded_policy):
        assert {k: v for k, v in loaded._get_constructor_parameters().items() if k != "lr_schedule"} == saved
        assert loaded.num_layers == 2 and saved["decay_rate"] == 0.9
        for got, want in zip(predictions(loaded.predict), expected, strict=True):
            np.testing.assert_array_equal(got, want)

    a2c = RecurrentA2C(FastWeightsActorCriticPolicy, make_env(), n_steps=4, policy_kwargs=kwargs).learn(16)
    a2c.save(tmp_path / "a2c.zip")
    loaded_a2c = RecurrentA2C.load(tmp_path / "a2c.zip")
    for got, want in zip(predictions(loaded_a2c.predict), predictions(a2c.predict), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("name", "load"),
    [
        ("fw_ppo", lambda path: RecurrentPPO.load(path)),
        ("gru2_ppo", lambda path: RecurrentPPO.load(path)),
        ("fw_a2c", lambda path: RecurrentA2C.load(path)),
        ("fw_policy", lambda path: FastWeightsActorCriticPolicy.load(path)),
    ],
)
def test_models_saved_before_sb3_contrib_names_still_load(name: str, load) -> None:
    """Files written by fw-agents before this change (see data/make_saved_models.py) predict as they did."""
    expected = np.load(DATA / "expected.npz")
    loaded = load(DATA / (f"{name}.pt" if name.endswith("policy") else f"{name}.sb3"))
    actions, state = predictions(loaded.predict)
    np.testing.assert_array_equal(actions, expected[f"{name}_actions"])
    np.testing.assert_allclose(state, expected[f"{name}_state"], rtol=0, atol=1e-6)
    policy = getattr(loaded, "policy", loaded)
    if name == "gru2_ppo":  # num_layers was the GRU core's own option then; now the policy's, same layout
        assert policy.num_layers == 2 and policy.lstm_actor.core.rnn.num_layers == 2
