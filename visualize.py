"""Paper figures from trained checkpoints (see ``ls.viz.cli`` for the options)."""

from ls.viz.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
