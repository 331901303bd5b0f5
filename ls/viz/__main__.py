"""``python -m ls.viz``: the figures' command line (the same as the repository's ``visualize.py``)."""

import sys

from ls.viz.cli import main

if __name__ == "__main__":
    sys.exit(main())
