"""Several processes of one ``dam`` command on this machine, each pinned to its own share of the CPU cores.

On a CPU, one JAX process uses every core through XLA's thread pool, but its threads wander between cores and
wait for each other: on a 2-core machine one process runs the soil column 1.4-1.6x as fast as on one core, while
two processes pinned to one core each reach 2.0x (``benchmarks/cores.py``). :func:`launch` starts ``n`` copies of
a command as the processes of one ``jax.distributed`` run on localhost (``DAM_COORDINATOR``,
``DAM_NUM_PROCESSES``, ``DAM_PROCESS_ID``), each with its CPU affinity set to one group of :func:`core_groups`
before it starts, so every thread it creates stays on its cores. Where the system has no CPU affinity (macOS),
the processes are started unpinned.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

POLL_S = 0.2
STOP_GRACE_S = 30.0  # time the others get to stop (and close their files) after one process failed
INTERRUPT_WAIT_S = 10.0  # after Ctrl-C, before the processes that did not stop get SIGINT from here


PINNED = hasattr(os, "sched_setaffinity")  # Linux; not macOS


def available_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity mask, which a batch system may have narrowed; all
    cores where the system has no affinity)."""
    return sorted(os.sched_getaffinity(0)) if PINNED else list(range(os.cpu_count() or 1))


def core_groups(n_processes: int, cores: Sequence[int] | None = None) -> list[list[int]]:
    """``cores`` (default: :func:`available_cores`) in ``n_processes`` contiguous groups of near-equal size.

    Raises
    ------
    ValueError
        If there are fewer cores than processes (processes sharing a core only slow each other down).
    """
    cores = available_cores() if cores is None else sorted(cores)
    if not 1 <= n_processes <= len(cores):
        raise ValueError(
            f"{n_processes} local processes need as many CPU cores, and this process may use {len(cores)} "
            f"({', '.join(map(str, cores))}); use 1 to {len(cores)}"
        )
    size, extra = divmod(len(cores), n_processes)
    starts = [k * size + min(k, extra) for k in range(n_processes + 1)]
    return [list(cores[a:b]) for a, b in zip(starts, starts[1:], strict=False)]


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (the coordinator's)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(dam_args: Sequence[str], n_processes: int, cores: Sequence[int] | None = None) -> int:
    """Run ``dam *dam_args`` as ``n_processes`` processes of one run on this machine; returns the exit code.

    Process 0 keeps this terminal's standard output; the others add ``--quiet`` and their standard output is
    dropped (each prints the same summary); every process's errors reach standard error. When one process fails,
    the others are stopped and its exit code returned; Ctrl-C stops them all.
    """
    groups = core_groups(n_processes, cores)
    base = {"DAM_COORDINATOR": f"localhost:{free_port()}", "DAM_NUM_PROCESSES": str(n_processes)}
    procs = []
    try:
        for k, group in enumerate(groups):
            args = [*dam_args, "--quiet"] if k and "--quiet" not in dam_args else list(dam_args)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dam.cli", *args],
                    env={**os.environ, **base, "DAM_PROCESS_ID": str(k)},
                    stdout=None if k == 0 else subprocess.DEVNULL,
                    preexec_fn=(lambda group=group: os.sched_setaffinity(0, group)) if PINNED else None,  # noqa: PLW1509
                )
            )
        return _wait(procs)
    except KeyboardInterrupt:  # Ctrl-C in a terminal reached the children too: give them time to stop on their own
        _stop(procs, signal.SIGINT, wait_first_s=INTERRUPT_WAIT_S)
        raise


def _wait(procs: list[subprocess.Popen]) -> int:
    """Wait for all processes; at the first failure stop the rest and return its exit code (128 + N for a
    process killed by signal N, as a shell reports it)."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            _stop(procs, signal.SIGTERM)
            return failed[0] if failed[0] > 0 else 128 - failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(POLL_S)


def _stop(procs: list[subprocess.Popen], sig: int, wait_first_s: float = 0.0) -> None:
    """Send ``sig`` to the processes still running after ``wait_first_s``, wait for them (kill after the grace
    time)."""
    deadline = time.monotonic() + wait_first_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(POLL_S)
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
