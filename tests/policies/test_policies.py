"""The recurrent policies with stock sb3-contrib RecurrentPPO and SB3's tools."""

import warnings

import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import envs  # noqa: F401  (registers the fw_agents/ ids)
from fw_agents import POLICY_ALIASES, MiniGridSymbolicExtractor, register_policy_aliases
from fw_agents.policies import (
    FastWeightsActorCriticCnnPolicy,
    FastWeightsActorCriticPolicy,
    FastWeightsMultiInputActorCriticPolicy,
    GRUActorCriticCnnPolicy,
    GRUActorCriticPolicy,
    GRUMultiInputActorCriticPolicy,
    NoMemoryActorCriticPolicy,
    RecurrentMemoryActorCriticPolicy,
)
from tests.toy_env import CueRecallEnv

SMALL = dict(hidden_size=8, net_arch=[16])
PPO_SMALL = dict(n_steps=16, batch_size=32, n_epochs=2, seed=0)


def make_env(obs_kind="vector", action_kind="discrete", n_envs=2):
    return make_vec_env(
        CueRecallEnv, n_envs=n_envs, seed=0, env_kwargs=dict(obs_kind=obs_kind, action_kind=action_kind)
    )


def rollout_predictions(model, env, steps=20):
    """Actions of a predict loop that threads state and episode_start, as SB3's tests do."""
    obs = env.reset()
    state, starts = None, np.ones(env.num_envs, dtype=bool)
    actions = []
    for _ in range(steps):
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, _ = env.step(action)
        actions.append(action)
    return np.array(actions), state


@pytest.mark.parametrize(
    ("policy", "obs_kind"),
    [
        (FastWeightsActorCriticPolicy, "vector"),
        (FastWeightsActorCriticCnnPolicy, "image"),
        (FastWeightsMultiInputActorCriticPolicy, "dict"),
        (GRUActorCriticPolicy, "vector"),
        (GRUActorCriticCnnPolicy, "image"),
        (GRUMultiInputActorCriticPolicy, "dict"),
        (NoMemoryActorCriticPolicy, "vector"),
    ],
)
@pytest.mark.parametrize("action_kind", ["discrete", "box"])
def test_recurrent_ppo_trains_each_policy(policy, obs_kind, action_kind):
    env = make_env(obs_kind, action_kind)
    model = RecurrentPPO(policy, env, policy_kwargs=SMALL, **PPO_SMALL)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(64)
    assert model.num_timesteps == 64
    changed = [not th.equal(b, p) for b, p in zip(before, model.policy.parameters(), strict=True)]
    assert all(changed[:1]) and sum(changed) > len(changed) // 2
    # the cores got gradients: their weights moved
    for core in model.policy.memory_cores():
        if core.state_size:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in core.parameters())
    actions, state = rollout_predictions(model, env, steps=8)
    assert state[0].shape == (1, env.num_envs, model.policy.lstm_actor.hidden_size)
    assert all(env.action_space.contains(a) for a in actions[0])


def test_multidiscrete_actions():
    model = RecurrentPPO(
        FastWeightsActorCriticPolicy, make_env(action_kind="multidiscrete"), policy_kwargs=SMALL, **PPO_SMALL
    )
    model.learn(32)


@pytest.mark.parametrize(
    "memory_options",
    [dict(shared_memory=True, enable_critic_memory=False), dict(enable_critic_memory=False)],
)
def test_critic_memory_options(memory_options):
    model = RecurrentPPO(
        FastWeightsActorCriticPolicy, make_env(), policy_kwargs={**SMALL, **memory_options}, **PPO_SMALL
    )
    model.learn(32)
    shared = memory_options.get("shared_memory", False)
    assert model.policy.lstm_critic is None and (model.policy.critic is None) == shared


def assert_sequences_reproduce_the_rollout(model: RecurrentPPO, batch_size: int) -> None:
    """Collect one rollout, then evaluate the buffer's training sequences (stored states, resets, minibatch cuts)
    as training does: the values and log-probabilities must be those the step-by-step rollout computed."""
    n_steps, n_envs = model.n_steps, model.n_envs
    _, callback = model._setup_learn(n_steps * n_envs, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    checked = 0
    for batch in model.rollout_buffer.get(batch_size=batch_size):
        with th.no_grad():
            values, log_prob, _ = model.policy.evaluate_actions(
                batch.observations, batch.actions.long().flatten(), batch.lstm_states, batch.episode_starts
            )
        mask = batch.mask > 0.5
        th.testing.assert_close(log_prob[mask], batch.old_log_prob[mask], atol=1e-5, rtol=1e-5)
        th.testing.assert_close(values.flatten()[mask], batch.old_values[mask], atol=1e-5, rtol=1e-5)
        checked += int(mask.sum())
    assert checked == n_steps * n_envs


def test_training_sequences_reproduce_the_rollout_log_probs():
    """Stored states + whole-sequence evaluation give back exactly what the step-by-step rollout computed."""
    model = RecurrentPPO(
        FastWeightsActorCriticPolicy, make_env(n_envs=3), policy_kwargs=SMALL, n_steps=24, batch_size=24, seed=0
    )
    assert_sequences_reproduce_the_rollout(model, batch_size=24)


@pytest.mark.parametrize(
    "policy", [FastWeightsMultiInputActorCriticPolicy, GRUMultiInputActorCriticPolicy, "MultiInputLstmPolicy"]
)
def test_minigrid_dict_sequences_reproduce_the_rollout(policy):
    """A batch↔sequence reshape bug on Dict observations gives exactly a random agent on MiniGrid's memory task:
    the training sequences of MemoryS7's Dict observations (symbolic image + direction) must reproduce the
    rollout, with episodes ending inside the rollout and minibatches cutting sequences."""
    env = make_vec_env("fw_agents/MiniGrid-MemoryS7-v0", n_envs=3, seed=0, env_kwargs={"n_actions": 3})
    size = "lstm_hidden_size" if isinstance(policy, str) else "hidden_size"
    kwargs = {size: 16, "net_arch": [16], "features_extractor_class": MiniGridSymbolicExtractor}
    model = RecurrentPPO(policy, env, policy_kwargs=kwargs, n_steps=64, batch_size=48, seed=0)
    assert_sequences_reproduce_the_rollout(model, batch_size=48)
    assert model.rollout_buffer.episode_starts[1:].any()  # some episodes ended inside the rollout


def test_save_load_gives_identical_predictions(tmp_path):
    env = make_env()
    model = RecurrentPPO(
        FastWeightsActorCriticPolicy, env, policy_kwargs=dict(**SMALL, decay_rate=0.9, inner_steps=2), **PPO_SMALL
    )
    model.learn(64)
    model.save(tmp_path / "model.zip")
    loaded = RecurrentPPO.load(tmp_path / "model.zip", env=env)
    assert loaded.policy.lstm_actor.core.decay_rate == 0.9 and loaded.policy.lstm_actor.core.inner_steps == 2
    a1, s1 = rollout_predictions(model, env)
    a2, s2 = rollout_predictions(loaded, env)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(s1[0], s2[0])


def test_standalone_policy_save_keeps_memory_arguments(tmp_path):
    model = RecurrentPPO(
        FastWeightsActorCriticPolicy,
        make_env(),
        policy_kwargs=dict(**SMALL, fast_learning_rate=0.3, enable_critic_memory=False),
        **PPO_SMALL,
    )
    model.policy.save(tmp_path / "policy.pt")
    policy = FastWeightsActorCriticPolicy.load(tmp_path / "policy.pt")
    assert policy.hidden_size == 8 and policy.lstm_critic is None
    assert policy.lstm_actor.core.fast_learning_rate == 0.3


def test_same_seed_same_results():
    sums = []
    for _ in range(2):
        env = make_env()
        model = RecurrentPPO(FastWeightsActorCriticPolicy, env, policy_kwargs=SMALL, **PPO_SMALL)
        model.learn(64)
        actions, state = rollout_predictions(model, env)
        sums.append(
            (actions.sum(), float(state[0].sum()), float(sum(p.detach().sum() for p in model.policy.parameters())))
        )
    assert sums[0] == sums[1]


def test_evaluate_policy_and_predict_without_state():
    env = make_env()
    model = RecurrentPPO(FastWeightsActorCriticPolicy, env, policy_kwargs=SMALL, **PPO_SMALL)
    mean, std = evaluate_policy(model, env, n_eval_episodes=4)
    assert 0.0 <= mean <= 1.0
    action, state = model.predict(env.reset())  # a zero memory is built when no state is given
    assert state[0].shape == (1, 2, model.policy.lstm_actor.hidden_size)


def test_aliases_with_recurrent_ppo():
    register_policy_aliases()
    register_policy_aliases()  # idempotent
    for name, cls in POLICY_ALIASES.items():
        assert RecurrentPPO.policy_aliases[name] is cls
    model = RecurrentPPO("MlpFastWeightsPolicy", make_env(), policy_kwargs=SMALL, **PPO_SMALL)
    assert isinstance(model.policy, FastWeightsActorCriticPolicy)

    class Other(RecurrentPPO):
        policy_aliases = {"MlpFastWeightsPolicy": GRUActorCriticPolicy}

    with pytest.raises(ValueError, match="MlpFastWeightsPolicy"):
        register_policy_aliases(Other)


def test_buffer_memory_per_env_step():
    """RecurrentPPO stores 2 × (H + H(H+1)/2) floats per env-step for fast weights (h and triu(A), pi and vf)."""
    H = 16
    model = RecurrentPPO(FastWeightsActorCriticPolicy, make_env(), policy_kwargs=dict(hidden_size=H), **PPO_SMALL)
    buffer = model.rollout_buffer
    names = ("hidden_states_pi", "cell_states_pi", "hidden_states_vf", "cell_states_vf")
    stored = sum(getattr(buffer, n).nbytes for n in names)
    assert stored == buffer.buffer_size * buffer.n_envs * 2 * (H + H * (H + 1) // 2) * 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(decay_rate=2.0), "decay_rate"),
        (dict(lstm_hiden_size=8), "unknown keyword"),  # misspelt; sb3-contrib's names: test_policy_kwargs.py
        (dict(hidden_size=0), "hidden_size"),
        (dict(shared_memory=True), "enable_critic_memory"),
    ],
)
def test_bad_policy_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecurrentPPO(FastWeightsActorCriticPolicy, make_env(), policy_kwargs=kwargs, **PPO_SMALL)


def test_all_aliases_are_memory_policies():
    assert all(issubclass(cls, RecurrentMemoryActorCriticPolicy) for cls in POLICY_ALIASES.values())


def test_predict_warns_when_the_state_is_dropped():
    from fw_agents.predict_guard import StatelessPredictWarning

    env = make_env()
    model = RecurrentPPO(FastWeightsActorCriticPolicy, env, policy_kwargs=SMALL, **PPO_SMALL)
    obs = env.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, state = model.predict(obs)  # first step of an episode: fine
        model.predict(obs, state=state)
        evaluate_policy(model, env, n_eval_episodes=2)
    model.predict(obs)
    with pytest.warns(StatelessPredictWarning, match="state"):
        model.predict(obs)


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
@pytest.mark.parametrize("policy", [FastWeightsActorCriticPolicy, "MlpLstmPolicy"])
def test_predict_refuses_a_state_for_another_number_of_envs(algo: str, policy: type | str):
    """3 observations with the state of 1 env (or 2 episode starts) is a ValueError, not one env's memory broadcast
    to all three; ours and sb3-contrib's LSTM policy alike under RecurrentA2C."""
    from fw_agents import RecurrentA2C

    if algo == "ppo" and policy == "MlpLstmPolicy":
        pytest.skip("sb3-contrib's own policy under its own algorithm")
    env = make_env()
    algo_class = RecurrentPPO if algo == "ppo" else RecurrentA2C
    model = algo_class(policy, env, policy_kwargs={"hidden_size": 8}, n_steps=8, device="cpu")
    one = np.zeros((1, *env.observation_space.shape), np.float32)
    _, state = model.predict(one, episode_start=np.ones(1))
    three = np.zeros((3, *env.observation_space.shape), np.float32)
    with pytest.raises(ValueError, match=r"state\[0\] has shape \(1, 1, \d+\), not \(num_layers, 3, \.\.\.\)"):
        model.predict(three, state=state, episode_start=np.zeros(3))
    with pytest.raises(ValueError, match="episode_start has 2 entries for 3 observation"):
        model.predict(three, episode_start=np.zeros(2))
    _, state = model.predict(three, episode_start=np.ones(3))
    model.predict(three, state=state, episode_start=np.zeros(3))


@pytest.mark.skipif(th.cuda.is_available(), reason="needs a machine without a GPU")
def test_recurrent_a2c_refuses_cuda_without_a_gpu():
    from fw_agents import RecurrentA2C

    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        RecurrentA2C("MlpFastWeightsPolicy", make_env(), device="cuda")
