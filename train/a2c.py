"""``python -m train.a2c``: train a recurrent agent with :class:`fw_agents.RecurrentA2C` (see ``--help``)."""

import sys
from functools import partial

from train.cli import train_main

#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = partial(train_main, "a2c")

if __name__ == "__main__":
    sys.exit(main())
