"""fw-agents: fast-weights memory (Ba et al. 2016) for Stable-Baselines3 recurrent agents."""

from fw_agents.a2c import RecurrentA2C
from fw_agents.extractors import MiniGridSymbolicExtractor
from fw_agents.memory import FastWeightsRNN, GRUCore, LSTMCore, MemoryCore, NoMemoryCore, StackedCore
from fw_agents.policies import (
    FastWeightsActorCriticCnnPolicy,
    FastWeightsActorCriticPolicy,
    FastWeightsMultiInputActorCriticPolicy,
    GRUActorCriticCnnPolicy,
    GRUActorCriticPolicy,
    GRUMultiInputActorCriticPolicy,
    NoMemoryActorCriticCnnPolicy,
    NoMemoryActorCriticPolicy,
    NoMemoryMultiInputActorCriticPolicy,
    RecurrentMemoryActorCriticPolicy,
    canonical_policy_kwargs,
)
from fw_agents.ppo import RecurrentPPO
from fw_agents.registry import (
    MEMORY_CORES,
    POLICY_ALIASES,
    get_memory,
    load_plugins,
    memory_names,
    register_memory,
    register_policy_aliases,
    registered_memory,
    unregister_memory,
)

__version__ = "0.1.0"

# Memories of other packages (entry points, group "fw_agents.memories"), after everything here is defined so that a
# plugin may import from fw_agents; our algorithms then know their aliases too.
if load_plugins():
    register_policy_aliases(RecurrentA2C, RecurrentPPO)

__all__ = [
    "MEMORY_CORES",
    "POLICY_ALIASES",
    "FastWeightsActorCriticCnnPolicy",
    "FastWeightsActorCriticPolicy",
    "FastWeightsMultiInputActorCriticPolicy",
    "FastWeightsRNN",
    "GRUActorCriticCnnPolicy",
    "GRUActorCriticPolicy",
    "GRUCore",
    "GRUMultiInputActorCriticPolicy",
    "LSTMCore",
    "MemoryCore",
    "MiniGridSymbolicExtractor",
    "NoMemoryActorCriticCnnPolicy",
    "NoMemoryActorCriticPolicy",
    "NoMemoryCore",
    "NoMemoryMultiInputActorCriticPolicy",
    "RecurrentA2C",
    "RecurrentPPO",
    "RecurrentMemoryActorCriticPolicy",
    "StackedCore",
    "canonical_policy_kwargs",
    "get_memory",
    "load_plugins",
    "memory_names",
    "register_memory",
    "register_policy_aliases",
    "registered_memory",
    "unregister_memory",
]
