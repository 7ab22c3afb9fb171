"""pytest plugin that runs sb3-contrib's own LSTM tests on fw-agents' policies (used by ``test_sb3_contrib.py``).

Loaded with ``-p tests.conformance.sb3_contrib_plugin`` in a separate pytest process, so that rebinding
sb3-contrib's aliases never leaks into fw-agents' own tests. Before sb3-contrib's ``test_lstm.py`` is imported,
``RecurrentPPO.policy_aliases``'s ``MlpLstmPolicy``, ``CnnLstmPolicy`` and ``MultiInputLstmPolicy`` are pointed at
the memory named by ``FW_AGENTS_MEMORY`` (``fast-weights`` or ``gru``); nothing else of the test file changes.
The names of the policy classes the tests actually built are written, as JSON, to ``FW_AGENTS_POLICIES_USED``,
so the caller can check that the swap took effect.
"""

from __future__ import annotations

import json
import os

import pytest
import torch as th
from sb3_contrib import RecurrentPPO

from fw_agents.policies import RecurrentMemoryActorCriticPolicy
from fw_agents.registry import POLICY_KINDS, get_memory

#: The memories swapped in (not the memoryless baseline: sb3-contrib's learning test needs a memory).
MEMORIES = ("fast-weights", "gru")
#: Memory name -> sb3-contrib alias (``MlpLstmPolicy``, …: the ``lstm`` memory's) -> our class of the same kind.
SWAPS: dict[str, dict[str, type[RecurrentMemoryActorCriticPolicy]]] = {
    memory: {get_memory("lstm").alias(kind): get_memory(memory).policy(kind) for kind in POLICY_KINDS}
    for memory in MEMORIES
}

_used: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    memory = os.environ.get("FW_AGENTS_MEMORY", "")
    if memory not in SWAPS:
        raise pytest.UsageError(f"FW_AGENTS_MEMORY must be one of {sorted(SWAPS)}, got {memory!r}")
    # A new dict, as fw_agents.register_policy_aliases does: never write into a dict a subclass may share.
    RecurrentPPO.policy_aliases = {**RecurrentPPO.policy_aliases, **SWAPS[memory]}
    # One torch thread, as fw-agents' own tests (tests/conftest.py): more make small recurrent models slower.
    th.set_num_threads(1)

    setup_model = RecurrentPPO._setup_model

    def recording_setup_model(self: RecurrentPPO) -> None:
        setup_model(self)
        _used.add(type(self.policy).__name__)

    RecurrentPPO._setup_model = recording_setup_model  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("FW_AGENTS_POLICIES_USED")
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(sorted(_used), file)
