"""Memory cores behind one interface (see :class:`MemoryCore`); no SB3 imports here."""

from fw_agents.memory.base import MemoryCore, StackedCore
from fw_agents.memory.fast_weights import FastWeightsRNN
from fw_agents.memory.rnn import GRUCore, LSTMCore, NoMemoryCore

MEMORY_CORES: dict[str, type[MemoryCore]] = {
    "fast-weights": FastWeightsRNN,
    "lstm": LSTMCore,
    "gru": GRUCore,
    "none": NoMemoryCore,
}

__all__ = ["MEMORY_CORES", "FastWeightsRNN", "GRUCore", "LSTMCore", "MemoryCore", "NoMemoryCore", "StackedCore"]
