"""Large-grid runs of the soil column: lazy gridded forcing in blocks of time x space, land columns packed and
sharded over all devices, outputs written block by block into a zarr store, an orbax checkpoint after every
time block.

A killed run started again with the same configuration resumes after the last checkpointed time block; every
block is written to its own time (and latitude) region of the output, so a block redone after a crash
overwrites identical values and the result equals an uninterrupted run. The store and the checkpoints carry the
run's fingerprint (configuration and input contents): another run, or the same configuration on changed input
files, is refused instead of mixing results; nothing that is not a dam store is ever replaced.

Several processes (``jax.distributed``) share one run by its spatial blocks, each with its own checkpoints
(:mod:`dam.grid_processes`); one process runs as it always did.

Memory does not grow with the length of the forcing: one block of forcing (``time_block`` steps x the grid
rows of one spatial block, all variables of those rows including sea cells) and one block of outputs are in
memory at a time, plus the parameters and state of all land columns. ``column_block`` bounds the land columns
per spatial block, so a grid whose time block does not fit in memory still runs.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from dam import physics
from dam.grid_inputs import check_inputs, open_input
from dam.grid_output import BlockWriter, create_output, write_block
from dam.grid_processes import (
    PROCESS_FOLDER,
    Processes,
    agreed,
    check_process_count,
    from_first,
    gate,
    open_checkpoints,
    remove_stale,
    stale_owners,
    take_locks,
)
from dam.grid_run_config import (  # re-exported: the configuration of a grid run
    FORCING as FORCING,
)
from dam.grid_run_config import (
    OUTPUTS as OUTPUTS,
)
from dam.grid_run_config import (
    PER_COLUMN as PER_COLUMN,
)
from dam.grid_run_config import (
    PER_LAYER as PER_LAYER,
)
from dam.grid_run_config import (
    GridRunConfig as GridRunConfig,
)
from dam.grid_run_config import (
    GridRunError as GridRunError,
)
from dam.grid_run_config import (
    SoilOptionsConfig as SoilOptionsConfig,
)
from dam.io_safety import check_outputs, relation, remove_path
from dam.physics.guards import locate
from dam.precision import resolve_dtype
from dam.run_folder import RunFolderError
from dam.sharding import column_mesh, pad_axis, run_sharded

_open = open_input


def _pack(field: xr.DataArray, land: np.ndarray, name: str) -> np.ndarray:
    """(…, lat, lon) -> (land columns, …), checking the land values."""
    values = np.asarray(field.transpose(..., "lat", "lon").values, dtype=np.float64)
    packed = values.reshape(*values.shape[:-2], -1)[..., land]
    if not np.all(np.isfinite(packed)):
        raise GridRunError(f"{name} has non-finite values over land")
    return np.moveaxis(packed, -1, 0)


def load_columns(static: xr.Dataset) -> tuple[np.ndarray, physics.SoilGrid, physics.SoilParams, physics.SoilState]:
    """Land indices (into the flattened lat-lon grid), grid, parameters and initial state of the land columns."""
    for name in ("land_mask", *PER_LAYER, *PER_COLUMN, "t_init", "smc_init", "sh2o_init"):
        if name not in static:
            raise GridRunError(f"static file: missing variable {name!r}")
    land = np.flatnonzero(np.asarray(static["land_mask"].transpose("lat", "lon").values).ravel() > 0)
    if land.size == 0:
        raise GridRunError("static file: land_mask has no land cell")
    zsoil = np.asarray(static["zsoil"].values, dtype=np.float64)
    params = physics.SoilParams(**{n: _pack(static[n], land, n) for n in (*PER_LAYER, *PER_COLUMN)})
    state = physics.SoilState(*(_pack(static[f"{n}_init"], land, f"{n}_init") for n in ("t", "smc", "sh2o")))
    from dam.cases import validate_params

    validate_params(params, state)
    return land, physics.SoilGrid(zsoil=zsoil), params, state


def _band_rows(land_mask: np.ndarray, column_block: int | None, processes: int = 1) -> int:
    """Latitude rows per spatial block (at least one row). One process: the most rows such that no block holds
    more than ``column_block`` land cells. Several: the rows that give the least work to the busiest process,
    whose bands (every ``processes``-th one) are each padded to the widest band; ties go to fewer, larger bands."""
    n_lat = land_mask.shape[0]
    per_row = land_mask.sum(axis=1)
    best = None
    for rows in range(n_lat, 0, -1):
        loads = np.add.reduceat(per_row, np.arange(0, n_lat, rows))
        if column_block is not None and loads.max() > column_block and rows > 1:
            continue
        if processes == 1:
            return rows
        cost = -(-np.count_nonzero(loads) // processes) * loads.max()
        if best is None or cost < best[0]:
            best = (cost, rows)
    return 1 if best is None else best[1]


def _forcing_block(
    forcing: xr.Dataset, land: np.ndarray, start: int, stop: int, rows: slice | None = None
) -> physics.SoilForcing:
    """Forcing of the land cells ``land`` (flat indices into the lat-lon grid of ``rows``) for steps
    ``start:stop``, time-major ``(time, land, ...)``."""
    missing = [name for name in FORCING if name not in forcing]
    if missing:
        raise GridRunError(f"forcing file: missing variable {missing[0]!r}")
    # Only the forcing variables of this block are read from disk, never the other variables of the file.
    block = forcing[list(FORCING)].isel(time=slice(start, stop), lat=rows if rows is not None else slice(None))
    block = block.load()
    fields = {}
    for name in FORCING:
        values = _pack(block[name].transpose("time", ..., "lat", "lon"), land, name)  # (land, time, ...)
        fields[name] = np.moveaxis(values, 0, 1)  # (time, land, ...)
    if np.any(fields["qinsurf_mps"] < 0):
        raise GridRunError("forcing file: qinsurf_mps must be >= 0")
    return physics.SoilForcing(**fields)


def _check_block(states: Any, smcmax: Any, forcing: xr.Dataset, start: int, land: np.ndarray, static: xr.Dataset):
    """Stop with the variable, time and grid cell named where a block's states leave physical bounds."""
    found = locate(states.t, states.smc, states.sh2o, np.asarray(smcmax))
    if found is None:
        return
    step, column = start + found.column[0], int(land[found.column[1]])
    lat, lon = np.unravel_index(column, (static.sizes["lat"], static.sizes["lon"]))
    when = str(np.asarray(forcing["time"].values[step]))[:19]
    where = f"lat {float(static['lat'][lat]):g}, lon {float(static['lon'][lon]):g}"
    raise GridRunError(
        f"{found.variable} = {found.value:.6g} at step {step} ({when}), {where}, layer {found.layer}: {found.rule}; "
        "check the forcing and parameters there"
    )


def _observe(state: physics.SoilState, fluxes: physics.SoilFluxes) -> tuple:
    return state, fluxes


def _describe_run(attrs: dict) -> str:
    return f"run {attrs.get('run_fingerprint')} (from {attrs.get('run_config', '?')}, {attrs.get('run_created', '?')})"


def _store_owner(path: Path) -> dict | None:
    """The run attributes of the store at ``path``; None where nothing (or an empty folder) is there.

    Raises
    ------
    GridRunError
        For anything else (a file, a folder that is not a dam grid-run store): dam never deletes it.
    """
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return None
    try:
        attrs = dict(xr.open_zarr(path).attrs)
    except Exception:  # noqa: BLE001 - any unreadable store is foreign
        attrs = {}
    if "run_fingerprint" not in attrs:
        raise GridRunError(f"output {path} exists and is not a dam grid-run store: dam will not replace it")
    return attrs


def _checkpoint_folder_is_ours(folder: Path) -> None:
    """Refuse a checkpoint folder holding anything but checkpoints (named by their number; a save in progress:
    NUMBER.orbax-checkpoint-tmp-...), the folders of a multi-process run (process-K) and hidden files."""
    if not folder.is_dir():
        return
    foreign = [p.name for p in folder.iterdir() if not p.name.startswith(".") and not p.name.split(".")[0].isdigit()
               and not PROCESS_FOLDER.match(p.name)]  # fmt: skip
    if foreign:
        raise GridRunError(f"checkpoint_dir {folder} holds files that are not dam checkpoints ({foreign[:3]})")


def _check_paths(config: GridRunConfig, procs: Processes) -> None:
    """Inputs exist; the output store and the checkpoints neither overlap each other nor touch an input, and
    hold nothing but dam results."""
    for key in ("static", "forcing"):
        if not Path(getattr(config, key)).exists():
            raise GridRunError(f"missing file {getattr(config, key)} ({key})")
    inputs = [config.static, config.forcing, *([config.source] if config.source else [])]
    check_outputs([], inputs=inputs, folders=[config.output], what="output")
    check_outputs([], inputs=inputs, folders=[config.checkpoint_dir], what="checkpoint_dir")
    how = relation(config.checkpoint_dir, config.output)
    if how is not None:
        raise GridRunError(f"checkpoint_dir {config.checkpoint_dir} {how} the output store: use separate folders")
    _store_owner(Path(config.output))
    _checkpoint_folder_is_ours(Path(config.checkpoint_dir))
    _checkpoint_folder_is_ours(procs.checkpoint_folder(config.checkpoint_dir))


def _owned_store(config: GridRunConfig, fingerprint: str, overwrite: bool, procs: Processes) -> dict | None:
    """The attributes of the output store if it holds this run (None: no store, or another run's store that
    ``overwrite`` replaces); another run's store without ``overwrite`` is refused naming both runs, and this
    run's store is refused to another process count."""
    store = _store_owner(Path(config.output))
    if store is not None and store["run_fingerprint"] == fingerprint:
        check_process_count(store, procs, config.output, config.checkpoint_dir)
    if store is None or store["run_fingerprint"] == fingerprint or overwrite:
        return store if store is not None and store["run_fingerprint"] == fingerprint else None
    this = f"this configuration is run {fingerprint}" + (f" (from {Path(config.source).name})" if config.source else "")
    old = json.loads(store.get("run_parts", "{}"))  # absent in stores of dam before it was recorded
    changed = [k if k == "configuration" else f"{k} file" for k, v in config.parts().items() if old.get(k, v) != v]
    raise RunFolderError(
        f"output {config.output} holds the results of {_describe_run(store)}; {this}: its "
        f"{' and '.join(changed or ['configuration or input files'])} changed. Choose another output and "
        "checkpoint_dir, or pass --overwrite to replace that run"
    )


def grid_run(
    config: GridRunConfig,
    *,
    progress: bool = True,
    stop_after_blocks: int | None = None,
    mesh: Any = None,
    overwrite: bool = False,
) -> dict:
    """Run (or resume) a grid run. ``stop_after_blocks`` ends after that many time blocks of this call, as a
    crash after a checkpoint would (used to test resuming). Returns a summary.

    The output store and checkpoints belong to one run (:meth:`GridRunConfig.fingerprint`: configuration and
    input contents). Started again with the same run, it resumes; a store or checkpoints of another run are
    refused (both runs named) unless ``overwrite``; anything that is not a dam store is never replaced. One
    run at a time (a lock in ``checkpoint_dir``). Under ``jax.distributed`` every process calls this with the
    same configuration and runs its share of the spatial blocks (:mod:`dam.grid_processes`)."""
    procs = Processes.current()

    def inputs() -> str:
        check_inputs(config)
        return config.fingerprint()

    def check() -> None:
        load_columns(_open(config.static))  # the columns' parameters and state, before anything is created
        _owned_store(config, fingerprint, overwrite, procs)  # refused before anything is created

    agreed(procs, "paths", lambda: _check_paths(config, procs))
    fingerprint = from_first(procs, "inputs", inputs)  # both read whole: once, not once per process
    agreed(procs, "checked", check)
    with ExitStack() as locks:
        agreed(procs, "locked", lambda: take_locks(locks, config.checkpoint_dir, procs))
        return _grid_run(config, fingerprint, procs, progress=progress, stop_after_blocks=stop_after_blocks,
                         mesh=mesh, overwrite=overwrite)  # fmt: skip


def _bands(land: np.ndarray, n_lat: int, n_lon: int, band_rows: int) -> list[tuple[slice, int, int]]:
    """Spatial blocks: (latitude rows, first and end index into the packed land columns) of each band of
    ``band_rows`` rows that holds land (``land`` is sorted row-major)."""
    bands = []
    for r0 in range(0, n_lat, band_rows):
        r1 = min(r0 + band_rows, n_lat)
        lo, hi = np.searchsorted(land, [r0 * n_lon, r1 * n_lon])
        if hi > lo:
            bands.append((slice(r0, r1), int(lo), int(hi)))
    return bands


def _checked_owner(ckpt_fp: str | None, ckpt_path: Path, fingerprint: str, overwrite: bool) -> str | None:
    """``ckpt_fp``, the fingerprint of the run that wrote the checkpoints in ``ckpt_path`` (None: none), refused
    when it is another run's (unless ``overwrite``)."""
    if ckpt_fp is not None and ckpt_fp != fingerprint and not overwrite:
        raise RunFolderError(
            f"checkpoints in {ckpt_path} belong to another run ({ckpt_fp}); this configuration is run {fingerprint}."
            " Choose another checkpoint_dir, or pass --overwrite to replace that run"
        )
    return ckpt_fp


def _start(config: GridRunConfig, fingerprint: str, procs: Processes, overwrite: bool, create: Any) -> tuple:
    """Open this process's checkpoints and decide, in every process alike, whether the run resumes; process 0
    (re)creates the store (``create()``) when it does not hold this run. Returns (checkpoints, resume)."""

    def check() -> tuple:
        store = _owned_store(config, fingerprint, overwrite, procs)  # again, now that the locks are held
        ckpt = open_checkpoints(config.checkpoint_dir, procs)
        ckpt_path = procs.checkpoint_folder(config.checkpoint_dir)
        if procs.index == 0:  # those of a run with another process count, removed if the run starts afresh
            for path, owner in stale_owners(config.checkpoint_dir, procs).items():
                _checked_owner(owner, path, fingerprint, overwrite)
        return ckpt, store, _checked_owner(ckpt.owner(), ckpt_path, fingerprint, overwrite)

    ckpt, store, ckpt_fp = agreed(procs, "opened", check)  # every process has read the store before it changes
    resume = store is not None and ckpt_fp == fingerprint

    def prepare() -> None:
        if not resume:  # a fresh start: this run's own (or, with overwrite, the replaced run's) checkpoints
            ckpt.clear()
        # One process: a store without checkpoints is made anew. Several: every process without checkpoints
        # rewrites its own regions of this run's store.
        if procs.index == 0 and (store is None or (procs.count == 1 and not resume)):
            if Path(config.output).exists():
                remove_path(config.output)  # this run's store, or another run's replaced as asked (overwrite)
            remove_stale(config.checkpoint_dir, procs)
            create()

    agreed(procs, "created", prepare)
    return ckpt, resume


def _grid_run(
    config: GridRunConfig, fingerprint: str, procs: Processes, *, progress: bool, stop_after_blocks: int | None,
    mesh: Any, overwrite: bool
) -> dict:  # fmt: skip
    dtype = resolve_dtype(config.dtype)
    static = _open(config.static)
    land, grid, params, state0 = load_columns(static)
    n_lat, n_lon = static.sizes["lat"], static.sizes["lon"]
    land_mask = np.zeros(n_lat * n_lon, bool)
    land_mask[land] = True
    band_rows = _band_rows(land_mask.reshape(n_lat, n_lon), config.column_block, procs.count)
    # Dask chunks match the blocks, so reading one block never reads (or holds) a larger chunk.
    forcing = _open(config.forcing, chunks={"time": config.time_block, "lat": band_rows})
    n_time, block = forcing.sizes["time"], config.time_block
    n_blocks = -(-n_time // block)
    # Spatial blocks: bands of band_rows latitude rows, each with its slice of the packed land columns (land is
    # sorted row-major); all are padded to the widest, so every block has one shape and compiles once.
    bands = _bands(land, n_lat, n_lon, band_rows)
    own = bands[procs.index :: procs.count]  # this process's share; all of them for a single process

    create = lambda: create_output(config, fingerprint, static, forcing, band_rows, procs.count)  # noqa: E731
    ckpt, resume = _start(config, fingerprint, procs, overwrite, create)
    cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)  # noqa: E731
    mine = np.concatenate([np.arange(lo, hi) for _, lo, hi in own] or [np.zeros(0, int)])
    state = cast(jax.tree_util.tree_map(lambda x: x[mine], state0))  # the state of this process's columns
    first = 0
    try:
        if resume:
            restored, first = ckpt.restore(state)
            state = cast(restored)
        run = _run_blocks(config, fingerprint, static, forcing, land, bands, own, grid, cast(params), state, ckpt,
                          first=first, mesh=mesh, progress=progress, stop_after_blocks=stop_after_blocks)  # fmt: skip
    except Exception as exc:  # the other processes stop with it at their last gate
        gate(procs, "finished", exc)
        raise
    gate(procs, "finished", None)
    ckpt.close()
    summary = {
        "land_columns": int(land.size),
        "steps": n_time,
        "blocks_run": run,
        "spatial_blocks": len(bands),
        "band_rows": band_rows,
        "resumed_from_block": first,
        "finished": first + run == n_blocks or not own,
        "output": config.output,
    }
    return summary if procs.count == 1 else {**summary, "process": procs.index, "processes": procs.count}


def _run_blocks(
    config: GridRunConfig, fingerprint: str, static: xr.Dataset, forcing: xr.Dataset, land: np.ndarray,
    bands: list, own: list, grid: Any, params: Any, state: Any, ckpt: Any, *, first: int, mesh: Any,
    progress: bool, stop_after_blocks: int | None
) -> int:  # fmt: skip
    """Run the time blocks from ``first`` over this process's bands ``own`` (``state``: their columns, in that
    order); write each band's outputs and checkpoint the state after every time block. Returns the blocks run."""
    n_lon, n_time, block = static.sizes["lon"], forcing.sizes["time"], config.time_block
    n_blocks = -(-n_time // block)
    dtype = resolve_dtype(config.dtype)
    cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)  # noqa: E731
    options = config.options.build(float(forcing.attrs.get("dt_s", 1800.0)))
    width = max(hi - lo for _, lo, hi in bands)
    offsets = np.cumsum([0] + [hi - lo for _, lo, hi in own])  # each band's columns in ``state``

    def columns(tree: Any, lo: int, hi: int) -> Any:
        return pad_axis(jax.tree_util.tree_map(lambda x: x[lo:hi], tree), hi - lo, width)

    band_params = [columns(params, lo, hi) for _, lo, hi in own]
    # Local devices only: the processes never exchange arrays (one process: all devices, as before).
    mesh = column_mesh(jax.local_devices()) if mesh is None else mesh
    bar = tqdm(total=n_time, initial=min(first * block, n_time), unit="step", desc="grid-run", disable=not progress)
    t_start, done, b = time.perf_counter(), 0, first - 1
    with BlockWriter() as writer:  # a block is written while the next one runs
        for b in range(first, n_blocks if own else first):
            start = b * block
            take = min(block, n_time - start)
            finals, writes = [], []
            for (rows, lo, hi), band_params_b, off in zip(own, band_params, offsets, strict=False):
                frc = _forcing_block(forcing, land[lo:hi] - rows.start * n_lon, start, start + take, rows=rows)
                frc = pad_axis(frc, take, block)  # every block has the same shape: one compilation
                frc = pad_axis(frc, hi - lo, width, axis=1)
                # The plausibility check runs on the host per block: an in-graph error_if would pin work to one device.
                final, (states, fluxes) = run_sharded(
                    physics.run,
                    columns(state, off, off + hi - lo),
                    cast(frc),
                    band_params_b,
                    grid,
                    options,
                    mesh=mesh,
                    observe=_observe,
                    finite_check=False,
                    column_chunk=config.column_chunk,
                )
                del frc
                trim = lambda x, n=hi - lo, t=take: np.asarray(x[:t, :n])  # noqa: E731
                states, fluxes = jax.tree_util.tree_map(trim, (states, fluxes))
                _check_block(states, params.smcmax[lo:hi], forcing, start, land[lo:hi], static)
                last = jax.tree_util.tree_map(lambda x: x[-1], states) if take < block else final
                finals.append(jax.tree_util.tree_map(lambda x, n=hi - lo: np.asarray(x)[:n], last))
                writes.append(partial(write_block, config, static, land[lo:hi] - rows.start * n_lon, start, states,
                                      fluxes, rows=rows))  # fmt: skip
                done += take * (hi - lo)
                bar.set_postfix_str(f"{done / (time.perf_counter() - t_start):.3g} column-steps/s")
            state = jax.tree_util.tree_map(lambda *x: jnp.asarray(np.concatenate(x)), *finals)
            writer.submit(writes, partial(ckpt.save, b, state, fingerprint, start + take))
            bar.update(take)
            if stop_after_blocks is not None and b - first + 1 >= stop_after_blocks:
                break
    bar.close()
    return b - first + 1
