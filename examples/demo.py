"""Live demo: one writer process publishes telemetry, reader processes follow it.

    python examples/demo.py [--duration SECONDS] [--readers N] [--rate RECORDS_PER_S]

The same as ``atomic-log demo`` (the code lives in ``atomic_log_shm/_demo.py``): a writer
process appends telemetry at a steady rate; each reader attaches by name, follows the log
by position and reports its lag and the records it missed (the last reader looks only
every 0.4 s, to show what a slow reader gets: the latest window, never a blocked writer).
The view is live in a terminal with ``rich`` installed, and plain lines otherwise. Every
process is stopped and the log removed at the end.
"""

import sys

from atomic_log_shm._cli import main

if __name__ == "__main__":  # spawned children import this file too, and must not run it
    sys.exit(main(["demo", *sys.argv[1:]]))
