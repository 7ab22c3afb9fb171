"""Associative retrieval as an RL episode (the supervised task of Ba et al. 2016, Table 1).

K key/value pairs are shown one symbol per step (distinct letter keys a-z, digit values 0-9), then ``?``,
``?``, then a query key drawn from the K keys: ``c9k8j3f1??c`` -> answer 9. The agent acts at every step but
only the action taken while the query is on screen counts: reward 1 if it equals the queried value, else 0,
and the episode terminates. Episode length is ``2K + 3`` steps.

Observation: one-hot ``Box(0, 1, (37,), float32)`` over the vocabulary ``a..z 0..9 ?`` (indices 0-25,
26-35, 36); the observation after the final step is all zeros (nothing left to show).
Actions: ``Discrete(10)``, the digit answered.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from gymnasium import spaces

from envs.base import MemoryEnv
from envs.rendering import text_strip
from envs.validation import check_int

#: The 37 symbols in one-hot order.
VOCAB: tuple[str, ...] = (*string.ascii_lowercase, *string.digits, "?")
N_LETTERS, N_DIGITS = 26, 10
QUESTION = VOCAB.index("?")


class AssociativeRetrievalEnv(MemoryEnv):
    """``num_pairs`` key/value pairs, ``??``, a query key; answer the query's value at the last step.

    Args:
        num_pairs: K in [1, 26] (keys are distinct letters). Default 4, the length of the paper's example;
            reproductions use 4 to 8.

    Chance: the queried value is uniform over 10 digits and independent of the query key, so a memoryless
    policy (which at the query step sees only the key) answers correctly with probability exactly 0.1.
    """

    metadata = {**MemoryEnv.metadata, "render_fps": 2}

    def __init__(self, num_pairs: int = 4, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.num_pairs = check_int("num_pairs", num_pairs, 1, N_LETTERS)
        self.observation_space = spaces.Box(0.0, 1.0, (len(VOCAB),), dtype=np.float32)
        self.action_space = spaces.Discrete(N_DIGITS)
        self.sequence = np.zeros(self.horizon, dtype=np.int64)  # symbol indices, one per step
        self.answer = 0
        self.response: int | None = None

    @property
    def horizon(self) -> int:
        """Steps per episode: 2K pair symbols, two ``?``, one query."""
        return 2 * self.num_pairs + 3

    def _reset_state(self, options: dict[str, Any]) -> None:
        k = self.num_pairs
        keys = self.np_random.choice(N_LETTERS, size=k, replace=False)
        values = self.np_random.integers(N_DIGITS, size=k)
        q = int(self.np_random.integers(k))
        self.sequence[0 : 2 * k : 2] = keys
        self.sequence[1 : 2 * k : 2] = N_LETTERS + values
        self.sequence[2 * k : 2 * k + 2] = QUESTION
        self.sequence[-1] = keys[q]
        self.answer = int(values[q])
        self.response = None

    def _step_state(self, action: int) -> tuple[float, bool, bool | None]:
        if self.t < self.horizon:  # the query is on screen only at the last step; earlier actions are ignored
            return 0.0, False, None
        self.response = action
        correct = action == self.answer
        return float(correct), True, correct

    def _observe(self) -> np.ndarray:
        obs = np.zeros(len(VOCAB), dtype=np.float32)
        if self.t < self.horizon:
            obs[self.sequence[self.t]] = 1.0
        return obs

    def _shown(self) -> list[str]:
        return [VOCAB[i] for i in self.sequence[: min(self.t + 1, self.horizon)]]

    def _render_rgb(self) -> np.ndarray:
        # Symbols shown so far (current one framed), blanks for the future, then the agent's answer if given.
        answer = "" if self.response is None else str(self.response)
        symbols = self._shown() + [" "] * (self.horizon - self.t - 1) + ["=", answer]
        return text_strip(symbols, highlight=min(self.t, self.horizon - 1))

    def _render_text(self) -> str:
        """e.g. ``c9k8j3f1??c -> 9 (answer 9)`` once answered, the symbols so far before that."""
        shown = "".join(self._shown())
        if self.response is None:
            return shown + "\n"
        return f"{shown} -> {self.response} (answer {self.answer})\n"
