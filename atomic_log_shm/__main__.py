"""``python -m atomic_log_shm``: the command line, the same as ``atomic-log``."""

import sys

from ._cli import main

if __name__ == "__main__":  # a spawned child imports this module too, and must not run it
    sys.exit(main())
