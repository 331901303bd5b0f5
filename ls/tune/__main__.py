"""``python -m ls.tune FILE``: see :mod:`ls.tune`."""

import sys

from ls.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
