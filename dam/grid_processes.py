"""The processes of one grid run: several JAX processes (``jax.distributed``) share a run by columns, and each
keeps its own checkpoints.

The grid run is embarrassingly parallel over its spatial blocks (bands of latitude rows), so the processes never
exchange arrays: process ``k`` of ``n`` runs bands ``k, k + n, ...`` on its local devices and writes their
regions of the one output store (chunks match the bands, so no two processes write one chunk). Process 0 alone
reads the inputs whole (their checks and the run's fingerprint, shared with the others: :func:`from_first`),
creates the store and removes stale checkpoints; the others wait at a *gate* until it is done. A gate is a
barrier of the coordination service that also exchanges each process's error, so a check that fails in one
process stops all of them with the same message instead of leaving the others waiting. Each process keeps its
checkpoints in ``checkpoint_dir/process-K`` (``.npz`` files, written atomically: under ``jax.distributed`` orbax
saves numpy arrays from process 0 only and refuses process-local JAX arrays) and a lock there; process 0 also
holds the run's lock in ``checkpoint_dir``.
A single process keeps the layout of before: orbax checkpoints directly in ``checkpoint_dir``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

from dam.grid_run_config import GridRunError
from dam.io_safety import atomic_path, remove_path
from dam.run_folder import RunFolderError, RunLock

PROCESS_FOLDER = re.compile(r"^process-\d+$")
GATE_TIMEOUT_MS = 3_600_000  # a dead process is found sooner by the coordination service's heartbeats
T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: ``index`` of ``count`` (1 without ``jax.distributed``)."""

    index: int = 0
    count: int = 1

    @classmethod
    def current(cls) -> Processes:
        return cls(jax.process_index(), jax.process_count())

    def checkpoint_folder(self, checkpoint_dir: str | Path) -> Path:
        """Where this process keeps its checkpoints."""
        root = Path(checkpoint_dir).absolute()
        return root if self.count == 1 else root / f"process-{self.index}"


_gates = 0
_shared = 0


def gate(procs: Processes, name: str, error: Exception | None) -> None:
    """Wait for every process and raise the first error any of them met (its own error as it is)."""
    if procs.count > 1:
        from jax._src.distributed import global_state  # the coordination service: no public handle (orbax too)

        global _gates
        _gates += 1
        key = f"dam/grid-run/{name}-{_gates}/"
        message = "" if error is None else " ".join((str(error).strip() or type(error).__name__).split())
        global_state.client.key_value_set(key + str(procs.index), message)
        global_state.client.wait_at_barrier(f"dam-grid-run-{name}-{_gates}", GATE_TIMEOUT_MS)
        if error is None:
            failed = sorted((int(k.rsplit("/", 1)[1]), m) for k, m in global_state.client.key_value_dir_get(key) if m)
            if failed:
                raise GridRunError(f"process {failed[0][0]} of {procs.count} stopped: {failed[0][1]}")
    if error is not None:
        raise error


def agreed(procs: Processes, name: str, step: Callable[[], T]) -> T:
    """``step()`` in every process, then a gate: all go on, or all stop with the first error."""
    try:
        result = step()
    except Exception as exc:  # noqa: BLE001 - re-raised by the gate, in every process
        gate(procs, name, exc)
        raise
    gate(procs, name, None)
    return result


def from_first(procs: Processes, name: str, step: Callable[[], str]) -> str:
    """``step()`` in process 0 only (work that reads the inputs whole: once per run, not once per process), its
    result shared with every process; a gate as in :func:`agreed` (an error in process 0 stops all)."""
    if procs.count == 1:
        return step()
    from jax._src.distributed import global_state

    global _shared
    _shared += 1
    key = f"dam/grid-run/{name}-{_shared}/value"

    def first() -> None:
        if procs.index == 0:
            global_state.client.key_value_set(key, step())

    agreed(procs, name, first)
    return global_state.client.blocking_key_value_get(key, GATE_TIMEOUT_MS)


def take_locks(stack: ExitStack, checkpoint_dir: str | Path, procs: Processes) -> None:
    """The run's lock (process 0) and this process's own lock, released when ``stack`` closes. A second run on
    the same folders fails at once; the processes of one run never wait for each other's locks."""
    if procs.index == 0:
        stack.enter_context(RunLock(Path(checkpoint_dir)))
    if procs.count > 1:
        stack.enter_context(RunLock(procs.checkpoint_folder(checkpoint_dir)))


def remove_stale(checkpoint_dir: str | Path, procs: Processes) -> None:
    """Process 0, starting a run afresh: remove checkpoints that no process of this run will replace (those of a
    run with another process count)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if PROCESS_FOLDER.match(path.name):
            stale = procs.count == 1 or int(path.name.split("-")[1]) >= procs.count
        else:
            stale = procs.count > 1 and path.name.split(".")[0].isdigit()
        if stale:
            remove_path(path)


def stale_owners(checkpoint_dir: str | Path, procs: Processes) -> dict[Path, str | None]:
    """The fingerprints of the checkpoints that :func:`remove_stale` would remove (None: none there), so that
    process 0 refuses to remove another run's."""
    root, owners = Path(checkpoint_dir), {}
    if not root.is_dir():
        return owners
    if procs.count > 1:
        owners[root] = _orbax_owner(root)
    for path in root.iterdir():
        if PROCESS_FOLDER.match(path.name) and (procs.count == 1 or int(path.name.split("-")[1]) >= procs.count):
            owners[path] = ProcessCheckpoints(path).owner()
    return owners


def _orbax_owner(folder: Path) -> str | None:
    """The fingerprint of the newest orbax checkpoint in ``folder``, read as a file (an orbax manager here would
    wait for the other processes); an unreadable one counts as another run's."""
    steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    if not steps:
        return None
    try:
        return json.loads((folder / str(steps[-1]) / "meta" / "metadata").read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return "(unreadable)"


class OrbaxCheckpoints:
    """The state after every time block, orbax checkpoints in ``folder`` (the single-process layout)."""

    def __init__(self, folder: Path) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))

    def owner(self) -> str | None:
        """The fingerprint of the latest checkpoint (None: no checkpoint)."""
        latest = self.manager.latest_step()
        if latest is None:
            return None
        restored = self.manager.restore(latest, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore()))
        return restored["meta"]["fingerprint"]

    def save(self, block: int, state: Any, fingerprint: str, next_step: int) -> None:
        """Checkpoint the state after time block ``block``, and wait until it is on disk."""
        ocp = self._ocp
        self.manager.save(
            block,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(jax.device_get(state)),
                meta=ocp.args.JsonSave({"fingerprint": fingerprint, "next_step": next_step}),
            ),
        )
        self.manager.wait_until_finished()

    def restore(self, like: Any) -> tuple[Any, int]:
        """The state of the latest checkpoint (the structure of ``like``) and the next time block to run."""
        ocp = self._ocp
        latest = self.manager.latest_step()
        restored = self.manager.restore(
            latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(like), meta=ocp.args.JsonRestore())
        )
        return restored["state"], latest + 1

    def clear(self) -> None:
        for step in self.manager.all_steps():
            self.manager.delete(step)

    def close(self) -> None:
        self.manager.close()


class ProcessCheckpoints:
    """The same for one process of several: ``BLOCK.npz`` files in ``folder`` (the newest two kept), each with
    the state's leaves and the run's fingerprint, written atomically."""

    keep = 2

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder

    def _steps(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.npz") if p.stem.isdigit())

    def _path(self, block: int) -> Path:
        return self.folder / f"{block:08d}.npz"

    def _read(self, block: int) -> tuple[list[np.ndarray], dict]:
        with np.load(self._path(block)) as data:
            leaves = [data[f"leaf{i}"] for i in range(len(data.files) - 1)]
            return leaves, json.loads(str(data["meta"]))

    def owner(self) -> str | None:
        steps = self._steps()
        return self._read(steps[-1])[1]["fingerprint"] if steps else None

    def save(self, block: int, state: Any, fingerprint: str, next_step: int) -> None:
        leaves = {f"leaf{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(state))}
        meta = json.dumps({"fingerprint": fingerprint, "next_step": next_step})
        with atomic_path(self._path(block)) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.asarray(meta), **leaves)
        for old in self._steps()[: -self.keep]:
            self._path(old).unlink()

    def restore(self, like: Any) -> tuple[Any, int]:
        latest = self._steps()[-1]
        leaves, _ = self._read(latest)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves), latest + 1

    def clear(self) -> None:
        for step in self._steps():
            self._path(step).unlink()

    def close(self) -> None:
        pass


def open_checkpoints(checkpoint_dir: str | Path, procs: Processes) -> OrbaxCheckpoints | ProcessCheckpoints:
    folder = procs.checkpoint_folder(checkpoint_dir)
    return OrbaxCheckpoints(folder) if procs.count == 1 else ProcessCheckpoints(folder)


def check_process_count(store: dict, procs: Processes, output: str, checkpoint_dir: str) -> None:
    """Refuse to resume a store with another process count: its chunks and checkpoints follow that count."""
    count = int(store.get("run_processes", 1))
    if count != procs.count:
        raise RunFolderError(
            f"output {output} is a run of {count} process(es) and this is {procs.count}: resume it with "
            f"{count} processes (--local-processes {count}, or --num-processes {count} each), or delete {output} and "
            f"{checkpoint_dir} to start afresh"
        )
