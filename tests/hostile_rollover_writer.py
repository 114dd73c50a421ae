"""The writer process of test_hostile.py's two-process rollover test (item 6).

Run as ``python tests/hostile_rollover_writer.py NAME COUNT``: it claims the writer of log
NAME, appends COUNT records, paced so that the reader sees most segments, and prints as
JSON how many mappings of the log and descriptors it held before and along the way.
"""

from __future__ import annotations

import json
import sys
import time

from support import mappings_and_fds

from atomic_log_shm import AtomicLog


def main(name: str, total: int) -> None:
    baseline = mappings_and_fds(name)[1]
    log = AtomicLog.attach(name)
    writer = log.try_claim_writer()
    assert writer is not None, f"log {name} already has a writer"
    samples = []
    for i in range(total):
        writer.append(i)
        if i % 4 == 0:
            time.sleep(0.0002)  # pace the writer, so that the reader sees most segments
        if i % 250 == 0 and i:
            samples.append(mappings_and_fds(name))
    samples.append(mappings_and_fds(name))
    writer.close()
    log.close()
    print(json.dumps({"baseline": baseline, "samples": samples}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
