"""Recurrent PPO with truncated backprop through time: sb3-contrib's RecurrentPPO plus ``sequence_length``.

sb3-contrib's RecurrentPPO replays each minibatch as sequences that run from an episode start (or the start of
the rollout) to the next one, padded to the longest in the minibatch, and starts each from the memory state
stored at its first step. With ``sequence_length = L`` each episode is also cut every L steps counted from its
start (from the rollout's start for an episode that began in an earlier rollout), as MarcoMeter's
recurrent-ppo-truncated-bptt does: an episode's first L steps are always one sequence. A cut sequence starts
from the state the memory had at that step during the rollout, exactly like a sequence that starts at an
episode start inside the minibatch. Two things change:

* padding: with short episodes next to long ones, every sequence is padded to the longest in its minibatch (up
  to ``n_steps``); cutting bounds that at L, which is what makes MiniGrid's 256-step rollouts affordable;
* gradient: the loss at a step backpropagates only to the start of its chunk. What the memory holds from earlier
  steps still arrives, through the stored state, but the loss cannot change how it was written.

``sequence_length=None`` (the default) is sb3-contrib's behaviour, bit for bit.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sb3_contrib import RecurrentPPO as SB3ContribRecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecNormalize

from fw_agents.memory.base import check_positive_int
from fw_agents.registry import POLICY_ALIASES


class _TruncatedSequencesMixin:
    """Cuts each episode of an sb3-contrib recurrent rollout buffer every ``sequence_length`` steps from its start."""

    sequence_length: int

    def _get_samples(self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None) -> Any:
        # env_change and episode_starts are (n_envs * n_steps, 1), env-major: row i is step (i mod n_steps) of its
        # env. Counting from each episode's start (not from the rollout's) keeps the steps an episode's first
        # decisions depend on in one sequence: on MiniGrid's memory maps the cue and the choice 6 steps later share
        # a 16-step sequence in every episode, against 62% of episodes with cuts at fixed rollout steps.
        # Marking a step as an "env change" starts a sequence there from its stored state, without resetting.
        step = np.arange(self.buffer_size)
        starts = self.episode_starts.reshape(self.n_envs, self.buffer_size).astype(bool)
        starts[:, 0] = True  # the rollout's first step starts a sequence in every env
        last_start = np.maximum.accumulate(np.where(starts, step, 0), axis=1)
        cuts = ((step - last_start) % self.sequence_length == 0).reshape(env_change.shape).astype(env_change.dtype)
        return super()._get_samples(batch_inds, np.maximum(env_change, cuts), env)


class TruncatedRecurrentRolloutBuffer(_TruncatedSequencesMixin, RecurrentRolloutBuffer):
    """sb3-contrib's ``RecurrentRolloutBuffer`` with sequences of at most ``sequence_length`` steps."""

    def __init__(self, *args: Any, sequence_length: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequence_length = sequence_length


class TruncatedRecurrentDictRolloutBuffer(_TruncatedSequencesMixin, RecurrentDictRolloutBuffer):
    """sb3-contrib's ``RecurrentDictRolloutBuffer`` with sequences of at most ``sequence_length`` steps."""

    def __init__(self, *args: Any, sequence_length: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequence_length = sequence_length


class RecurrentPPO(SB3ContribRecurrentPPO):
    """sb3-contrib's ``RecurrentPPO`` with truncated BPTT (``sequence_length``) and fw-agents' policy aliases.

    :param sequence_length: cut each replayed episode every this many steps from its start (>= 1); ``None``:
        sb3-contrib's whole-episode sequences. Every other argument is sb3-contrib's.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {**SB3ContribRecurrentPPO.policy_aliases, **POLICY_ALIASES}

    def __init__(self, *args: Any, sequence_length: int | None = None, **kwargs: Any) -> None:
        if sequence_length is not None:
            check_positive_int("sequence_length", sequence_length)
        self.sequence_length = sequence_length
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.sequence_length is None:
            return
        stock = self.rollout_buffer
        truncated = (
            TruncatedRecurrentDictRolloutBuffer
            if isinstance(stock, RecurrentDictRolloutBuffer)
            else TruncatedRecurrentRolloutBuffer
        )
        self.rollout_buffer = truncated(
            self.n_steps,
            self.observation_space,
            self.action_space,
            stock.hidden_state_shape,
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            sequence_length=int(self.sequence_length),
        )
