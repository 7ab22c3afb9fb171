"""fw_agents.RecurrentPPO: sb3-contrib's RecurrentPPO replaying sequences from reset states, with truncated BPTT
(``sequence_length``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO as SB3ContribRecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

import envs  # noqa: F401  (registers the fw_agents/ ids)
from fw_agents import MiniGridSymbolicExtractor
from fw_agents.ppo import RecurrentPPO, SequenceDictRolloutBuffer, SequenceRolloutBuffer
from fw_agents.registry import POLICY_ALIASES
from tests.policies.test_policies import SMALL, assert_sequences_reproduce_the_rollout, make_env


@pytest.mark.parametrize("policy", ["MlpFastWeightsPolicy", "MlpLstmPolicy"])
def test_truncated_sequences_reproduce_the_rollout(policy):
    """Chunks start from the state stored during the rollout, so replaying them gives back exactly the rollout's
    log-probabilities and values (5 does not divide n_steps: the last chunk of each env is shorter)."""
    kwargs = SMALL if "FastWeights" in policy else dict(lstm_hidden_size=8, net_arch=[16])
    model = RecurrentPPO(policy, make_env(n_envs=3), policy_kwargs=kwargs, n_steps=24, sequence_length=5, seed=0)
    assert isinstance(model.rollout_buffer, SequenceRolloutBuffer)
    assert_sequences_reproduce_the_rollout(model, batch_size=32)


@pytest.mark.parametrize("policy", ["MultiInputFastWeightsPolicy", "MultiInputLstmPolicy"])
def test_truncated_minigrid_dict_sequences_reproduce_the_rollout(policy):
    env = make_vec_env("fw_agents/MiniGrid-MemoryS7-v0", n_envs=3, seed=0, env_kwargs={"n_actions": 3})
    size = "lstm_hidden_size" if "Lstm" in policy else "hidden_size"
    kwargs = {size: 16, "net_arch": [16], "features_extractor_class": MiniGridSymbolicExtractor}
    model = RecurrentPPO(policy, env, policy_kwargs=kwargs, n_steps=64, batch_size=48, sequence_length=8, seed=0)
    assert isinstance(model.rollout_buffer, SequenceDictRolloutBuffer)
    assert_sequences_reproduce_the_rollout(model, batch_size=48)


@pytest.mark.parametrize("sequence_length", [None, 4])
def test_sequences_are_cut_every_sequence_length_steps_of_each_episode(sequence_length):
    n_steps, n_envs = 16, 2
    model = RecurrentPPO(
        "MlpFastWeightsPolicy",
        make_env(n_envs=n_envs),
        policy_kwargs=SMALL,
        n_steps=n_steps,
        sequence_length=sequence_length,
        seed=0,
    )
    _, callback = model._setup_learn(n_steps * n_envs, None)
    for _ in range(2):  # the second rollout starts inside episodes that began in the first
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    buffer = model.rollout_buffer
    next(buffer.get(batch_size=n_steps * n_envs))  # flattens the buffer env-major
    # Every row in rollout order, as get() would pass them without its random rotation.
    env_change = (np.arange(n_envs * n_steps) % n_steps == 0).astype(np.float32).reshape(-1, 1)
    batch = buffer._get_samples(np.arange(n_envs * n_steps), env_change)
    starts = buffer.seq_start_indices
    lengths = np.diff(np.append(starts, n_steps * n_envs))
    assert batch.mask.shape[0] == len(starts) * lengths.max()  # padded to the longest sequence
    if sequence_length is None:
        assert lengths.max() > 4  # the toy env's episodes are longer than a chunk: the checks below can fail
        return
    assert lengths.max() == sequence_length
    # Per env: a sequence starts at the rollout's first step, at each episode start, and every L steps after one.
    episode_start = buffer.episode_starts.reshape(n_envs, n_steps).astype(bool)
    expected = np.zeros((n_envs, n_steps), dtype=bool)
    for env in range(n_envs):
        since = 0
        for t in range(n_steps):
            since = 0 if (t == 0 or episode_start[env, t]) else since + 1
            expected[env, t] = since % sequence_length == 0
    every_l_rollout_steps = np.arange(n_steps)[None].repeat(n_envs, 0) % sequence_length == 0
    assert not np.array_equal(expected | episode_start, every_l_rollout_steps | episode_start)  # tells them apart
    got = np.zeros(n_envs * n_steps, dtype=bool)
    got[starts] = True
    assert np.array_equal(got.reshape(n_envs, n_steps), expected)


def test_default_buffer_is_uncut_and_sequence_length_is_saved(tmp_path):
    model = RecurrentPPO("MlpFastWeightsPolicy", make_env(), policy_kwargs=SMALL, n_steps=16, batch_size=32)
    assert type(model.rollout_buffer) is SequenceRolloutBuffer and model.rollout_buffer.sequence_length is None
    model = RecurrentPPO("MlpFastWeightsPolicy", make_env(), policy_kwargs=SMALL, n_steps=16, sequence_length=8)
    model.save(tmp_path / "model.zip")
    loaded = RecurrentPPO.load(tmp_path / "model.zip")
    assert loaded.sequence_length == 8 and isinstance(loaded.rollout_buffer, SequenceRolloutBuffer)


@pytest.mark.parametrize("policy", ["MlpFastWeightsPolicy", "MlpLstmPolicy"])
def test_sequences_start_from_reset_states_without_start_flags(policy):
    """A sequence that starts an episode starts from a zero state with no flag (sb3-contrib: the previous
    episode's stored state and a flag), and the replay still gives back the rollout's log-probabilities and
    values (a stale state would not)."""
    kwargs = SMALL if "FastWeights" in policy else dict(lstm_hidden_size=8, net_arch=[16])
    n_steps, n_envs = 24, 3
    model = RecurrentPPO(policy, make_env(n_envs=n_envs), policy_kwargs=kwargs, n_steps=n_steps, seed=0)
    assert_sequences_reproduce_the_rollout(model, batch_size=32)
    buffer = model.rollout_buffer  # flattened env-major by get()
    env_change = (np.arange(n_envs * n_steps) % n_steps == 0).astype(np.float32).reshape(-1, 1)
    batch = buffer._get_samples(np.arange(n_envs * n_steps), env_change)
    assert not batch.episode_starts.any()
    first = buffer.seq_start_indices
    new_episode = th.as_tensor((buffer.episode_starts[first].flatten() > 0) & (first % n_steps != 0))
    assert new_episode.any()  # episodes that start inside the rollout (at its start, the stored state is zero)
    stored = th.as_tensor(buffer.hidden_states_pi[first]).abs().sum(dim=(1, 2))  # (n_seq,) before the reset
    assert (stored[new_episode] > 0).all()  # so zero below is the reset, not what was stored
    state = batch.lstm_states.pi[0].abs().sum(dim=(0, 2))  # (n_seq,)
    assert (state[new_episode] == 0).all() and (state[~new_episode] == stored[~new_episode]).all()


@pytest.mark.parametrize("policy", ["MlpFastWeightsPolicy", "MlpGruPolicy"])
def test_our_cores_train_bit_for_bit_as_under_sb3_contribs_buffer(policy):
    """Their reset is a select to zero, so a zero state without a flag is the same arithmetic as sb3-contrib's
    stored state with one: the same weights after training, to the bit."""
    weights = []
    for algorithm in (SB3ContribRecurrentPPO, RecurrentPPO):
        model = algorithm(POLICY_ALIASES[policy], make_env(n_envs=3), policy_kwargs=SMALL, n_steps=24, batch_size=24,
                          n_epochs=2, seed=0)  # fmt: skip
        model.learn(24 * 3 * 3)
        weights.append(th.cat([p.detach().flatten() for p in model.policy.parameters()]))
    assert th.equal(*weights)


def padded_cartpole_model(policy: str, **kwargs) -> RecurrentPPO:
    """RecurrentPPO on CartPoleNoVel, whose episodes differ in length: its minibatches carry padding."""
    env = make_vec_env("fw_agents/CartPoleNoVel-v1", n_envs=3, seed=0)
    policy_kwargs = SMALL if "Lstm" not in policy else dict(lstm_hidden_size=8, net_arch=[16])
    return RecurrentPPO(policy, env, policy_kwargs=policy_kwargs, n_steps=32, batch_size=48, seed=0, **kwargs)


@pytest.mark.parametrize(
    ("policy", "marked"),
    [("MlpFastWeightsPolicy", True), ("MlpNoMemoryPolicy", True), ("MlpGruPolicy", False), ("MlpLstmPolicy", False)],
)
def test_padding_is_marked_as_resets_where_resets_are_free(policy, marked):
    """Fast weights skip the work of a run of resets; torch.nn's cores would cut their call at each (and
    sb3-contrib's LSTM would step one step at a time): they get no marks."""
    model = padded_cartpole_model(policy)
    assert model.rollout_buffer.reset_padding is marked
    _, callback = model._setup_learn(32 * 3, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=32)
    batch = next(model.rollout_buffer.get(batch_size=96))
    padding = batch.mask <= 1e-8
    assert padding.any()  # CartPole's episodes differ in length: the checks below can fail
    assert th.equal(batch.episode_starts > 0, padding if marked else th.zeros_like(padding))


def test_marked_padding_trains_fast_weights_bit_for_bit_as_without():
    """Padding follows each sequence's last step and the loss masks it out, and the op's skipped work adds only
    zeros: the same weights after training, to the bit."""
    weights = []
    for reset_padding in (False, True):
        model = padded_cartpole_model("MlpFastWeightsPolicy", n_epochs=2)
        model.rollout_buffer.reset_padding = reset_padding
        model.learn(32 * 3 * 3)
        weights.append(th.cat([p.detach().flatten() for p in model.policy.parameters()]))
    assert th.equal(*weights)


def test_sb3_contrib_lstm_replays_a_minibatch_in_one_call():
    """Without start flags, sb3-contrib's LSTM policy runs each minibatch through nn.LSTM once (with them: once
    per step, about half the training speed)."""
    model = RecurrentPPO("MlpLstmPolicy", make_env(n_envs=3), policy_kwargs=dict(lstm_hidden_size=8, net_arch=[16]),
                         n_steps=24, batch_size=24, n_epochs=2, seed=0)  # fmt: skip
    calls = []
    model.policy.lstm_actor.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    model.learn(24 * 3)
    training = calls[24:]  # after the rollout's 24 one-step calls
    assert len(training) == 2 * 3 and max(training) > 1  # n_epochs x minibatches, each over whole sequences


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_bad_sequence_length_is_a_value_error(bad):
    with pytest.raises(ValueError, match="sequence_length must be an integer >= 1"):
        RecurrentPPO("MlpLstmPolicy", make_env(), sequence_length=bad)
