"""Orbax checkpoints of a training run, with a fall-back past unreadable ones.

A training checkpoint holds array groups (trainable leaves, best leaves, optimiser state: each a flat dict of
numpy arrays in tree order) and a JSON record (what the run needs to continue). Restoring tries the newest
checkpoint first; one that cannot be read (truncated or corrupted files, a half-copied folder) is reported with a
warning and moved aside (to ``<directory>.unreadable/``, kept for inspection), and the next older one is tried, so a
damaged newest checkpoint costs the epochs since the previous one, not the run.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TrainingCheckpoints", "flat_leaves", "unflatten_like"]


def flat_leaves(tree: Any) -> dict[str, np.ndarray]:
    """The array leaves of ``tree`` as ``{"000000": leaf, ...}`` in tree order (orbax's item layout)."""
    return {f"{i:06d}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(tree))}


def unflatten_like(tree: Any, leaves: dict[str, Any]) -> Any:
    """The inverse of :func:`flat_leaves`: ``leaves`` put back into the structure of ``tree``."""
    values = [jnp.asarray(leaves[k]) for k in sorted(leaves)]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), values)


class TrainingCheckpoints:
    """Checkpoints in ``directory`` (created), the newest ``keep`` kept; steps are numbered by the caller."""

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def save(self, step: int, arrays: dict[str, Any], record: dict) -> None:
        """Write ``arrays`` (name -> PyTree of arrays) and the JSON-able ``record`` as checkpoint ``step``."""
        ocp = self._ocp
        items = {name: flat_leaves(tree) for name, tree in arrays.items()}
        args = {name: ocp.args.StandardSave(v) for name, v in items.items() if v}
        self.manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(record), **args))
        self.manager.wait_until_finished()

    def restore(self, like: dict[str, Any], check: Any = None) -> tuple[dict[str, Any], dict] | None:
        """The newest readable checkpoint as (name -> PyTree shaped like ``like[name]``, record), or None.

        ``check(record)`` may raise to refuse a checkpoint that belongs to another run (the error propagates:
        that is a wrong directory, not a damaged file). Unreadable checkpoints are moved aside with a warning.
        """
        ocp = self._ocp
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                record = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception as err:  # noqa: BLE001 - any failure to read means a damaged checkpoint
                self._discard(step, err)
                continue
            if check is not None:
                check(record)
            items = {name: flat_leaves(tree) for name, tree in like.items()}
            args = {name: ocp.args.StandardRestore(v) for name, v in items.items() if v}
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**args)) if args else {}
            except Exception as err:  # noqa: BLE001
                self._discard(step, err)
                continue
            return {name: unflatten_like(tree, restored.get(name, {})) for name, tree in like.items()}, record
        return None

    def _discard(self, step: int, err: Exception) -> None:
        older = [s for s in self.manager.all_steps() if s < step]
        aside = self.directory.with_name(self.directory.name + ".unreadable") / str(step)
        while aside.exists():
            aside = aside.with_name(aside.name + "_")
        reason = " ".join(str(err).split())[:200]
        warnings.warn(
            f"checkpoint {step} in {self.directory} is unreadable ({type(err).__name__}: {reason}); moved to {aside}; "
            + (f"falling back to checkpoint {max(older)}" if older else "no older one: starting afresh"),
            RuntimeWarning,
            stacklevel=3,
        )
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), str(aside))
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()
