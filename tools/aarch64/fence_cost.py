"""What one memory fence costs from Python, here: ``atomicshm.fence`` against a ctypes call.

Runs on the host (``python tools/aarch64/fence_cost.py``) and in the emulated arm64 root
(``tools/aarch64/run --exec sh -c 'pip install -q atomicshm && python tools/aarch64/fence_cost.py'``).
Prints the machine, then nanoseconds per call for each fence, the median of 5 timeit
repeats. The ctypes column calls libatomic's ``atomic_thread_fence`` (a real function in
libatomic, C11's fence), the nearest thing to a fence that Python reaches without an
extension; RELAXED is no fence at all: the cost of the call alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import statistics
import sys
import timeit

import atomicshm

REPEATS = 5
CALLS = 200_000
# C11's memory_order values, as <stdatomic.h> numbers them (libatomic takes these).
C11_ORDER = {"RELAXED": 0, "ACQUIRE": 2, "RELEASE": 3, "SEQ_CST": 5}


def per_call_ns(stmt: str, namespace: dict[str, object]) -> float:
    timer = timeit.Timer(stmt, globals=namespace)
    return statistics.median(timer.repeat(REPEATS, CALLS)) / CALLS * 1e9


def main() -> None:
    print(
        f"{platform.machine()}, Python {platform.python_version()}, 64-bit: {sys.maxsize == 2**63 - 1}, "
        f"atomicshm {atomicshm.__version__} ({atomicshm.BACKEND})"
    )
    libatomic_name = ctypes.util.find_library("atomic") or "libatomic.so.1"
    try:
        thread_fence = ctypes.CDLL(libatomic_name).atomic_thread_fence
        thread_fence.argtypes, thread_fence.restype = [ctypes.c_int], None
    except (OSError, AttributeError):
        thread_fence = None
    print(f"{'order':<8} {'atomicshm.fence':>16} {'ctypes ' + libatomic_name:>24}   (ns per call)")
    for name, c11 in C11_ORDER.items():
        ours = per_call_ns(f"fence({name})", {"fence": atomicshm.fence, name: getattr(atomicshm, name)})
        theirs = "-" if thread_fence is None else f"{per_call_ns('f(o)', {'f': thread_fence, 'o': c11}):.1f}"
        print(f"{name:<8} {ours:>16.1f} {theirs:>24}")


if __name__ == "__main__":
    main()
