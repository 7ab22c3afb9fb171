"""The interface every memory core implements.

A core maps a sequence of feature vectors to a sequence of hidden outputs while carrying a
per-environment state. The state always travels *packed*: one float tensor ``(B, state_size)``
per batch, whatever the core keeps inside (``h`` for a GRU, ``(h, c)`` for an LSTM, ``(h, A)`` for
fast weights). One packed layout means the policy, the rollout buffers and the algorithms never need
to know which core they hold, and resetting an episode is always "multiply by zero".
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch as th
from torch import nn


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class MemoryCore(nn.Module, ABC):
    """A recurrent memory with a packed per-environment state.

    :param input_size: F, the size of each input feature vector.
    :param hidden_size: H, the size of each output vector.

    Subclasses set :attr:`state_size` (floats per environment in the packed state) and implement
    :meth:`forward`. The state for step ``t`` is reset to zero *before* step ``t`` wherever
    ``episode_starts[t]`` is 1.
    """

    state_size: int

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)

    def initial_state(self, batch_size: int, device: th.device | str | None = None) -> th.Tensor:
        """Zero state, shape ``(B, state_size)``."""
        return th.zeros(batch_size, self.state_size, device=device)

    @abstractmethod
    def forward(self, inputs: th.Tensor, state: th.Tensor, episode_starts: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Run a sequence.

        :param inputs: ``(T, B, F)`` features.
        :param state: ``(B, state_size)`` packed state before the first step.
        :param episode_starts: ``(T, B)``, 1.0 where the state is reset before that step.
        :return: outputs ``(T, B, H)`` and the packed state after the last step ``(B, state_size)``.
        """

    def step(self, x: th.Tensor, state: th.Tensor, episode_start: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """One step for rollouts: ``x`` ``(B, F)``, ``episode_start`` ``(B,)`` -> ``(B, H)``, new state."""
        out, state = self(x.unsqueeze(0), state, episode_start.reshape(1, -1))
        return out.squeeze(0), state

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, state_size={self.state_size}"


def reset_mask(episode_start: th.Tensor) -> th.Tensor:
    """``(B,)`` episode-start flags -> ``(B, 1)`` multiplier that zeroes the state of new episodes."""
    return (1.0 - episode_start.to(th.float32)).unsqueeze(-1)
