"""Recurrent PPO with truncated backprop through time: sb3-contrib's RecurrentPPO plus ``sequence_length``.

sb3-contrib's RecurrentPPO replays each minibatch as sequences that run from an episode start (or the start of
the rollout) to the next one, padded to the longest in the minibatch, and starts each from the memory state
stored at its first step. With ``sequence_length = L`` the sequences are also cut every L steps of each env's
rollout; a cut sequence starts from the state the memory had at that step during the rollout, exactly like a
sequence that starts at an episode start inside the minibatch. This is truncated BPTT as in R2D2 and MarcoMeter's
recurrent-ppo-truncated-bptt (L = 8 on MiniGrid's memory tasks). Two things change:

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
    """Cuts the sequences of an sb3-contrib recurrent rollout buffer every ``sequence_length`` env-steps."""

    sequence_length: int

    def _get_samples(self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None) -> Any:
        # env_change is (n_envs * n_steps, 1), env-major: row i is step (i mod n_steps) of its env. Marking a
        # step as an "env change" starts a sequence there from its stored state, without resetting the memory.
        step = (np.arange(env_change.shape[0]) % self.buffer_size).reshape(env_change.shape)
        cuts = (step % self.sequence_length == 0).astype(env_change.dtype)
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

    :param sequence_length: cut the replayed sequences every this many env-steps (>= 1); ``None``: sb3-contrib's
        whole-episode sequences. Every other argument is sb3-contrib's.
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
