"""Process-level tuning for the span path: glibc malloc thresholds, and the garbage
collector's view of start-up objects.

Each Export request decodes and re-encodes a few hundred KiB. With glibc's
defaults, buffers that large are mmap'ed and unmapped per request and freed heap
tops are trimmed back to the OS, so every request pays fresh page faults. Raising
both thresholds keeps that memory in the process and doubles the throughput of a
decode/re-encode pass (measured with ``make bench-enrich``). Memory stays bounded
by the largest requests in flight.

A full (generation 2) collection visits every tracked object. Most of them are
there from start-up (modules, classes, descriptors, config: about 80k objects), so
each one paused the event loop for 45-55 ms and, at half the peak load, set the
p99 of a whole 10 s run. Moved to the permanent generation once the service has
started (:func:`freeze_startup_objects`), they are no longer visited.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Keep up to 256 MiB of freed heap before trimming; mmap only above 64 MiB
# (the default OTLP message limit), so normal requests never take that path.
TRIM_THRESHOLD = 256 << 20
MMAP_THRESHOLD = 64 << 20


def tune_malloc() -> bool:
    """Apply the thresholds; False where libc is not glibc (then nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok_trim = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return bool(ok_trim and ok_mmap)


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive now to the permanent generation, so
    later full collections visit only what the traffic created; returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
