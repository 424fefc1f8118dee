"""The persistent XLA compilation cache of the ``dam`` command line.

Compiling the station model and its gradient takes from about a minute to several minutes on a small machine;
every new process pays it again. JAX can keep compiled programs on disk: a second run of the same command
loads them instead of compiling. The CLI turns this on by default (:func:`enable_compile_cache`).

Where: ``$DAM_COMPILE_CACHE`` if set (``off`` turns the cache off), else ``$XDG_CACHE_HOME/dam/xla`` (default
``~/.cache/dam/xla``), in a sub-folder per JAX and jaxlib version. Safe across versions and settings: JAX keys
each entry by the program, the compiler version, the backend and the ``XLA_FLAGS`` (so the Fortran-exact no-FMA
programs never mix with others), and a new version writes to a new sub-folder. The folder is not capped (the
station model's programs take a few MB); delete it at any time to reclaim the space.
"""

from __future__ import annotations

import os
from pathlib import Path

MIN_COMPILE_S = 1.0
"""Programs that compile faster than this are not worth a disk entry, s."""

ENV = "DAM_COMPILE_CACHE"


def compile_cache_dir() -> Path | None:
    """The cache folder the CLI uses, or None when ``$DAM_COMPILE_CACHE`` is ``off`` (or ``0``, ``none``,
    ``false``)."""
    import jax
    import jaxlib

    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in ("off", "0", "none", "false"):
        return None
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dam" / "xla"
    root = Path(setting) if setting else default
    return root.expanduser() / f"jax-{jax.__version__}_jaxlib-{jaxlib.__version__}"


def enable_compile_cache(path: Path | None = None, min_compile_s: float = MIN_COMPILE_S) -> Path | None:
    """Keep compiled XLA programs in ``path`` (default :func:`compile_cache_dir`) for later processes.

    Call before the first compilation. Returns the folder, or None when the cache is off or the folder cannot be
    created (a read-only home, say: dam then runs as without a cache).
    """
    import jax

    path = compile_cache_dir() if path is None else Path(path)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
