"""Large-grid runs of the soil column: lazy gridded forcing in blocks of time x space, land columns packed and
sharded over all devices, outputs written block by block into a zarr store, an orbax checkpoint after every
time block.

A killed run started again with the same configuration resumes after the last checkpointed time block; every
block is written to its own time (and latitude) region of the output, so a block redone after a crash
overwrites identical values and the result equals an uninterrupted run.

Memory does not grow with the length of the forcing: one block of forcing (``time_block`` steps x the grid
rows of one spatial block, all variables of those rows including sea cells) and one block of outputs are in
memory at a time, plus the parameters and state of all land columns. ``column_block`` bounds the land columns
per spatial block, so a grid whose time block does not fit in memory still runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
import yaml
from tqdm.auto import tqdm

from dam import physics
from dam.precision import resolve_dtype
from dam.sharding import column_mesh, pad_axis, run_sharded

PER_LAYER = ("smcmax", "smcref", "smcwlt", "bexp", "dksat", "dwsat", "psisat", "quartz")
PER_COLUMN = ("csoil", "slope", "refkdt", "refdk", "frzk", "tbot")
FORCING = ("ghf_wm2", "qinsurf_mps", "evap_mps", "etran_mps", "frozen_ground", "frz_top_ice_flux_mmps")
OUTPUTS = {  # output name -> (what, attributes)
    "soil_temperature": ("t", {"standard_name": "soil_temperature", "units": "K"}),
    "soil_moisture": ("smc", {"long_name": "total volumetric soil moisture", "units": "m3 m-3"}),
    "soil_liquid_water": ("sh2o", {"long_name": "liquid volumetric soil moisture", "units": "m3 m-3"}),
    "surface_runoff_amount": ("runoff_surface_mm", {"standard_name": "surface_runoff_amount", "units": "kg m-2"}),
    "subsurface_runoff_amount": (
        "runoff_subsurface_mm",
        {"standard_name": "subsurface_runoff_amount", "units": "kg m-2"},
    ),
}


class GridRunError(ValueError):
    """A grid-run configuration or input file is invalid."""


@dataclasses.dataclass(frozen=True)
class GridRunConfig:
    """What ``dam grid-run CONFIG.yaml`` reads (paths relative to the YAML file).

    ``static``: netCDF/zarr with ``land_mask`` (lat, lon), the soil parameters and ``t_init``, ``smc_init``,
    ``sh2o_init``; ``forcing``: netCDF/zarr with the soil-column forcing on (time, [layer,] lat, lon);
    ``output``: zarr store; ``checkpoint_dir``: orbax checkpoints; ``time_block``: steps per block;
    ``column_block``: at most this many land columns per spatial block (``None``: all); spatial blocks are
    bands of whole latitude rows, so a single row with more land than ``column_block`` is a block of its own;
    ``column_chunk``: run each block's columns in chunks of this many in turn (``physics.run(column_chunk=)``:
    a CPU cache setting, results unchanged); ``options``: :class:`dam.physics.SoilOptions` fields (``dt_s``
    defaults to the forcing's ``dt_s``).
    """

    static: str
    forcing: str
    output: str
    checkpoint_dir: str
    time_block: int = 240
    column_block: int | None = None
    column_chunk: int | None = None
    dtype: str = "float64"
    options: dict = dataclasses.field(default_factory=dict)
    outputs: tuple = tuple(OUTPUTS)

    @classmethod
    def from_yaml(cls, path: str | Path) -> GridRunConfig:
        path = Path(path)
        raw = yaml.safe_load(path.read_text()) or {}
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise GridRunError(f"{path.name}: unknown keys {sorted(unknown)}")
        missing = [k for k in ("static", "forcing", "output", "checkpoint_dir") if k not in raw]
        if missing:
            raise GridRunError(f"{path.name}: missing keys {missing}")
        for key in ("static", "forcing", "output", "checkpoint_dir"):
            raw[key] = str((path.parent / raw[key]).resolve())
        raw["outputs"] = tuple(raw.get("outputs", OUTPUTS))
        bad = [o for o in raw["outputs"] if o not in OUTPUTS]
        if bad:
            raise GridRunError(f"{path.name}: unknown outputs {bad}; choose from {list(OUTPUTS)}")
        return cls(**raw)

    def __post_init__(self) -> None:
        if int(self.time_block) < 1:
            raise GridRunError(f"time_block must be >= 1, got {self.time_block}")
        if self.column_block is not None and int(self.column_block) < 1:
            raise GridRunError(f"column_block must be >= 1 or null, got {self.column_block}")
        if self.column_chunk is not None and int(self.column_chunk) < 1:
            raise GridRunError(f"column_chunk must be >= 1 or null, got {self.column_chunk}")

    def fingerprint(self) -> str:
        """Identifies the run, so that a checkpoint of another run is never resumed."""
        keys = dataclasses.asdict(self)
        keys.pop("checkpoint_dir")
        keys.pop("column_chunk")  # changes the speed, not the results: a resume may change it
        if keys["column_block"] is None:  # fingerprints of runs from before spatial blocks stay valid
            keys.pop("column_block")
        return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _open(path: str, chunks: dict | None = None) -> xr.Dataset:
    if not Path(path).exists():
        raise GridRunError(f"missing file {path}")
    if path.endswith(".zarr"):
        return xr.open_zarr(path, chunks=chunks)
    return xr.open_dataset(path, chunks=chunks)


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


def _band_rows(land_mask: np.ndarray, column_block: int | None) -> int:
    """The most latitude rows per spatial block such that no block holds more than ``column_block`` land cells
    (at least one row)."""
    n_lat = land_mask.shape[0]
    if column_block is None:
        return n_lat
    per_row = land_mask.sum(axis=1)
    for rows in range(n_lat, 1, -1):
        if np.add.reduceat(per_row, np.arange(0, n_lat, rows)).max() <= column_block:
            return rows
    return 1


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


def _create_output(config: GridRunConfig, static: xr.Dataset, forcing: xr.Dataset, band_rows: int) -> None:
    """Create the store's metadata only (the NaN fill is lazy and never computed); chunks match the blocks."""
    import dask.array as da

    n_time = forcing.sizes["time"]
    dims4, dims3 = ("time", "layer", "lat", "lon"), ("time", "lat", "lon")
    shape = {"time": n_time, "layer": static.sizes["layer"], "lat": static.sizes["lat"], "lon": static.sizes["lon"]}
    data = {}
    for name in config.outputs:
        dims = dims4 if OUTPUTS[name][0] in ("t", "smc", "sh2o") else dims3
        block = {"time": min(config.time_block, n_time), "lat": band_rows}
        chunks = tuple(block.get(d, shape[d]) for d in dims)
        data[name] = (dims, da.full(tuple(shape[d] for d in dims), np.nan, chunks=chunks), OUTPUTS[name][1])
    coords = {"time": forcing["time"], "lat": static["lat"], "lon": static["lon"], "layer": static["layer"]}
    ds = xr.Dataset(
        data,
        coords=coords,
        attrs={"Conventions": "CF-1.10", "title": "dam grid run", "run_fingerprint": config.fingerprint()},
    )
    ds.to_zarr(config.output, mode="w", compute=False)


def _write_block(
    config: GridRunConfig,
    static: xr.Dataset,
    land: np.ndarray,
    start: int,
    states: physics.SoilState,
    fluxes: physics.SoilFluxes,
    rows: slice | None = None,
) -> None:
    """Write one block; ``land`` indexes the flattened lat-lon grid of ``rows`` (default: all rows)."""
    rows = slice(0, static.sizes["lat"]) if rows is None else rows
    n_lat, n_lon = rows.stop - rows.start, static.sizes["lon"]
    data = {}
    for name in config.outputs:
        what = OUTPUTS[name][0]
        values = np.asarray(getattr(states, what) if what in ("t", "smc", "sh2o") else getattr(fluxes, what))
        full = np.full((values.shape[0], n_lat * n_lon, *values.shape[2:]), np.nan)
        full[:, land] = values
        if values.ndim == 3:  # (time, land, layer) -> (time, layer, lat, lon)
            data[name] = (
                ("time", "layer", "lat", "lon"),
                np.moveaxis(full, 2, 1).reshape(values.shape[0], values.shape[2], n_lat, n_lon),
            )
        else:
            data[name] = (("time", "lat", "lon"), full.reshape(values.shape[0], n_lat, n_lon))
    stop = start + next(iter(data.values()))[1].shape[0]
    xr.Dataset(data).to_zarr(config.output, region={"time": slice(start, stop), "lat": rows})


def _observe(state: physics.SoilState, fluxes: physics.SoilFluxes) -> tuple:
    return state, fluxes


def grid_run(
    config: GridRunConfig, *, progress: bool = True, stop_after_blocks: int | None = None, mesh: Any = None
) -> dict:
    """Run (or resume) a grid run. ``stop_after_blocks`` ends after that many time blocks of this call, as a
    crash after a checkpoint would (used to test resuming). Returns a summary."""
    import orbax.checkpoint as ocp

    dtype = resolve_dtype(config.dtype)
    static = _open(config.static)
    land, grid, params, state0 = load_columns(static)
    n_lat, n_lon = static.sizes["lat"], static.sizes["lon"]
    land_mask = np.zeros(n_lat * n_lon, bool)
    land_mask[land] = True
    band_rows = _band_rows(land_mask.reshape(n_lat, n_lon), config.column_block)
    # Dask chunks match the blocks, so reading one block never reads (or holds) a larger chunk.
    forcing = _open(config.forcing, chunks={"time": config.time_block, "lat": band_rows})
    dt_s = float(config.options.get("dt_s", forcing.attrs.get("dt_s", 1800.0)))
    options = physics.SoilOptions(**{**config.options, "dt_s": dt_s})
    n_time, block = forcing.sizes["time"], config.time_block
    n_blocks = -(-n_time // block)

    # Spatial blocks: bands of band_rows latitude rows, each with its slice of the packed land columns (land is
    # sorted row-major); all are padded to the widest, so every block has one shape and compiles once.
    bands = []
    for r0 in range(0, n_lat, band_rows):
        r1 = min(r0 + band_rows, n_lat)
        lo, hi = np.searchsorted(land, [r0 * n_lon, r1 * n_lon])
        if hi > lo:
            bands.append((slice(r0, r1), int(lo), int(hi)))
    width = max(hi - lo for _, lo, hi in bands)

    ckpt = ocp.CheckpointManager(
        Path(config.checkpoint_dir).absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    )
    cast = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), tree)  # noqa: E731
    params, state = cast(params), cast(state0)
    first = 0
    latest = ckpt.latest_step()
    if latest is not None and Path(config.output).exists():
        restored = ckpt.restore(
            latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(state), meta=ocp.args.JsonRestore())
        )
        if restored["meta"]["fingerprint"] != config.fingerprint():
            raise GridRunError(f"checkpoints in {config.checkpoint_dir} belong to another run configuration")
        state, first = cast(restored["state"]), latest + 1
    else:
        _create_output(config, static, forcing, band_rows)

    def columns(tree: Any, lo: int, hi: int) -> Any:
        return pad_axis(jax.tree_util.tree_map(lambda x: x[lo:hi], tree), hi - lo, width)

    band_params = [columns(params, lo, hi) for _, lo, hi in bands]
    mesh = column_mesh() if mesh is None else mesh
    bar = tqdm(total=n_time, initial=min(first * block, n_time), unit="step", desc="grid-run", disable=not progress)
    t_start, done, b = time.perf_counter(), 0, first - 1
    for b in range(first, n_blocks):
        start = b * block
        take = min(block, n_time - start)
        finals = []
        for (rows, lo, hi), band_params_b in zip(bands, band_params, strict=True):
            frc = _forcing_block(forcing, land[lo:hi] - rows.start * n_lon, start, start + take, rows=rows)
            frc = pad_axis(frc, take, block)  # every block has the same shape: one compilation
            frc = pad_axis(frc, hi - lo, width, axis=1)
            # The finiteness check runs on the host per block: an in-graph error_if would pin work to one device.
            final, (states, fluxes) = run_sharded(
                physics.run,
                columns(state, lo, hi),
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
            if not all(np.all(np.isfinite(x)) for x in (states.t, states.smc, states.sh2o)):
                raise GridRunError(
                    f"state became non-finite in block {b} (steps {start}-{start + take}, latitude rows "
                    f"{rows.start}-{rows.stop}); check the forcing and parameters of that period"
                )
            last = jax.tree_util.tree_map(lambda x: x[-1], states) if take < block else final
            finals.append(jax.tree_util.tree_map(lambda x, n=hi - lo: np.asarray(x)[:n], last))
            _write_block(config, static, land[lo:hi] - rows.start * n_lon, start, states, fluxes, rows=rows)
            del states, fluxes
            done += take * (hi - lo)
            bar.set_postfix_str(f"{done / (time.perf_counter() - t_start):.3g} column-steps/s")
        state = jax.tree_util.tree_map(lambda *x: jnp.asarray(np.concatenate(x)), *finals)
        ckpt.save(
            b,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(jax.device_get(state)),
                meta=ocp.args.JsonSave({"fingerprint": config.fingerprint(), "next_step": start + take}),
            ),
        )
        ckpt.wait_until_finished()
        bar.update(take)
        if stop_after_blocks is not None and b - first + 1 >= stop_after_blocks:
            break
    bar.close()
    ckpt.close()
    return {
        "land_columns": int(land.size),
        "steps": n_time,
        "blocks_run": b - first + 1,
        "spatial_blocks": len(bands),
        "band_rows": band_rows,
        "resumed_from_block": first,
        "finished": b == n_blocks - 1,
        "output": config.output,
    }
