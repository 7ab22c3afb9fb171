"""Tests for fw_agents.a2c.RecurrentA2C against real SB3 / sb3-contrib / gymnasium (no mocks)."""

from __future__ import annotations

import copy
import inspect
import os
import re
import zipfile
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from fw_agents.a2c import RecurrentA2C
from fw_agents.registry import POLICY_ALIASES
from tests.train.nonfinite_env import NonFiniteAt


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks gain nothing from a second intra-op thread, and on a busy CPU it stalls badly
    (measured here: 48 s instead of 1.8 s for the same 5k-step run)."""
    n_threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(n_threads)


SMALL = dict(lstm_hidden_size=16, net_arch=[16])  # sb3-contrib LSTM policies
FW_SMALL = dict(hidden_size=8, net_arch=[16])  # fw-agents policies


class CueEnv(gym.Env):
    """Memory task: a cue (0 or 1) is visible on the first step only; on the last of ``length`` steps the
    action pays 1 if it names the cue. A memoryless policy succeeds half the time.

    ``obs_kind``: "vec" ``[signal, is_first]`` float32, "image" ``(1, 36, 36)`` uint8 (big enough for NatureCNN),
    "dict" ``{"cue": (1,), "step": Discrete}``. ``action_kind``: discrete, multidiscrete, multibinary, box
    (the guess is the first component; for box, its sign).
    """

    def __init__(self, obs_kind: str = "vec", action_kind: str = "discrete", length: int = 4) -> None:
        self.length = length
        self.obs_kind, self.action_kind = obs_kind, action_kind
        self.observation_space = {
            "vec": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "image": spaces.Box(0, 255, (1, 36, 36), np.uint8),
            "dict": spaces.Dict({"cue": spaces.Box(-1.0, 1.0, (1,), np.float32), "step": spaces.Discrete(length + 1)}),
        }[obs_kind]
        self.action_space = {
            "discrete": spaces.Discrete(2),
            "multidiscrete": spaces.MultiDiscrete([2, 3]),
            "multibinary": spaces.MultiBinary(2),
            "box": spaces.Box(-1.0, 1.0, (1,), np.float32),
        }[action_kind]
        self.cue, self.t = 0, 0

    def _obs(self) -> Any:
        signal = float(2 * self.cue - 1) if self.t == 0 else 0.0
        if self.obs_kind == "vec":
            return np.array([signal, float(self.t == 0)], np.float32)
        if self.obs_kind == "image":
            return np.full((1, 36, 36), int(127 + 127 * signal), np.uint8)
        return {"cue": np.array([signal], np.float32), "step": self.t}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(2)), 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        if self.t < self.length:
            return self._obs(), 0.0, False, False, {}
        first = np.asarray(action).reshape(-1)[0]
        guess = int(first > 0) if self.action_kind == "box" else int(first)
        success = guess == self.cue
        return self._obs(), float(success), True, False, {"is_success": success}


def cue_env(obs_kind: str = "vec", action_kind: str = "discrete", n_envs: int = 2, seed: int = 0, **kw: Any):
    return make_vec_env(
        CueEnv, n_envs=n_envs, seed=seed, env_kwargs=dict(obs_kind=obs_kind, action_kind=action_kind, **kw)
    )


def params(model: RecurrentA2C) -> th.Tensor:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()


def predict_loop(model: RecurrentA2C, env, n: int = 20, deterministic: bool = True) -> np.ndarray:
    """Actions of ``n`` steps on a freshly seeded ``env``, threading ``state`` and ``episode_start``,
    followed by the final memory state (so equal outputs mean equal memories too, not just equal argmaxes)."""
    env.seed(123)
    obs = env.reset()
    state, starts = None, np.ones(env.num_envs, dtype=bool)
    actions = []
    for _ in range(n):
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        actions.append(action)
        obs, _, starts, _ = env.step(action)
    return np.concatenate([np.ravel(actions), *(np.ravel(t) for t in state)])


# ---------------------------------------------------------------------------------------------- policies
# (policy, policy_kwargs) for the policy classes RecurrentA2C must train: sb3-contrib's and fw-agents'.
LSTM_SHARED = ("MlpLstmPolicy", dict(SMALL, shared_lstm=True, enable_critic_lstm=False))
FW_SHARED = ("MlpFastWeightsPolicy", dict(FW_SMALL, shared_memory=True, enable_critic_memory=False))
POLICIES: list[tuple[str | type, dict[str, Any]]] = [
    ("MlpLstmPolicy", SMALL),
    LSTM_SHARED,
    ("MlpLstmPolicy", dict(SMALL, enable_critic_lstm=False)),  # feed-forward critic
    ("MlpLstmPolicy", dict(SMALL, n_lstm_layers=2)),
    ("MlpFastWeightsPolicy", FW_SMALL),
    FW_SHARED,
    ("MlpFastWeightsPolicy", dict(FW_SMALL, enable_critic_memory=False)),
    ("MlpFastWeightsPolicy", dict(FW_SMALL, compute_path="explicit")),
    ("MlpFastWeightsPolicy", dict(FW_SMALL, compute_path="attention")),
    ("MlpGruPolicy", FW_SMALL),
    ("MlpNoMemoryPolicy", FW_SMALL),
]


def policy_id(case: tuple[str | type, dict[str, Any]]) -> str:
    policy, kwargs = case
    name = policy if isinstance(policy, str) else policy.__name__
    extra = ",".join(f"{k}={v}" for k, v in kwargs.items() if k not in SMALL and k not in FW_SMALL)
    return f"{name}[{extra}]" if extra else name


# ------------------------------------------------------------------------------------------------ basics
def test_defaults_match_sb3_a2c() -> None:
    ours = inspect.signature(RecurrentA2C).parameters
    theirs = inspect.signature(A2C).parameters
    shared = set(ours) & set(theirs) - {"policy", "env"}
    assert {"learning_rate", "n_steps", "gae_lambda", "max_grad_norm", "rms_prop_eps", "use_rms_prop"} <= shared
    assert {name: ours[name].default for name in shared} == {name: theirs[name].default for name in shared}
    assert inspect.signature(RecurrentA2C.learn).parameters["tb_log_name"].default == "RecurrentA2C"

    model = RecurrentA2C("MlpLstmPolicy", cue_env(), policy_kwargs=SMALL, device="cpu")
    assert isinstance(model.policy.optimizer, th.optim.RMSprop)
    group = model.policy.optimizer.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"]) == (7e-4, 0.99, 1e-5)
    assert model.device == th.device("cpu")
    assert all(p.device == th.device("cpu") for p in model.policy.parameters())
    adam = RecurrentA2C("MlpLstmPolicy", cue_env(), use_rms_prop=False, policy_kwargs=SMALL)
    assert isinstance(adam.policy.optimizer, th.optim.Adam)


def test_policy_aliases_and_rejects_feedforward_policy() -> None:
    assert {"MlpLstmPolicy", "CnnLstmPolicy", "MultiInputLstmPolicy"} <= set(RecurrentA2C.policy_aliases)
    assert all(RecurrentA2C.policy_aliases[name] is policy for name, policy in POLICY_ALIASES.items())
    with pytest.raises(ValueError):
        RecurrentA2C(ActorCriticPolicy, cue_env())
    with pytest.raises(ValueError):
        RecurrentA2C("MlpPolicy", cue_env())


CNN = {"features_dim": 16}
SPACE_CASES = [  # (id, policy, env factory, RecurrentA2C kwargs)
    ("cartpole", "MlpLstmPolicy", lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0), {}),
    ("pendulum", "MlpLstmPolicy", lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0), {}),
    ("pendulum-sde", "MlpLstmPolicy", lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0), dict(use_sde=True)),
    (
        "image",
        "CnnLstmPolicy",
        lambda: cue_env("image"),
        dict(policy_kwargs=dict(SMALL, features_extractor_kwargs=CNN)),
    ),
    ("dict", "MultiInputLstmPolicy", lambda: cue_env("dict"), {}),
    ("multidiscrete", "MlpLstmPolicy", lambda: cue_env("vec", "multidiscrete"), {}),
    ("multibinary", "MlpLstmPolicy", lambda: cue_env("vec", "multibinary"), {}),
    ("box", "MlpLstmPolicy", lambda: cue_env("vec", "box"), {}),
    ("pendulum-fw", "MlpFastWeightsPolicy", lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0), {}),
    *[
        (
            f"image-{kind}",
            f"Cnn{kind}Policy",
            lambda: cue_env("image"),
            dict(policy_kwargs=dict(FW_SMALL, features_extractor_kwargs=CNN)),
        )
        for kind in ("FastWeights", "Gru", "NoMemory")
    ],
    *[
        (f"dict-{kind}", f"MultiInput{kind}Policy", lambda: cue_env("dict"), {})
        for kind in ("FastWeights", "Gru", "NoMemory")
    ],
]


@pytest.mark.parametrize("policy,make_env,kwargs", [case[1:] for case in SPACE_CASES], ids=[c[0] for c in SPACE_CASES])
def test_trains_on_each_space(policy: str, make_env, kwargs: dict) -> None:
    env = make_env()
    small = SMALL if "Lstm" in policy else FW_SMALL
    kwargs = dict(dict(policy_kwargs=small, n_steps=8, seed=0), **kwargs)
    model = RecurrentA2C(policy, env, **kwargs)
    before = params(model)
    model.learn(160)
    assert model.num_timesteps == 160 and model._n_updates == 10
    assert not th.equal(before, params(model))
    obs, state, starts = env.reset(), None, np.ones(env.num_envs, dtype=bool)
    for _ in range(6):
        actions, state = model.predict(obs, state=state, episode_start=starts)
        assert actions.shape[0] == env.num_envs and all(env.action_space.contains(a) for a in actions)
        obs, _, starts, _ = env.step(actions)


@pytest.mark.parametrize("case", POLICIES, ids=policy_id)
def test_trains_each_policy_variant(case: tuple[str | type, dict[str, Any]]) -> None:
    policy, policy_kwargs = case
    model = RecurrentA2C(policy, cue_env(n_envs=3), n_steps=6, policy_kwargs=policy_kwargs, seed=0)
    before = params(model)
    model.learn(180)
    assert not th.equal(before, params(model))
    assert np.isfinite(params(model).numpy()).all()


# ------------------------------------------------------------------------------------- training semantics
class RolloutEndCheck(BaseCallback):
    """At each rollout end (buffer full, policy not yet updated) keep a copy of the policy and buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[tuple[Any, Any]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.snapshots.append((copy.deepcopy(self.model.policy), copy.deepcopy(self.model.rollout_buffer)))


@pytest.mark.parametrize("case", [POLICIES[0], LSTM_SHARED, POLICIES[4], FW_SHARED, POLICIES[-2]], ids=policy_id)
def test_training_replays_collection_env_major(case: tuple[str | type, dict[str, Any]]) -> None:
    """Before any update, evaluate_actions on the training batch reproduces the log-probs and values
    recorded while acting, rollout start state and in-rollout resets included."""
    policy, policy_kwargs = case
    if "FastWeights" in policy_id(case):
        # The gate's chrono init starts most units slow, so a wrong layout would move the log-probs by only ~1e-4;
        # nn.Linear's init lets the check below tell the layouts apart at 1e-3, as for the other memories.
        policy_kwargs = dict(policy_kwargs, chrono_init=None)
    # 3 envs x 16 steps; episodes of 5 steps, so every sequence crosses resets and starts mid-episode.
    model = RecurrentA2C(policy, cue_env(n_envs=3, length=5), n_steps=16, policy_kwargs=policy_kwargs, seed=1)
    check = RolloutEndCheck()
    model.learn(3 * 16 * 3, callback=check)
    for policy_copy, buffer in check.snapshots[1:]:
        data = buffer.sequences()
        assert data.observations.shape == (48, 2)
        # env-major: row e * n_steps + t is env e at step t
        np.testing.assert_array_equal(data.observations[16 * 2 + 5].numpy(), buffer.observations[5, 2])
        assert data.episode_starts.sum() > 3 and data.episode_starts.view(3, 16)[:, 0].sum() < 3
        assert any(t.abs().sum() > 0 for t in data.lstm_states.pi)  # a real carried-over memory
        # one state per env for the whole rollout, not one per step
        memory = policy_copy.lstm_actor
        for t in (*data.lstm_states.pi, *data.lstm_states.vf):
            assert t.shape == (memory.num_layers, 3, memory.hidden_size)
        with th.no_grad():
            values, log_prob, _ = policy_copy.evaluate_actions(
                data.observations, data.actions.long().flatten(), data.lstm_states, data.episode_starts
            )
        th.testing.assert_close(log_prob, data.old_log_prob, atol=1e-5, rtol=1e-5)
        th.testing.assert_close(values.flatten(), data.old_values, atol=1e-5, rtol=1e-5)

        # The step-major layout (SB3's default) would not line up: the test can tell the difference.
        step_major = th.as_tensor(buffer.observations.reshape(48, 2))
        with th.no_grad():
            _, wrong, _ = policy_copy.evaluate_actions(
                step_major, data.actions.long().flatten(), data.lstm_states, data.episode_starts
            )
        assert not th.allclose(wrong, data.old_log_prob, atol=1e-3)


@pytest.mark.parametrize("case", POLICIES, ids=policy_id)
def test_losses_match_step_by_step_recomputation(case: tuple[str | type, dict[str, Any]]) -> None:
    """The logged losses equal ones recomputed by hand, one env and one step at a time from the stored
    start state, with the pre-update policy (so the batching, layout and resets are all right)."""
    policy, policy_kwargs = case
    n_envs, n_steps = 2, 7
    model = RecurrentA2C(
        policy, cue_env(n_envs=n_envs, length=3), n_steps=n_steps, ent_coef=0.01, policy_kwargs=policy_kwargs, seed=2
    )
    check = RolloutEndCheck()
    model.learn(n_envs * n_steps * 3, callback=check)
    policy_copy, buffer = check.snapshots[-1]
    start = buffer.start_states
    pg, vl, ent = [], [], []
    with th.no_grad():
        for e in range(n_envs):
            states = RNNStates(tuple(t[:, e : e + 1] for t in start.pi), tuple(t[:, e : e + 1] for t in start.vf))
            for t in range(n_steps):
                obs = th.as_tensor(buffer.observations[t, e : e + 1])
                episode_start = th.as_tensor(buffer.episode_starts[t, e : e + 1])
                dist, _ = policy_copy.get_distribution(obs, states.pi, episode_start)
                _, value, _, states = policy_copy(obs, states, episode_start)
                action = th.as_tensor(buffer.actions[t, e]).long()
                pg.append(-buffer.advantages[t, e] * dist.log_prob(action).item())
                vl.append((buffer.returns[t, e] - value.item()) ** 2)
                ent.append(-dist.entropy().item())
    logged = model.logger.name_to_value
    assert logged["train/policy_loss"] == pytest.approx(np.mean(pg), rel=1e-4, abs=1e-6)
    assert logged["train/value_loss"] == pytest.approx(np.mean(vl), rel=1e-4, abs=1e-6)
    assert logged["train/entropy_loss"] == pytest.approx(np.mean(ent), rel=1e-4, abs=1e-6)


def test_time_limit_truncation_bootstraps_with_critic_memory() -> None:
    """A time-limit cut adds gamma * V(terminal obs), valued from that env's critic memory after the step."""

    class Expect(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.expected: list[tuple[int, int, float]] = []
            self.checked = 0

        def _on_step(self) -> bool:
            loc = self.locals
            step = self.model.rollout_buffer.pos
            for idx, info in enumerate(loc["infos"]):
                if info.get("TimeLimit.truncated", False):
                    obs = th.as_tensor(info["terminal_observation"])[None]
                    vf = tuple(t[:, idx : idx + 1] for t in loc["states"].vf)
                    with th.no_grad():
                        value = self.model.policy.predict_values(obs, vf, th.zeros(1)).item()
                    self.expected.append((step, idx, float(loc["rewards"][idx]) + self.model.gamma * value))
            return True

        def _on_rollout_end(self) -> None:
            rewards = self.model.rollout_buffer.rewards
            for step, idx, reward in self.expected:
                assert rewards[step, idx] == pytest.approx(reward, rel=1e-5)
                assert reward != pytest.approx(1.0)
            self.checked += len(self.expected)
            self.expected = []

    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs=dict(max_episode_steps=3))
    model = RecurrentA2C("MlpLstmPolicy", env, n_steps=8, policy_kwargs=SMALL, seed=0)
    expect = Expect()
    model.learn(64, callback=expect)
    assert expect.checked >= 8


# ------------------------------------------------------------------------------------ SB3 user behaviour
@pytest.mark.parametrize("case", [POLICIES[0], POLICIES[4]], ids=policy_id)
def test_save_load_gives_identical_predictions(tmp_path, case: tuple[str | type, dict[str, Any]]) -> None:
    policy, policy_kwargs = case
    env = cue_env(n_envs=2)
    model = RecurrentA2C(policy, env, n_steps=6, policy_kwargs=policy_kwargs, seed=0)
    model.learn(120)
    assert model._last_lstm_states is not None and model._last_lstm_states.pi[0].abs().sum() > 0
    expected = predict_loop(model, env)
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        assert "_last_lstm_states" not in archive.read("data").decode()

    loaded = RecurrentA2C.load(tmp_path / "model.zip", device="cpu")  # env=None
    assert loaded.env is None and loaded.n_steps == 6
    np.testing.assert_array_equal(predict_loop(loaded, env), expected)
    th.testing.assert_close(params(loaded), params(model))

    loaded = RecurrentA2C.load(tmp_path / "model.zip", env=cue_env(n_envs=3))
    assert loaded._last_lstm_states.pi[0].shape == (1, 3, loaded.policy.lstm_actor.hidden_size)
    assert all(t.abs().sum() == 0 for t in (*loaded._last_lstm_states.pi, *loaded._last_lstm_states.vf))
    np.testing.assert_array_equal(predict_loop(loaded, env), expected)
    loaded.learn(36, reset_num_timesteps=False)
    assert loaded.num_timesteps == 120 + 36


@pytest.mark.parametrize("case", [POLICIES[0], POLICIES[4]], ids=policy_id)
def test_same_seed_same_results(case: tuple[str | type, dict[str, Any]]) -> None:
    policy, policy_kwargs = case

    def run() -> tuple[th.Tensor, np.ndarray, np.ndarray]:
        env = cue_env(n_envs=2, seed=3)
        model = RecurrentA2C(policy, env, n_steps=5, policy_kwargs=policy_kwargs, seed=7)
        model.learn(200)
        return params(model), predict_loop(model, env), predict_loop(model, env, deterministic=False)

    first, second = run(), run()
    assert th.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[2], second[2])


def test_logs_standard_keys_tensorboard_and_progress_bar(tmp_path) -> None:
    model = RecurrentA2C("MlpLstmPolicy", cue_env(), n_steps=8, policy_kwargs=SMALL, seed=0)
    model.set_logger(configure(str(tmp_path / "csv"), ["csv"]))
    model.learn(160, log_interval=2)
    header = open(tmp_path / "csv" / "progress.csv").readline().strip().split(",")
    for key in [
        "rollout/ep_rew_mean",
        "rollout/ep_len_mean",
        "rollout/success_rate",
        "time/fps",
        "train/learning_rate",
        "train/entropy_loss",
        "train/policy_loss",
        "train/value_loss",
        "train/explained_variance",
        "train/n_updates",
    ]:
        assert key in header, key

    model = RecurrentA2C(
        "MlpLstmPolicy", cue_env(), n_steps=8, policy_kwargs=SMALL, tensorboard_log=str(tmp_path / "tb"), seed=0
    )
    model.learn(32, progress_bar=True)
    model.learn(32, progress_bar=True)
    assert sorted(os.listdir(tmp_path / "tb")) == ["RecurrentA2C_1", "RecurrentA2C_2"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb" / "RecurrentA2C_1"))


def test_callback_can_stop_training() -> None:
    class StopAt(BaseCallback):
        def _on_step(self) -> bool:
            return self.num_timesteps < 20

    model = RecurrentA2C("MlpLstmPolicy", cue_env(n_envs=2), n_steps=8, policy_kwargs=SMALL, seed=0)
    model.learn(1000, callback=StopAt())
    assert model.num_timesteps == 20 and model._n_updates == 1


# ------------------------------------------------------------------------------------------ learning check
def mean_success(model: RecurrentA2C, n_episodes: int = 200) -> float:
    env = cue_env(n_envs=8, seed=999)
    obs, state, starts = env.reset(), None, np.ones(8, dtype=bool)
    successes: list[bool] = []
    while len(successes) < n_episodes:
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, infos = env.step(action)
        successes += [info["is_success"] for info, done in zip(infos, starts, strict=True) if done]
    return float(np.mean(successes))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["MlpLstmPolicy", "MlpFastWeightsPolicy", "MlpGruPolicy", "MlpNoMemoryPolicy"])
def test_cue_recall_needs_memory(policy: str) -> None:
    """The cue is only visible at the first step: memory policies learn to recall it nearly always,
    the memoryless one stays at chance (0.5)."""
    policy_kwargs = SMALL if "Lstm" in policy else dict(FW_SMALL, hidden_size=16)
    model = RecurrentA2C(policy, cue_env(n_envs=8), n_steps=8, ent_coef=0.01, policy_kwargs=policy_kwargs, seed=0)
    model.learn(30_000)
    if policy == "MlpNoMemoryPolicy":
        assert mean_success(model) < 0.65
    else:
        assert mean_success(model) > 0.95


@pytest.mark.slow
def test_memory_beats_memoryless_on_cartpole_without_velocities() -> None:
    """fw_agents/CartPoleNoVel-v1 (observation [x, theta]): an LSTM policy infers the velocities, a
    memoryless one of the same shape cannot. Mean training return over the last 100 episodes."""
    import envs  # noqa: F401  (registers fw_agents/CartPoleNoVel-v1)

    returns = {}
    for policy, policy_kwargs in [
        ("MlpLstmPolicy", dict(lstm_hidden_size=64, net_arch=[64])),
        ("MlpNoMemoryPolicy", dict(hidden_size=64, net_arch=[64])),
    ]:
        env = VecNormalize(make_vec_env("fw_agents/CartPoleNoVel-v1", n_envs=8, seed=0), norm_reward=False)
        model = RecurrentA2C(policy, env, n_steps=16, learning_rate=1e-3, policy_kwargs=policy_kwargs, seed=0)
        model.learn(100_000)
        returns[policy] = np.mean([info["r"] for info in model.ep_info_buffer])
    assert returns["MlpLstmPolicy"] > 150, returns
    assert returns["MlpNoMemoryPolicy"] < 100, returns


@pytest.mark.parametrize(
    ("policy", "where", "value"),
    [
        ("MlpFastWeightsPolicy", "reward", float("nan")),
        ("MlpFastWeightsPolicy", "observation", float("inf")),
        ("MlpLstmPolicy", "reward", float("-inf")),
    ],
)
def test_a_nonfinite_reward_or_observation_stops_learn_before_the_update(policy, where, value):
    """One NaN reward used to make learn() finish normally with every parameter NaN. Now learn() raises a
    ValueError naming the source and the env, and the parameters are those of the last good update."""
    # Env 1 of 2 emits the bad value in the second rollout (n_steps=5), at its step 1: the reward of the 7th
    # env step is stored with the observation of the 6th.
    at_step = 7 if where == "reward" else 6
    env = DummyVecEnv(
        [lambda: NonFiniteAt("CartPole-v1", where, 0, value)]
        + [lambda: NonFiniteAt("CartPole-v1", where, at_step, value)]
    )
    kwargs = FW_SMALL if policy == "MlpFastWeightsPolicy" else SMALL
    model = RecurrentA2C(policy, env, n_steps=5, policy_kwargs=kwargs, seed=0, device="cpu")
    # Rewards are checked once per rollout; observations as they arrive (the policy reads them next).
    in_rollout, from_step = "in the rollout (env 1, step 1 of this rollout)", "from env.step at timestep 12 (env 1)"
    at = in_rollout if where == "reward" else from_step
    with pytest.raises(ValueError, match=rf"non-finite {where} {re.escape(at)}.*VecCheckNan"):
        model.learn(40)
    assert model._n_updates == 1  # the first rollout was clean and trained on
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
