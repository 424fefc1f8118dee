"""Columns split across devices with JAX's SPMD machinery (``jax.sharding``), single- or multi-host.

The physics is batch-native (leading column axis), so sharding is a matter of placing arrays: every
column-indexed leaf gets ``NamedSharding(mesh, P("columns"))`` (time-major forcing ``P(None, "columns")``)
and ``jax.jit`` partitions the computation; reductions over columns (losses, the "any column needs six
water sub-steps" test) become collectives inserted by XLA. Column counts that do not divide the device count
are padded with copies of the last column and trimmed afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "columns"


def initialize_distributed(**kwargs: Any) -> None:
    """Start multi-host JAX (one process per host or per GPU) before any array is created.

    In an ``srun`` step of several tasks, ``jax.distributed.initialize()`` reads the coordinator address,
    process count and id from SLURM's environment; elsewhere pass ``coordinator_address``, ``num_processes`` and
    ``process_id`` (or set ``JAX_COORDINATOR_ADDRESS``). A single process without those settings (a batch
    script's own shell included) is left alone.
    """
    slurm_step = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in os.environ
    if kwargs or slurm_step or "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize(**kwargs)


def column_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all hosts) with the axis name ``"columns"``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def padded_size(n_columns: int, mesh: Mesh) -> int:
    """The smallest multiple of the mesh size that holds ``n_columns``."""
    size = mesh.devices.size
    return -(-n_columns // size) * size


def pad_axis(tree: Any, n: int, target: int, axis: int = 0) -> Any:
    """Pad every leaf along ``axis`` from ``n`` to ``target`` entries with copies of the last entry (columns to
    a multiple of the device count, or a short last time block to the block length)."""
    if target == n:
        return tree
    index = np.minimum(np.arange(target), n - 1)
    return jax.tree_util.tree_map(lambda x: jnp.take(jnp.asarray(x), index, axis=axis), tree)


def trim_axis(tree: Any, n: int, axis: int = 0) -> Any:
    """Undo :func:`pad_axis`."""
    return jax.tree_util.tree_map(lambda x: jax.lax.slice_in_dim(x, 0, n, axis=axis), tree)


def column_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Sharding of arrays whose ``axis`` indexes columns (``axis=1`` for time-major forcing)."""
    return NamedSharding(mesh, P(*([None] * axis), AXIS))


def shard(tree: Any, mesh: Mesh, axis: int = 0) -> Any:
    """Place every leaf of ``tree`` on ``mesh``, split along ``axis`` (must divide the mesh size)."""
    sharding = column_sharding(mesh, axis)
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on every device of ``mesh``."""
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, NamedSharding(mesh, P())), tree)


def run_sharded(
    run: Callable[..., Any],
    state0: Any,
    forcing: Any,
    params: Any,
    *static_args: Any,
    mesh: Mesh | None = None,
    **kwargs: Any,
) -> Any:
    """Call ``run(state0, forcing, params, *static_args, **kwargs)`` with the columns sharded over ``mesh``.

    ``state0`` and ``params`` have a leading column axis, ``forcing`` is time-major (T, columns, ...).
    Outputs with a leading time axis are returned as (T, columns, ...), the final state as (columns, ...),
    all trimmed to the real columns; the result equals the unsharded run.
    """
    mesh = column_mesh() if mesh is None else mesh
    n = jax.tree_util.tree_leaves(state0)[0].shape[0]
    target = padded_size(n, mesh)
    state0 = shard(pad_axis(state0, n, target), mesh)
    params = shard(pad_axis(params, n, target), mesh)
    forcing = shard(pad_axis(forcing, n, target, axis=1), mesh, axis=1)
    final, outputs = eqx.filter_jit(run)(state0, forcing, params, *static_args, **kwargs)
    return trim_axis(final, n), trim_axis(outputs, n, axis=1) if outputs is not None else None
