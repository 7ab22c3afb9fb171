"""``python -m train.a2c``: train a recurrent agent with :class:`fw_agents.RecurrentA2C` (see ``--help``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from train.trainer import train_main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return train_main("a2c", argv)


if __name__ == "__main__":
    sys.exit(main())
