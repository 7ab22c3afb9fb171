"""The interface every memory core implements.

A core maps a sequence of feature vectors to a sequence of hidden outputs while carrying a
per-environment state. The state always travels *packed*: one float tensor ``(B, state_size)``
per batch, whatever the core keeps inside (``h`` for a GRU, ``(h, c)`` for an LSTM, ``(h, A)`` for
fast weights). One packed layout means the policy, the rollout buffers and the algorithms never need
to know which core they hold, and resetting an episode is always "select zero" (:func:`reset_state`: a select, never
a multiplication, so a NaN or inf left by one episode cannot survive into the next: 0 · NaN is NaN).

Every core also stacks (:meth:`MemoryCore.build`, :class:`StackedCore`): layer i+1 reads layer i's outputs,
and the stack's packed state is its layers' packed states one after another.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import torch as th
from torch import nn

#: Arguments of :meth:`MemoryCore.build` that are not options of one core: sizes and stacking.
BUILD_ARGUMENTS = ("input_size", "hidden_size", "num_layers", "dropout")
#: The largest finite float32: numeric options beyond it overflow as soon as they meet a float32 tensor.
FLOAT32_MAX = float(th.finfo(th.float32).max)


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_number(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    allowed: str | None = None,
) -> float:
    """``float(value)`` if it is a finite real number (not a bool, not a string) within the bounds, else a
    ValueError naming the argument and what is allowed (``allowed``, or a description made from the bounds)."""
    if allowed is None:
        lower = "" if low is None else f" {'>=' if low_inclusive else '>'} {low}"
        upper = "" if high is None else f" <= {high}"
        allowed = f"a finite number{lower}{' and' if lower and upper else ''}{upper}"
    # numbers.Real takes numpy's scalars too; bool is an int subclass but never meant as a number here.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    # Finite in float32 too: the value meets float32 parameters and states (1e300 · h hᵀ is inf there).
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name} must be {allowed} (finite in float32, |x| <= {FLOAT32_MAX:.3g}), got {value!r}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def check_bool(name: str, value: bool) -> bool:
    """``value`` if it is a bool, else a ValueError: ``bool("maybe")`` is True, so a truthiness test would
    silently turn a typo into an option switched on."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_dropout(dropout: float, num_layers: int) -> float:
    """``dropout`` if it is a probability, else a ValueError; warns, as ``torch.nn.LSTM`` does, when there is
    no second layer for it to act on."""
    dropout = check_number("dropout", dropout, low=0.0, high=1.0, allowed="a number in [0, 1]")
    if dropout > 0 and num_layers == 1:
        warnings.warn(f"dropout={dropout} acts between stacked memory layers, and num_layers=1 has none", stacklevel=3)
    return float(dropout)


class MemoryCore(nn.Module, ABC):
    """A recurrent memory with a packed per-environment state.

    :param input_size: F, the size of each input feature vector.
    :param hidden_size: H, the size of each output vector.

    Subclasses set :attr:`state_size` (floats per environment in the packed state) and implement
    :meth:`forward`. The state for step ``t`` is reset to zero *before* step ``t`` wherever
    ``episode_starts[t]`` is 1.
    """

    state_size: int
    #: Whether a reset costs no more than a step does (a select, not a cut of the sequence). Where every core of a
    #: policy says so, :class:`fw_agents.RecurrentPPO` marks the padding after each replayed sequence as resets:
    #: the same loss (padded steps come after a sequence's last one and are masked out), and such a core can skip
    #: most of a padded step's work. A core that cuts its sequence at resets (torch.nn's) says False.
    resets_are_free: bool = False

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)

    @classmethod
    def build(
        cls, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0, **options: Any
    ) -> MemoryCore:
        """``num_layers`` cores of this class, each with ``options``, stacked (a :class:`StackedCore`; one layer
        is the core itself). Like ``torch.nn.LSTM``'s ``num_layers`` and ``dropout``: every layer has
        ``hidden_size`` units, and ``dropout`` drops each layer's outputs but the last's, while training.

        :param input_size: F, the size of each input of the first layer.
        :param hidden_size: H, the size of every layer's outputs.
        :param num_layers: layers, >= 1.
        :param dropout: probability in [0, 1] of zeroing an output of a layer below the top one.
        :param options: the core's own options (see :meth:`option_names`).
        """
        check_positive_int("num_layers", num_layers)
        if num_layers == 1:
            check_dropout(dropout, num_layers)
            return cls(input_size, hidden_size, **options)
        layers = [cls(input_size if i == 0 else hidden_size, hidden_size, **options) for i in range(num_layers)]
        return StackedCore(layers, dropout=dropout)

    @classmethod
    def option_names(cls) -> list[str]:
        """The keyword options :meth:`build` takes besides sizes and ``num_layers``: ``dropout``, then the
        core's own (its constructor's arguments)."""
        own = [
            name
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and name not in BUILD_ARGUMENTS and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
        ]
        return ["dropout", *own]

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

    def check_shapes(self, inputs: th.Tensor, state: th.Tensor, episode_starts: th.Tensor) -> None:
        """ValueError unless ``inputs`` is ``(T, B, input_size)``, ``state`` ``(B, state_size)`` and ``episode_starts``
        ``(T, B)``. Shape comparisons only (no values read, no host sync): cheap enough for every env step."""
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: inputs must have shape (T, B, {self.input_size}), got {tuple(inputs.shape)}"
            )
        T, B = inputs.shape[0], inputs.shape[1]
        if tuple(state.shape) != (B, self.state_size):
            raise ValueError(
                f"{type(self).__name__}: state must have shape (B, state_size) = ({B}, {self.state_size}) for inputs "
                f"of shape {tuple(inputs.shape)}, got {tuple(state.shape)}"
            )
        if tuple(episode_starts.shape) != (T, B):
            raise ValueError(
                f"{type(self).__name__}: episode_starts must have shape (T, B) = ({T}, {B}) for inputs of shape "
                f"{tuple(inputs.shape)}, got {tuple(episode_starts.shape)}"
            )

    def step(self, x: th.Tensor, state: th.Tensor, episode_start: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """One step for rollouts: ``x`` ``(B, F)``, ``episode_start`` ``(B,)`` -> ``(B, H)``, new state."""
        out, state = self(x.unsqueeze(0), state, episode_start.reshape(1, -1))
        return out.squeeze(0), state

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, state_size={self.state_size}"


def reset_state(state: th.Tensor, episode_start: th.Tensor) -> th.Tensor:
    """``state`` ``(B, ...)`` with the rows of new episodes (``episode_start`` ``(B,)`` nonzero) set to zero.

    A select, not a multiplication by ``1 - episode_start``: a NaN or inf in a finished episode's state would
    survive ``0 · NaN = NaN`` into the next one. The gradient to a reset row is zero (never NaN) as well.
    """
    starts = episode_start.reshape(-1, *([1] * (state.dim() - 1))) != 0
    return th.where(starts, th.zeros((), dtype=state.dtype, device=state.device), state)


class StackedCore(MemoryCore):
    """Memory cores one above the other: layer i+1 reads layer i's outputs.

    :param layers: the cores, bottom first; each one's ``input_size`` is the ``hidden_size`` of the one below.
    :param dropout: probability of zeroing each output of a layer below the top one, while training (as
        ``torch.nn.LSTM``'s ``dropout``).

    Packed state: the layers' packed states one after another, ``(B, Σ state_size_i)``. Every layer gets the
    same ``episode_starts`` and resets its own state, so the stack resets as one core does.
    """

    def __init__(self, layers: Sequence[MemoryCore], dropout: float = 0.0) -> None:
        if not layers:
            raise ValueError("StackedCore needs at least one layer")
        for i, (below, above) in enumerate(pairwise(layers)):
            if above.input_size != below.hidden_size:
                raise ValueError(
                    f"layer {i + 1} takes inputs of size {above.input_size}, but layer {i} outputs {below.hidden_size}"
                )
        super().__init__(layers[0].input_size, layers[-1].hidden_size)
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        self.dropout = nn.Dropout(check_dropout(dropout, self.num_layers))
        self.layer_state_sizes = [layer.state_size for layer in layers]
        self.state_size = sum(self.layer_state_sizes)
        self.resets_are_free = all(layer.resets_are_free for layer in layers)

    def forward(self, inputs: th.Tensor, state: th.Tensor, episode_starts: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``inputs`` ``(T, B, F)``, ``state`` ``(B, state_size)``, ``episode_starts`` ``(T, B)``
        -> outputs of the top layer ``(T, B, H)``, packed state ``(B, state_size)``."""
        self.check_shapes(inputs, state, episode_starts)
        outputs = inputs
        new_states = []
        for i, (layer, layer_state) in enumerate(
            zip(self.layers, state.split(self.layer_state_sizes, dim=1), strict=True)
        ):
            if i > 0:
                outputs = self.dropout(outputs)
            outputs, layer_state = layer(outputs, layer_state, episode_starts)
            new_states.append(layer_state)
        return outputs, th.cat(new_states, dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_layers={self.num_layers}"
