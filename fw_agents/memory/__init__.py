"""Memory cores behind one interface (see :class:`MemoryCore`); no SB3 imports here.

The table of memories by name is :data:`fw_agents.registry.MEMORY_CORES` (the registry also makes their policies).
"""

from typing import Any

from fw_agents.memory.base import MemoryCore, StackedCore
from fw_agents.memory.fast_weights import FastWeightsRNN
from fw_agents.memory.rnn import GRUCore, LSTMCore, NoMemoryCore

__all__ = ["FastWeightsRNN", "GRUCore", "LSTMCore", "MemoryCore", "NoMemoryCore", "StackedCore"]


def __getattr__(name: str) -> Any:
    """``fw_agents.memory.MEMORY_CORES``, where it used to be: the registry's (read on use, since the registry
    imports SB3 and this package does not)."""
    if name == "MEMORY_CORES":
        from fw_agents.registry import MEMORY_CORES

        return MEMORY_CORES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
