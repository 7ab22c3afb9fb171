"""A warning for the commonest silent mistake with recurrent models: dropping the returned state.

``action, _ = model.predict(obs)`` step after step runs a recurrent policy from an empty memory at every
step (a CartPoleNoVel policy that scores ~470 falls to ~42 that way) and nothing complains.
"""

from __future__ import annotations

import warnings
from typing import Any


class StatelessPredictWarning(UserWarning):
    """A recurrent model's ``predict`` was called step after step without ``state``."""


class StatelessPredictGuard:
    """Counts consecutive ``predict`` calls without ``state`` and warns once at the second.

    The first call of an episode legitimately has ``state=None`` (SB3's ``evaluate_policy`` starts that
    way); a second one in a row means the caller dropped the state the first call returned.
    """

    def __init__(self) -> None:
        self.calls_without_state = 0
        self.warned = False

    def __call__(self, state: Any) -> None:
        self.calls_without_state = self.calls_without_state + 1 if state is None else 0
        if self.calls_without_state >= 2 and not self.warned:
            self.warned = True
            warnings.warn(
                "predict() was called again without state: a recurrent model then acts from an empty memory at "
                "every step. Pass the returned state back: action, state = model.predict(obs, state=state, "
                "episode_start=episode_start)",
                StatelessPredictWarning,
                stacklevel=3,
            )
