"""``python -m train.ppo``: train a recurrent agent with sb3-contrib's ``RecurrentPPO`` (see ``--help``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from train.trainer import train_main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return train_main("ppo", argv)


if __name__ == "__main__":
    sys.exit(main())
