"""POPGym's tasks (Morad et al., ICLR 2023) as SB3 takes them: ``fw_agents/popgym-<Task>-v0``.

POPGym (``pip install fw-agents[popgym]``) registers ``popgym-<Task>-v0`` with Gymnasium, but its observations are
Tuple, Dict or MultiDiscrete spaces that SB3's MLP policies cannot take, and its tasks alias: two different
histories can end in the same observation, so POPGym's own baselines add the previous action and a first-step flag.
:func:`make_popgym_env` applies POPGym's own wrappers in the order its baselines use,
``Flatten(Antialias(PreviousAction(env)))``: one vector per step holding the observation, the previous action and
whether this is the episode's first step (one-hot for the discrete parts: int64 where every part is discrete, as
POPGym gives it; SB3's policies take it as floats), in a ``TimeLimit`` as a guard for tasks whose episodes end only
when the agent plays well (Concentration, MineSweeper).

Every POPGym task's episode return lies in [-1, 1] by construction (POPGym scales each reward by the episode's
length), so 1 is the task maximum; the suite (``python -m bench.suite``) scores against it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.validation import check_choice, check_int

#: Episode-step guard (POPGym's longest Easy episodes are a few hundred steps; an agent that plays badly can make
#: Concentration and MineSweeper last longer).
MAX_EPISODE_STEPS = 10_000
#: POPGym's task families (their Easy/Medium/Hard variants are ``<family><Level>``).
POPGYM_FAMILIES: tuple[str, ...] = (
    "RepeatFirst",
    "RepeatPrevious",
    "Autoencode",
    "CountRecall",
    "PositionOnlyCartPole",
    "NoisyPositionOnlyCartPole",
    "PositionOnlyPendulum",
    "NoisyPositionOnlyPendulum",
    "VelocityOnlyCartpole",
    "HigherLower",
    "MultiarmedBandit",
    "Concentration",
    "MineSweeper",
    "Battleship",
)
LEVELS: tuple[str, ...] = ("Easy", "Medium", "Hard")
#: Every POPGym id this module wraps (and ``envs`` registers as ``fw_agents/<id>``); POPGym's own spelling.
POPGYM_IDS: tuple[str, ...] = tuple(f"popgym-{family}{level}-v0" for family in POPGYM_FAMILIES for level in LEVELS)
INSTALL_HINT = "POPGym is not installed: pip install 'fw-agents[popgym]' (or pip install popgym)"


def make_popgym_env(
    env_id: str, max_episode_steps: int = MAX_EPISODE_STEPS, render_mode: str | None = None, **kwargs: Any
) -> gym.Env:
    """POPGym task ``env_id`` (``"popgym-RepeatFirstEasy-v0"``) with POPGym's wrappers, flat observations.

    :param env_id: one of :data:`POPGYM_IDS`.
    :param max_episode_steps: the ``TimeLimit`` guard (a truncation, so agents bootstrap through it).
    :param render_mode: not used: POPGym's tasks draw no frames (their ``render_modes`` are empty). Taken so that
        SB3's ``make_vec_env``, which asks every env for ``"rgb_array"``, makes them without a warning.
    :param kwargs: passed to the POPGym task's constructor.
    :raises ValueError: for an unknown id, or a step guard < 1.
    :raises ImportError: if POPGym is not installed (the message says how to install it).
    """
    check_choice("env_id", env_id, POPGYM_IDS)
    check_int("max_episode_steps", max_episode_steps, 1)
    try:
        import popgym  # noqa: F401  (registers popgym-* with Gymnasium)
        from popgym.wrappers import Antialias, Flatten, PreviousAction
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    # POPGym's wrappers take its env class itself: no checker or order-enforcing wrapper in between (the outer
    # gymnasium.make of our id adds the checker once).
    env = gym.make(env_id, disable_env_checker=True, **kwargs)
    return gym.wrappers.TimeLimit(Flatten(Antialias(PreviousAction(env))), max_episode_steps)
