"""Baseline cores with the fast-weights core's interface: LSTM, GRU (torch.nn) and no memory at all.

Comparisons between memories then change only the core: same policy, same heads, same algorithm.
"""

from __future__ import annotations

from typing import Any

import torch as th
import torch.nn.functional as F
from torch import nn

from fw_agents.memory.base import MemoryCore, check_number, check_positive_int, reset_state
from fw_agents.memory.gru_sequence import gru_sequence


class TorchRNNCore(MemoryCore):
    """A ``torch.nn.LSTM`` or ``torch.nn.GRU`` behind the packed-state interface.

    Packed state: ``(B, n_parts · num_layers · H)``, the LSTM's ``(h, c)`` or the GRU's ``h`` laid out
    part by part, layer by layer.

    Resets are handled by cutting the sequence at every step where some environment starts an episode
    and running one fused ``torch.nn`` call per piece, so a batch without resets is a single call.

    ``num_layers`` and ``dropout`` are torch's own (it stacks the layers itself), so :meth:`build` hands them
    over instead of stacking cores.
    """

    rnn_class: type[nn.LSTM] | type[nn.GRU]
    n_parts: int

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__(input_size, hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        # torch checks the range itself, but lets NaN through and raises TypeError for a string.
        dropout = check_number("dropout", dropout, low=0.0, high=1.0, allowed="a number in [0, 1]")
        self.rnn = self.rnn_class(input_size, hidden_size, num_layers=num_layers, dropout=dropout)
        self.state_size = self.n_parts * num_layers * hidden_size

    @classmethod
    def build(
        cls, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0, **options: Any
    ) -> MemoryCore:
        """One core with torch's own ``num_layers`` and ``dropout`` (same layout and parameter names as a
        core made directly, so models saved before :meth:`build` existed load)."""
        return cls(input_size, hidden_size, num_layers=num_layers, dropout=dropout, **options)

    def _unpack(self, state: th.Tensor) -> tuple[th.Tensor, ...]:
        """``(B, state_size)`` -> ``n_parts`` tensors ``(num_layers, B, H)``, as torch.nn wants them."""
        parts = state.view(state.shape[0], self.n_parts, self.num_layers, self.hidden_size)
        return tuple(parts[:, i].transpose(0, 1).contiguous() for i in range(self.n_parts))

    def _pack(self, parts: tuple[th.Tensor, ...]) -> th.Tensor:
        return th.stack([p.transpose(0, 1) for p in parts], dim=1).reshape(parts[0].shape[1], -1)

    def forward(self, inputs: th.Tensor, state: th.Tensor, episode_starts: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``inputs`` ``(T, B, F)``, ``state`` ``(B, state_size)``, ``episode_starts`` ``(T, B)``
        -> outputs ``(T, B, H)``, packed state ``(B, state_size)``."""
        self.check_shapes(inputs, state, episode_starts)
        resets = {t for t, any_start in enumerate(episode_starts.any(dim=1).tolist()) if any_start}
        cuts = sorted({0, *resets, inputs.shape[0]})
        outputs = []
        for begin, end in zip(cuts[:-1], cuts[1:], strict=True):
            if begin in resets:  # (most rollout steps start no episode: no select to make)
                state = reset_state(state, episode_starts[begin])  # a select: a NaN left by the last episode goes
            out, state = self._run(inputs[begin:end], state)
            outputs.append(out)
        return (outputs[0] if len(outputs) == 1 else th.cat(outputs)), state

    def _run(self, inputs: th.Tensor, state: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """One piece without resets: ``inputs`` ``(T, B, F)``, packed ``state`` ``(B, state_size)`` -> outputs
        ``(T, B, H)``, packed state after it."""
        rnn_state = self._unpack(state)
        out, rnn_state = self.rnn(inputs, rnn_state if self.n_parts == 2 else rnn_state[0])
        return out, self._pack(rnn_state if self.n_parts == 2 else (rnn_state,))


class LSTMCore(TorchRNNCore):
    """``torch.nn.LSTM`` core; packed state ``[h, c]``."""

    rnn_class = nn.LSTM
    n_parts = 2


class GRUCore(TorchRNNCore):
    """``torch.nn.GRU`` core; packed state ``[h]``.

    Where a gradient is needed on the CPU, each layer runs as :func:`~fw_agents.memory.gru_sequence.gru_sequence`:
    the same outputs, gradients equal up to rounding, in less time and memory than autograd's replay of
    ``torch.nn.GRU`` (which has no fused CPU kernel for training, as the LSTM has). Rollouts (no gradient) call torch's
    GRU directly, other devices through the module.
    """

    rnn_class = nn.GRU
    n_parts = 1

    def _run(self, inputs: th.Tensor, state: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        if inputs.device.type != "cpu":
            return super()._run(inputs, state)
        rnn, layer_states = self.rnn, state.view(state.shape[0], self.num_layers, self.hidden_size)
        if not th.is_grad_enabled():
            # torch.nn.GRU's own call without its module's argument checks, a quarter of a rollout step's core time.
            weights = [weight for layer in rnn.all_weights for weight in layer]
            h0 = layer_states.transpose(0, 1).contiguous()
            out, h = th.gru(inputs, h0, weights, True, self.num_layers, rnn.dropout, self.training, False, False)
            return out, h.transpose(0, 1).reshape(state.shape)
        # Layer by layer, as torch.nn.GRU runs them on the CPU (dropout between layers while training, the same call).
        outputs, last = inputs, []
        for layer, (weights, h0) in enumerate(zip(rnn.all_weights, layer_states.unbind(1), strict=True)):
            if layer > 0:
                outputs = F.dropout(outputs, rnn.dropout, self.training)
            outputs, h = gru_sequence(outputs, h0, *weights)  # weights: [w_ih, w_hh, b_ih, b_hh], torch's order
            last.append(h)
        return outputs, th.stack(last, dim=1).view(state.shape)


class NoMemoryCore(MemoryCore):
    """The memoryless baseline: ``tanh(Linear(x))`` at each step, an empty state (``state_size = 0``)."""

    state_size = 0
    resets_are_free = True

    def __init__(self, input_size: int, hidden_size: int = 128) -> None:
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size, hidden_size)

    def forward(self, inputs: th.Tensor, state: th.Tensor, episode_starts: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``inputs`` ``(T, B, F)`` -> ``(T, B, H)``; the empty state passes through."""
        self.check_shapes(inputs, state, episode_starts)
        return th.tanh(self.linear(inputs)), state
