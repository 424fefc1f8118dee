"""dam.memory: what a long run hands back between stages."""

from __future__ import annotations

import ctypes
from pathlib import Path

import jax
import pytest

from dam import memory


def _resident_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_release_memory_returns_freed_heap_and_drops_compiled_programs():
    if memory._malloc_trim() is None:
        pytest.skip("needs glibc's malloc_trim (Linux)")
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, n = 64 * 1024, 4096  # 256 MiB in blocks below the mmap threshold: they live on the heap
    blocks = [libc.malloc(size) for _ in range(n)]
    for b in blocks:
        ctypes.memset(b, 1, size)  # resident
    pin = libc.malloc(size)  # a live block above them: free() alone cannot shrink the heap
    for b in blocks:
        libc.free(b)
    f = jax.jit(lambda x: x + 1.0)
    f(1.0)
    assert f._cache_size() == 1
    freed_but_kept = _resident_mib()
    memory.release_memory()
    assert _resident_mib() < freed_but_kept - 128  # what glibc kept went back to the system
    assert f._cache_size() == 0  # the compiled program is gone too
    libc.free(pin)


def test_peak_memory_is_reported_and_never_falls():
    peak = memory.peak_memory_gib()
    assert peak is not None and 0.01 < peak < 1024
    memory.release_memory()
    assert memory.peak_memory_gib() >= peak
