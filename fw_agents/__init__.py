"""fw-agents: fast-weights memory (Ba et al. 2016) for Stable-Baselines3 recurrent agents."""

from fw_agents.a2c import RecurrentA2C
from fw_agents.extractors import MiniGridSymbolicExtractor
from fw_agents.memory import MEMORY_CORES, FastWeightsRNN, GRUCore, LSTMCore, MemoryCore, NoMemoryCore, StackedCore
from fw_agents.policies import (
    POLICY_ALIASES,
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
    register_policy_aliases,
)
from fw_agents.ppo import RecurrentPPO

__version__ = "0.1.0"

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
    "register_policy_aliases",
]
