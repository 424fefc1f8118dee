"""Run folders: where a long run keeps its results and checkpoints, so that a run started again continues.

A run folder is identified by a *fingerprint*: a hash of the configuration (without paths, which may change when
the folder is moved) and of the *content* of every input file (:func:`content_hash`), so a resume after an input
changed is refused instead of mixing old and new results. The rules, shared by ``dam experiment`` and
``dam grid-run``:

* paths are resolved (``./runs/x`` and ``runs/x`` are one folder); the folder records no absolute path, so it
  resumes after being moved or copied;
* a folder that is neither empty nor a run of the same kind is refused (dam never deletes what it did not
  write): :func:`open_run_folder`;
* one process at a time: :class:`RunLock` (an OS file lock, released by the kernel when the process dies, so
  the lock of a killed run is taken over at once; a second live process gets a clear error immediately);
* names used as path parts (site names, model names) are safe identifiers: :func:`safe_name`, :func:`inside`.

The manifest ``dam_run.json`` (written atomically) holds the kind, fingerprint, configuration and input hashes.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .io_safety import TMP_MARK, write_text

__all__ = [
    "MANIFEST",
    "RunFolderError",
    "RunLock",
    "content_hash",
    "fingerprint",
    "inside",
    "open_run_folder",
    "read_manifest",
    "resolve",
    "safe_name",
    "write_manifest",
]

MANIFEST = "dam_run.json"
LOCK = ".dam.lock"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class RunFolderError(ValueError):
    """A run folder cannot be used (another run's results, in use by another process, unsafe names)."""


def resolve(path: str | os.PathLike) -> Path:
    """The absolute, normalised path (``~`` expanded, symlinks and ``..`` resolved)."""
    return Path(path).expanduser().resolve()


def safe_name(name: str, what: str) -> str:
    """``name`` if it is a safe single path part (letters, digits, ``._+-``; no separators, no leading dot).

    Raises
    ------
    RunFolderError
        Naming ``what`` (e.g. "site name in site.yaml").
    """
    if not isinstance(name, str) or not _SAFE.match(name) or name in (".", ".."):
        raise RunFolderError(
            f"{what} {name!r} cannot name a folder: use letters, digits and . _ + - only (no '/', no leading dot)"
        )
    return name


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts...``, refusing any part that is not a :func:`safe_name` (so nothing escapes ``root``)."""
    path = Path(root)
    for part in parts:
        path = path / safe_name(part, "path part")
    return path


# ------------------------------------------------------------------------------------------ content hashes
_HASH_CACHE: dict[tuple, str] = {}


def _file_digest(path: Path, h: Any) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, or of a folder's files (relative names and bytes, sorted; hidden
    temporaries and lock files skipped) — e.g. a zarr store or a site folder. Cached per process for files
    whose size and modification time did not change."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and TMP_MARK not in p.name and p.name != LOCK
    )  # fmt: skip
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stats in _HASH_CACHE:
        return _HASH_CACHE[stats]
    h = hashlib.sha256()
    for p in files:
        if path.is_dir():
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
        _file_digest(p, h)
    _HASH_CACHE[stats] = h.hexdigest()
    return _HASH_CACHE[stats]


def fingerprint(config: Mapping[str, Any], inputs: Mapping[str, str] | None = None) -> str:
    """16 hex digits identifying a run: its configuration (JSON-able, without paths) and its inputs' content
    hashes (``{role: content_hash}``)."""
    text = json.dumps({"config": config, "inputs": dict(inputs or {})}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ lock
class RunLock:
    """Exclusive use of a folder by one process (``with RunLock(folder): ...``).

    An OS file lock (``flock``) on ``folder/.dam.lock``: the kernel releases it when the holder exits or is
    killed, so a stale lock never blocks; a second live process fails at once with the holder's PID and host.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderError(
                    f"{self.folder} is in use by another dam run ({holder}); wait for it to finish or stop it"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()} since {_now()}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ------------------------------------------------------------------------------------------ manifest
def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a run folder, or None where there is none (or it cannot be read)."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_manifest(folder: str | os.PathLike, kind: str, fp: str, config: Any, inputs: Mapping[str, str]) -> None:
    """Write ``dam_run.json`` atomically (kind, fingerprint, configuration, input hashes, dam version, time)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        dam_version = version("dam")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        dam_version = "unknown"
    body = {"kind": kind, "fingerprint": fp, "created": _now(), "dam_version": dam_version,
            "inputs": dict(inputs), "config": config}  # fmt: skip
    write_text(Path(folder) / MANIFEST, json.dumps(body, indent=1, default=str) + "\n")


def _is_empty(folder: Path) -> bool:
    return not any(p for p in folder.iterdir() if p.name != LOCK and TMP_MARK not in p.name)


def open_run_folder(
    path: str | os.PathLike, kind: str, *, legacy_marker: str | None = None
) -> tuple[Path, dict | None]:
    """Resolve ``path`` and check that it can hold a run of ``kind``: it does not exist, is empty, or holds a
    manifest of that kind (or, for folders from before manifests, the file ``legacy_marker``). Nothing is
    created. Returns the resolved folder and its manifest (None for a new or legacy folder); the caller compares
    the manifest's fingerprint with its own.

    Raises
    ------
    RunFolderError
        For a file, a foreign non-empty folder or a run of another kind.
    """
    folder = resolve(path)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"run folder {folder} is a file")
    if not folder.exists() or _is_empty(folder):
        return folder, None
    manifest = read_manifest(folder)
    if manifest is None:
        if legacy_marker is not None and (folder / legacy_marker).is_file():
            return folder, None
        raise RunFolderError(
            f"{folder} is not empty and is not a dam {kind} run folder: dam will not write into it; choose "
            "another folder"
        )
    if manifest.get("kind") != kind:
        raise RunFolderError(f"{folder} holds a dam {manifest.get('kind')!r} run, not a {kind} run")
    return folder, manifest
