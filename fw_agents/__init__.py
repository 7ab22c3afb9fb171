"""fw-agents: fast-weights memory (Ba et al. 2016) for Stable-Baselines3 recurrent agents."""

__version__ = "0.1.0"
