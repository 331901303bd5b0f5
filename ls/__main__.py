"""``python -m ls COMMAND ...``: the ``ausc`` command (:mod:`ls.cli`)."""

import sys

from ls.cli import main

if __name__ == "__main__":
    sys.exit(main())
