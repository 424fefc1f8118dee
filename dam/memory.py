"""Memory of a long run: the process's peak so far, and handing back what finished stages no longer hold."""

from __future__ import annotations

import ctypes
import functools
import gc
import sys

import jax


def peak_memory_gib() -> float | None:
    """The process's peak resident memory so far, GiB (None where the platform does not report it)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library or platform)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None


def release_memory() -> None:
    """Drop the compiled programs of finished stages and return the freed heap to the system.

    XLA compiles in worker threads, and glibc keeps what a thread frees in that thread's arena: without
    ``malloc_trim`` a run of many stages kept each stage's compile transient (about 3 GiB for a station model's
    gradient) resident, and the next stage's transient came on top of it.
    """
    jax.clear_caches()
    gc.collect()
    if (trim := _malloc_trim()) is not None:
        trim(0)
