"""Safe outputs: every file dam writes appears whole or not at all, never replaces one of the run's inputs, and
replaces an existing file only where the user asked for it (``overwrite``).

* :func:`atomic_path` is the one way dam writes a file (netCDF, CSV, YAML, JSON, figures, zarr stores): the
  writer fills a temporary name in the same folder, which is renamed onto the target (``os.replace``) only when
  the writer finished. A killed run leaves at most a hidden ``.NAME.dam-tmp-*`` file, never a half file that
  blocks or corrupts the next run. :func:`write_text`, :func:`write_netcdf`, :func:`write_csv` and
  :func:`save_figure` are the usual writers on top of it.
* :func:`check_outputs` is called before a run starts (before any folder is created): an output that is,
  contains or lies inside an input is refused, as is an existing file without ``overwrite``, a directory where
  a file is expected, an unsupported extension and a folder that cannot be written to.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "OutputError",
    "atomic_path",
    "check_outputs",
    "leftover_temporaries",
    "relation",
    "remove_path",
    "save_figure",
    "write_csv",
    "write_netcdf",
    "write_text",
]

TMP_MARK = ".dam-tmp-"


#: Longest file or folder name (bytes) of the usual file systems (ext4, xfs, btrfs, APFS, NTFS).
NAME_MAX = 255


class OutputError(ValueError):
    """An output path is refused (it would replace an input or existing results, or cannot be written)."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file or folder that dam itself wrote (callers check that it is theirs first)."""
    _remove(Path(path))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder, same suffix) that replaces ``path`` when the block ends
    without an exception; on an exception (or a kill) the target is untouched and the temporary is removed
    (a kill leaves only the hidden temporary). Parent folders are created. Works for files and folders (a
    folder replaces only a missing or empty target).

    Examples
    --------
    >>> with atomic_path("out/result.nc") as tmp:  # doctest: +SKIP
    ...     ds.to_netcdf(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_netcdf(ds: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``ds.to_netcdf(path, **kwargs)``, atomically."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, **kwargs)
    return Path(path)


def write_csv(frame: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``frame.to_csv(path, **kwargs)`` (pandas), atomically; ``index=False`` unless given."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``fig.savefig(path, **kwargs)`` (matplotlib), atomically (the format follows ``path``'s suffix)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or None)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return path


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def relation(output: str | os.PathLike, input_: str | os.PathLike) -> str | None:
    """How ``output`` would touch ``input_``: ``"is"``, ``"contains"``, ``"lies inside"`` or None."""
    out, inp = _resolved(output), _resolved(input_)
    if out == inp:
        return "is"
    if out in inp.parents:
        return "contains"
    if inp in out.parents:
        return "lies inside"
    return None


def _writable_ancestor(path: Path) -> str | None:
    """Why ``path`` cannot be created, or None: its nearest existing ancestor must be a writable folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"folder {parent} is not writable"
            return None
    return None


def check_outputs(
    outputs: Iterable[str | os.PathLike],
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    suffixes: Iterable[str] | None = None,
    folders: Iterable[str | os.PathLike] = (),
    what: str = "output",
) -> None:
    """Refuse outputs before any work is done (nothing is created here).

    Parameters
    ----------
    outputs
        Files the run will write.
    inputs
        Files or folders the run reads: an output (file or folder) that is, contains or lies inside one of them
        is refused, even with ``overwrite``.
    overwrite
        Allow replacing existing output files (the user asked for it, e.g. ``--overwrite``).
    suffixes
        Allowed suffixes of the first output (e.g. ``(".csv", ".nc")``).
    folders
        Folders the run will write into (e.g. a figures folder); checked like ``outputs`` except that an
        existing folder is fine (its files are checked as outputs by the caller).

    Raises
    ------
    OutputError
        Naming the path and what to do.
    """
    outputs, folders, inputs = [Path(p) for p in outputs], [Path(p) for p in folders], [Path(p) for p in inputs]
    if suffixes is not None and outputs:
        allowed = tuple(suffixes)
        if outputs[0].suffix not in allowed:
            raise OutputError(
                f"{what} {outputs[0]}: unsupported extension {outputs[0].suffix or '(none)'!r}; use one of "
                + ", ".join(allowed)
            )
    for path in [*outputs, *folders]:
        long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
        if long:  # the file system refuses it (OSError "File name too long") only when dam writes
            raise OutputError(f"{what} {path}: the name {long[0][:40]}... is longer than {NAME_MAX} bytes")
        for inp in inputs:
            how = relation(path, inp)
            if how is not None:
                raise OutputError(
                    f"{what} {path} {how} the input {inp}: dam never writes over its inputs; choose another path"
                )
        why = _writable_ancestor(_resolved(path))
        if why is not None:
            raise OutputError(f"cannot write {what} {path}: {why}")
    for path in folders:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{what} folder {path} exists and is a file")
    existing = []
    for path in outputs:
        if path.is_dir():
            raise OutputError(f"{what} {path} is a folder; give a file name")
        if path.exists():
            if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
                raise OutputError(f"cannot replace {what} {path}: it is read-only")
            existing.append(path)
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise OutputError(f"{names} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite to replace")


def leftover_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporaries of killed writers in ``folder`` (safe to delete once no dam process uses the folder)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(f".*{TMP_MARK}*")) if folder.is_dir() else []
