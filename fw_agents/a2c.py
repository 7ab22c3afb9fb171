"""Recurrent A2C: SB3's A2C for policies with memory (LSTM, GRU, fast weights).

One update per rollout, exactly like SB3's A2C, but the ``(n_steps, n_envs)`` rollout is replayed as
``n_envs`` sequences of length ``n_steps`` (truncated backprop through the whole rollout), each starting
from the memory state its env had when the rollout began. The policy resets the memory wherever an
episode starts inside a sequence, so no sequence is cut or padded. Only that start-of-rollout state
is stored, not one state per step as in sb3-contrib's RecurrentPPO: ``4 · n_layers · n_envs · size``
floats per rollout, whatever ``n_steps`` (fast weights at H=128, 8 envs: about 0.5 MB instead of
RecurrentPPO's ~70 MB at n_steps=128).

Works with any subclass of sb3-contrib's ``RecurrentActorCriticPolicy`` (``MlpLstmPolicy``, ...,
and fw-agents' own policies), which share one state protocol: ``RNNStates(pi=(t0, t1), vf=(t0, t1))``,
each tensor ``(n_layers, batch, size)``.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import (
    RecurrentDictRolloutBufferSamples,
    RecurrentRolloutBufferSamples,
    RNNStates,
)
from sb3_contrib.ppo_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from fw_agents.nonfinite import NonFiniteError
from fw_agents.policies import RecurrentMemoryActorCriticPolicy, policy_kwargs_for_class
from fw_agents.predict_guard import StatelessPredictGuard, check_predict_batch
from fw_agents.registry import POLICY_ALIASES

SelfRecurrentA2C = TypeVar("SelfRecurrentA2C", bound="RecurrentA2C")


def _clone_states(states: RNNStates) -> RNNStates:
    return RNNStates(tuple(t.clone() for t in states.pi), tuple(t.clone() for t in states.vf))


class _StartStateMixin:
    """Adds to an SB3 rollout buffer the memory state at the start of the rollout and an in-order,
    env-major read-out of the whole rollout (SB3's ``get()`` shuffles, which would break sequences)."""

    start_states: RNNStates | None = None

    def set_start_states(self, states: RNNStates) -> None:
        """Keep a copy of the memory state before step 0: ``(n_layers, n_envs, size)`` per tensor."""
        self.start_states = _clone_states(states)

    def sequences(self) -> RecurrentRolloutBufferSamples | RecurrentDictRolloutBufferSamples:
        """The whole rollout as ``n_envs`` sequences of ``n_steps``, flattened env-major.

        Row ``e * n_steps + t`` holds env ``e`` at step ``t`` (the layout sb3-contrib's
        ``_process_sequence`` reshapes to ``(n_seq, T, ...)``). Shapes, with ``N = n_envs * n_steps``:
        observations ``(N, *obs_shape)`` (or a dict of them), actions ``(N, action_dim)`` float32,
        scalars ``(N,)``; ``lstm_states`` is the start-of-rollout state; ``mask`` is all ones (no padding).
        """
        assert self.full and self.start_states is not None, "sequences() needs a full rollout and its start state"

        def env_major(array: np.ndarray) -> th.Tensor:
            # swap_and_flatten: (n_steps, n_envs, ...) -> (n_envs * n_steps, ...), env-major; copies
            return self.to_torch(self.swap_and_flatten(array))

        scalar = lambda array: env_major(array).flatten()  # noqa: E731
        if isinstance(self.observations, dict):
            observations: Any = {key: env_major(obs) for key, obs in self.observations.items()}
            samples_class: Any = RecurrentDictRolloutBufferSamples
        else:
            observations = env_major(self.observations)
            samples_class = RecurrentRolloutBufferSamples
        advantages = scalar(self.advantages)
        return samples_class(
            observations=observations,
            actions=env_major(self.actions.astype(np.float32, copy=False)),
            old_values=scalar(self.values),
            old_log_prob=scalar(self.log_probs),
            advantages=advantages,
            returns=scalar(self.returns),
            lstm_states=self.start_states,
            episode_starts=scalar(self.episode_starts),
            mask=th.ones_like(advantages),
        )


class RecurrentA2CRolloutBuffer(_StartStateMixin, RolloutBuffer):
    """SB3's RolloutBuffer plus the start-of-rollout memory state (see :meth:`sequences`)."""


class RecurrentA2CDictRolloutBuffer(_StartStateMixin, DictRolloutBuffer):
    """SB3's DictRolloutBuffer plus the start-of-rollout memory state (see :meth:`sequences`)."""


def _named_observations(observations: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"observation": array}``, or ``{"observation['key']": array}`` per key of a dict observation."""
    if isinstance(observations, dict):
        return {f"observation[{key!r}]": value for key, value in observations.items()}
    return {"observation": observations}


def _check_finite(arrays: dict[str, np.ndarray], where: str) -> None:
    """NonFiniteError (a ValueError) naming the first non-finite entry of ``arrays`` (each ``(n_steps, n_envs,
    ...)``): its source, env and step, and how to find what produces it. Integer arrays cannot hold a NaN and are
    skipped."""
    for source, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating):
            continue
        finite = np.isfinite(array.reshape(array.shape[0], array.shape[1], -1)).all(axis=-1)  # (n_steps, n_envs)
        if not finite.all():
            step, env = np.argwhere(~finite)[0]
            at = f"env {env}, step {step} of this rollout" if array.shape[0] > 1 else f"env {env}"
            raise NonFiniteError(
                f"RecurrentA2C: a non-finite {source} {where} ({at}); training on it would make every parameter "
                "NaN, so no parameter was updated with it. Wrap the env in "
                "stable_baselines3.common.vec_env.VecCheckNan(env, raise_exception=True) to find the step that "
                "produces it, and fix the env (or its reward/observation scaling)."
            )


def _masked_mean(x: th.Tensor, mask: th.Tensor) -> th.Tensor:
    return x[mask].mean()


class RecurrentA2C(OnPolicyAlgorithm):
    """Advantage Actor Critic (A2C) for recurrent policies, with SB3 A2C's defaults.

    :param policy: a ``RecurrentActorCriticPolicy`` subclass or an alias (``"MlpLstmPolicy"``, ...)
    :param env: the environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate, or a function of the remaining progress (1 to 0)
    :param n_steps: steps per env per update; also the length of the backprop-through-time window
    :param gamma: discount factor
    :param gae_lambda: GAE lambda (1.0: classic n-step advantage)
    :param ent_coef: entropy coefficient
    :param vf_coef: value-loss coefficient
    :param max_grad_norm: gradient clipping norm
    :param rms_prop_eps: RMSprop epsilon
    :param use_rms_prop: RMSprop (alpha 0.99, as SB3 A2C) rather than the policy's default optimizer (Adam)
    :param use_sde: generalized State Dependent Exploration (Box actions)
    :param sde_sample_freq: resample gSDE noise every n steps (-1: once per rollout)
    :param normalize_advantage: normalize advantages over the batch (off in the original A2C)
    :param stats_window_size: episodes averaged by the rollout/* logs
    :param tensorboard_log: tensorboard log folder (None: no tensorboard)
    :param policy_kwargs: keyword arguments for the policy, in fw-agents' names or sb3-contrib's
        (``hidden_size`` or ``lstm_hidden_size``, ...): translated for the policy class, see
        :func:`fw_agents.policies.policy_kwargs_for_class`
    :param verbose: 0 silent, 1 info, 2 debug
    :param seed: seed for the pseudo random generators
    :param device: torch device ("auto": GPU if available; "cuda" without one is a ``ValueError``)
    :param _init_setup_model: whether to build the network at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
        "MultiInputLstmPolicy": MultiInputLstmPolicy,
        **POLICY_ALIASES,  # the built-in memories': "MlpFastWeightsPolicy", "MlpGruPolicy", "MlpNoMemoryPolicy", ...
    }
    policy: RecurrentActorCriticPolicy
    rollout_buffer: RecurrentA2CRolloutBuffer | RecurrentA2CDictRolloutBuffer

    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 7e-4,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rms_prop_eps: float = 1e-5,
        use_rms_prop: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        normalize_advantage: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if str(device).startswith("cuda") and not th.cuda.is_available():  # SB3 would fall back to the CPU silently
            raise ValueError(f"device {str(device)!r}: torch sees no CUDA GPU here; use 'cpu' or 'auto'")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            # A copy: SB3 keeps the caller's dict and the RMSprop default below would leak into it.
            policy_kwargs=dict(policy_kwargs or {}),
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        # Either spelling, for any recurrent policy: ours get fw-agents' names, sb3-contrib's LSTM policies theirs
        # (a model saved before this also loads: its kwargs were in the names its policy takes).
        self.policy_kwargs = policy_kwargs_for_class(self.policy_class, self.policy_kwargs)
        self.normalize_advantage = normalize_advantage
        # Live memory state of the training envs, carried across rollouts (never saved).
        self._last_lstm_states: RNNStates | None = None
        self._predict_guard = StatelessPredictGuard()

        # RMSprop as in the original A2C (and SB3's use_rms_prop), unless the user chose an optimizer.
        if use_rms_prop and "optimizer_class" not in self.policy_kwargs:
            self.policy_kwargs["optimizer_class"] = th.optim.RMSprop
            self.policy_kwargs["optimizer_kwargs"] = dict(alpha=0.99, eps=rms_prop_eps, weight_decay=0)

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, RecurrentActorCriticPolicy)):
            raise ValueError(f"RecurrentA2C needs a RecurrentActorCriticPolicy subclass, got {self.policy_class}")
        self.rollout_buffer_class = (
            RecurrentA2CDictRolloutBuffer
            if isinstance(self.observation_space, spaces.Dict)
            else RecurrentA2CRolloutBuffer
        )
        super()._setup_model()  # lr schedule, seeding, buffer, policy (in SB3's order, for reproducibility)
        self._last_lstm_states = self._zero_states(self.n_envs)

    def _zero_states(self, n_envs: int) -> RNNStates:
        """Zero memory for ``n_envs`` envs; each tensor ``(n_layers, n_envs, size)``.

        Sized from ``policy.lstm_actor`` like RecurrentPPO; the critic's pair is always there (the
        policy passes the actor's pair through when the critic has no memory of its own).
        """
        memory = self.policy.lstm_actor
        shape = (memory.num_layers, n_envs, memory.hidden_size)
        zeros = lambda: th.zeros(shape, device=self.device)  # noqa: E731
        return RNNStates((zeros(), zeros()), (zeros(), zeros()))

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        """Map policy actions to the env's Box bounds (unsquash or clip), as SB3's collect_rollouts."""
        if not isinstance(self.action_space, spaces.Box):
            return actions
        if self.policy.squash_output:
            return self.policy.unscale_action(actions)
        return np.clip(actions, self.action_space.low, self.action_space.high)

    def _bootstrap_truncated(
        self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict], states: RNNStates
    ) -> None:
        """Add ``gamma * V(terminal obs)`` to the reward of envs cut by a time limit (SB3 issue #633).

        The terminal observation continues the episode, so it is valued from that env's critic memory
        after this step (``states.vf`` sliced on the env axis) with no reset, as RecurrentPPO does.
        """
        for idx, done in enumerate(dones):
            info = infos[idx]
            if done and info.get("terminal_observation") is not None and info.get("TimeLimit.truncated", False):
                terminal_obs = self.policy.obs_to_tensor(info["terminal_observation"])[0]
                vf_state = tuple(t[:, idx : idx + 1].contiguous() for t in states.vf)
                no_reset = th.zeros(1, device=self.device)
                with th.no_grad():
                    terminal_value = self.policy.predict_values(terminal_obs, vf_state, no_reset)  # type: ignore[arg-type]
                rewards[idx] += self.gamma * terminal_value.item()

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Run the policy ``n_rollout_steps`` steps in every env, threading the memory state, and fill
        ``rollout_buffer`` (plus its start-of-rollout memory state). Returns False if a callback stopped it."""
        assert isinstance(rollout_buffer, _StartStateMixin), f"{rollout_buffer} cannot hold a memory state"
        assert self._last_obs is not None and self._last_lstm_states is not None, "No previous observation"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        # Training replays the rollout from here, so this is the only memory state we store.
        rollout_buffer.set_start_states(self._last_lstm_states)
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()

        states = self._last_lstm_states
        for n_steps in range(n_rollout_steps):
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)

            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                episode_starts = th.as_tensor(self._last_episode_starts, dtype=th.float32, device=self.device)
                actions, values, log_probs, states = self.policy(obs_tensor, states, episode_starts)
            actions = actions.cpu().numpy()

            new_obs, rewards, dones, infos = env.step(self._env_actions(actions))
            self.num_timesteps += env.num_envs
            # Observations are checked as they arrive (n_envs values: cheap), as the next step feeds them to the
            # policy, where a NaN fails inside torch.distributions with a message that names no source.
            _check_finite(
                {name: obs[None] for name, obs in _named_observations(new_obs).items()},  # type: ignore[arg-type]
                f"from env.step at timestep {self.num_timesteps}",
            )

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)

            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)
            self._bootstrap_truncated(rewards, dones, infos, states)
            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            self._last_lstm_states = states

        with th.no_grad():
            # Value of the observation after the rollout, from the memory at that point.
            episode_starts = th.as_tensor(dones, dtype=th.float32, device=self.device)
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device), states.vf, episode_starts)  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)

        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def train(self) -> None:
        """One gradient step on the whole rollout, backpropagating through all ``n_steps`` of each env."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        self._check_rollout_finite()
        data = self.rollout_buffer.sequences()
        actions = data.actions
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()  # (N, 1) float -> (N,) long, as SB3's A2C

        values, log_prob, entropy = self.policy.evaluate_actions(
            data.observations,  # type: ignore[arg-type]
            actions,
            data.lstm_states,
            data.episode_starts,
        )
        values = values.flatten()
        # No row is padding here; the mask keeps every mean right if padded sequences are ever added.
        mask = data.mask > 0.5

        advantages = data.advantages
        if self.normalize_advantage:
            advantages = (advantages - advantages[mask].mean()) / (advantages[mask].std() + 1e-8)

        policy_loss = -_masked_mean(advantages * log_prob, mask)
        value_loss = _masked_mean((data.returns - values) ** 2, mask)  # TD(gae_lambda) target
        # No analytical entropy (e.g. squashed Gaussian): estimate it from the log-probabilities.
        entropy_loss = -_masked_mean(entropy if entropy is not None else -log_prob, mask)
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

        # One host sync (the .item() calls below make them anyway): a NaN loss would make every gradient, and
        # after the step every parameter, NaN, and learn() would still finish normally.
        if not th.isfinite(loss).item():
            raise NonFiniteError(
                f"RecurrentA2C: the loss is {loss.item()} (policy {policy_loss.item()}, value {value_loss.item()}, "
                f"entropy {entropy_loss.item()}) although the rollout's observations and rewards are finite; no "
                "parameter was updated. Check the policy's outputs and the learning rate, or wrap the env in "
                "stable_baselines3.common.vec_env.VecCheckNan(env, raise_exception=True) to find where it starts.",
                diverged=True,
            )
        self.policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self._n_updates += 1
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

    def _check_rollout_finite(self) -> None:
        """NonFiniteError naming the first non-finite reward or observation of the rollout (its env and step), before
        any of it reaches a gradient. numpy's isfinite over the buffer's arrays: cheap, once per rollout."""
        buffer = self.rollout_buffer
        _check_finite({"reward": buffer.rewards, **_named_observations(buffer.observations)}, "in the rollout")

    def learn(
        self: SelfRecurrentA2C,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "RecurrentA2C",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRecurrentA2C:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; warns when the returned state is dropped step after step (our policies warn
        by themselves, this covers sb3-contrib's LSTM policies), and refuses a state for another number of envs."""
        if not isinstance(self.policy, RecurrentMemoryActorCriticPolicy):
            check_predict_batch(observation, state, episode_start, self.observation_space)
            self._predict_guard(state)
        return super().predict(observation, state, episode_start, deterministic)

    def _excluded_save_params(self) -> list[str]:
        # The live memory belongs to the training envs, not the model: a loaded model starts from zeros.
        return [*super()._excluded_save_params(), "_last_lstm_states", "_predict_guard"]
