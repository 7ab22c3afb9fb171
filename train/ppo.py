"""``python -m train.ppo``: train a recurrent agent with sb3-contrib's ``RecurrentPPO`` (see ``--help``)."""

import sys
from functools import partial

from train.cli import train_main

#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = partial(train_main, "ppo")

if __name__ == "__main__":
    sys.exit(main())
