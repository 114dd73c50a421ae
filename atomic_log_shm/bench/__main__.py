"""``python -m atomic_log_shm.bench``: run the benchmark suite (see the package's docstring)."""

import sys

from atomic_log_shm.bench import main

if __name__ == "__main__":  # a spawned reader imports this module too, and must not run it
    sys.exit(main())
