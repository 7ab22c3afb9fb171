"""Recurrent PPO: sb3-contrib's RecurrentPPO whose replayed sequences start from reset states, plus truncated
backprop through time (``sequence_length``).

sb3-contrib's RecurrentPPO replays each minibatch as sequences that run from an episode start (or the start of
the rollout) to the next one, padded to the longest in the minibatch, and starts each from the memory state
stored at its first step. Two things differ here.

**Resets at sequence starts.** A sequence begins at an episode start or nowhere inside one, so its only reset is
at its first step, where sb3-contrib passes a start flag with the previous episode's stored state. Here that state
is set to zero in the minibatch instead (a select, as :func:`fw_agents.memory.base.reset_state` resets) and no
flag is passed: the same function. fw-agents' cores compute the same numbers either way (their reset is that
select); sb3-contrib's LSTM policies, which step their ``nn.LSTM`` one step at a time whenever a flag is set, run
each minibatch as one ``nn.LSTM`` call instead (about twice as fast to train; the same values up to
floating-point rounding of the backward pass, not bit for bit).

**Truncated BPTT.** With ``sequence_length = L`` each episode is also cut every L steps counted from its start
(from the rollout's start for an episode that began in an earlier rollout), as MarcoMeter's
recurrent-ppo-truncated-bptt does: an episode's first L steps are always one sequence. A cut sequence starts
from the state the memory had at that step during the rollout, exactly like a sequence that starts at an
episode start inside the minibatch. Two things change:

* padding: with short episodes next to long ones, every sequence is padded to the longest in its minibatch (up
  to ``n_steps``); cutting bounds that at L, which is what makes MiniGrid's 256-step rollouts affordable;
* gradient: the loss at a step backpropagates only to the start of its chunk. What the memory holds from earlier
  steps still arrives, through the stored state, but the loss cannot change how it was written.

``sequence_length=None`` (the default) keeps sb3-contrib's whole-episode sequences.

**Padding as resets.** Where every memory core of the policy resets for free
(:attr:`fw_agents.memory.base.MemoryCore.resets_are_free`: fast weights, no memory), the padding after each sequence
is marked as episode starts. The loss masks padding out and it follows a sequence's last step, so the loss is the
same; the fast-weights op then skips most of a padded step's work. torch.nn's cores and sb3-contrib's LSTM policies,
which would cut or step their sequences at each start, get no marks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch as th
from sb3_contrib import RecurrentPPO as SB3ContribRecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecNormalize

from fw_agents.memory.base import check_positive_int
from fw_agents.policies import RecurrentMemoryActorCriticPolicy
from fw_agents.registry import POLICY_ALIASES


class _SequencesMixin:
    """Starts each replayed sequence of an sb3-contrib recurrent rollout buffer from a reset state rather than a
    start flag, and cuts each episode every ``sequence_length`` steps from its start (None: no cuts)."""

    sequence_length: int | None
    seq_start_indices: np.ndarray
    #: Mark the padding after each sequence as episode starts (set by RecurrentPPO where the policy's cores reset
    #: for free: :attr:`fw_agents.memory.base.MemoryCore.resets_are_free`).
    reset_padding: bool = False

    def _get_samples(self, batch_inds: np.ndarray, env_change: np.ndarray, env: VecNormalize | None = None) -> Any:
        if self.sequence_length is not None:
            env_change = np.maximum(env_change, self._cuts(env_change))
        samples = super()._get_samples(batch_inds, env_change, env)
        # Sequences are split at episode starts, so a start flag can only be a sequence's first step (the padded
        # flags are (n_seq * max_length,), sequence by sequence).
        starts = samples.episode_starts.reshape(len(self.seq_start_indices), -1)[:, 0] > 0  # (n_seq,)
        folded = bool(starts.any())
        if folded:

            def reset(states: tuple[th.Tensor, ...]) -> tuple[th.Tensor, ...]:  # each (n_layers, n_seq, dim)
                return tuple(th.where(starts[None, :, None], 0.0, state) for state in states)

            samples = samples._replace(
                lstm_states=RNNStates(reset(samples.lstm_states.pi), reset(samples.lstm_states.vf))
            )
        if self.reset_padding:
            # Padding follows a sequence's last step and the loss masks it out: resets there change nothing it sees.
            # They are the only flags left (a sequence's own, at its first step, is folded into its state above).
            flags = (samples.mask <= 1e-8).to(samples.episode_starts.dtype)  # the test RecurrentPPO.train masks with
        elif folded:
            flags = th.zeros_like(samples.episode_starts)
        else:
            return samples
        return samples._replace(episode_starts=flags)

    def _cuts(self, env_change: np.ndarray) -> np.ndarray:
        """1.0 at the steps where a ``sequence_length`` cut starts a sequence, in ``env_change``'s layout."""
        # env_change and episode_starts are (n_envs * n_steps, 1), env-major: row i is step (i mod n_steps) of its
        # env. Counting from each episode's start (not from the rollout's) keeps the steps an episode's first
        # decisions depend on in one sequence: on MiniGrid's memory maps the cue and the choice 6 steps later share
        # a 16-step sequence in every episode, against 62% of episodes with cuts at fixed rollout steps.
        # Marking a step as an "env change" starts a sequence there from its stored state, without resetting.
        step = np.arange(self.buffer_size)
        starts = self.episode_starts.reshape(self.n_envs, self.buffer_size).astype(bool)
        starts[:, 0] = True  # the rollout's first step starts a sequence in every env
        last_start = np.maximum.accumulate(np.where(starts, step, 0), axis=1)
        return ((step - last_start) % self.sequence_length == 0).reshape(env_change.shape).astype(env_change.dtype)


class SequenceRolloutBuffer(_SequencesMixin, RecurrentRolloutBuffer):
    """sb3-contrib's ``RecurrentRolloutBuffer``, its sequences starting from reset states, cut every
    ``sequence_length`` steps (None: not cut)."""

    def __init__(self, *args: Any, sequence_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequence_length = sequence_length


class SequenceDictRolloutBuffer(_SequencesMixin, RecurrentDictRolloutBuffer):
    """sb3-contrib's ``RecurrentDictRolloutBuffer``, its sequences starting from reset states, cut every
    ``sequence_length`` steps (None: not cut)."""

    def __init__(self, *args: Any, sequence_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequence_length = sequence_length


class RecurrentPPO(SB3ContribRecurrentPPO):
    """sb3-contrib's ``RecurrentPPO`` replaying sequences from reset states, with truncated BPTT
    (``sequence_length``) and fw-agents' policy aliases (module docstring).

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
        stock = self.rollout_buffer
        dict_buffer = isinstance(stock, RecurrentDictRolloutBuffer)
        buffer_class = SequenceDictRolloutBuffer if dict_buffer else SequenceRolloutBuffer
        self.rollout_buffer = buffer_class(
            self.n_steps,
            self.observation_space,
            self.action_space,
            stock.hidden_state_shape,
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            sequence_length=self.sequence_length,
        )
        cores = self.policy.memory_cores() if isinstance(self.policy, RecurrentMemoryActorCriticPolicy) else []
        self.rollout_buffer.reset_padding = bool(cores) and all(core.resets_are_free for core in cores)
