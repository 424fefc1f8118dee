"""The output store of a grid run: created once (metadata only), then written one time block and band at a time;
:class:`BlockWriter` writes a block in a thread while the next block runs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.codecs import ZstdCodec

from dam import physics
from dam.grid_run_config import OUTPUTS, GridRunConfig
from dam.io_safety import atomic_path


def create_output(
    config: GridRunConfig, fingerprint: str, static: xr.Dataset, forcing: xr.Dataset, band_rows: int, processes: int = 1
) -> None:
    """Create the store's metadata only (the NaN fill is lazy and never computed); chunks match the blocks. The
    store appears whole (written under a temporary name, then renamed) and records the run that owns it."""
    import dask.array as da

    n_time = forcing.sizes["time"]
    dims4, dims3 = ("time", "layer", "lat", "lon"), ("time", "lat", "lon")
    shape = {"time": n_time, "layer": static.sizes["layer"], "lat": static.sizes["lat"], "lon": static.sizes["lon"]}
    data = {}
    for name in config.outputs:
        dims = dims4 if OUTPUTS[name][0] in ("t", "smc", "sh2o") else dims3
        block = {"time": min(config.time_block, n_time), "lat": band_rows}
        chunks = tuple(block.get(d, shape[d]) for d in dims)
        fill = da.full(tuple(shape[d] for d in dims), np.nan, chunks=chunks, dtype=config.dtype)
        data[name] = (dims, fill, OUTPUTS[name][1])
    coords = {"time": forcing["time"], "lat": static["lat"], "lon": static["lon"], "layer": static["layer"]}
    attrs = {"Conventions": "CF-1.10", "title": "dam grid run", "run_fingerprint": fingerprint,
             "run_config": Path(config.source).name if config.source else "(Python)",
             "run_created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
             "run_parts": json.dumps(config.parts())}  # fmt: skip
    if processes > 1:  # its chunks and checkpoints follow the process count: a resume must keep it
        attrs["run_processes"] = processes
    # zstd level 1: as small as zarr's default (level 3) on these fields and about twice as fast to write
    encoding = {name: {"compressors": [ZstdCodec(level=1)]} for name in data}
    with atomic_path(config.output) as tmp:
        xr.Dataset(data, coords=coords, attrs=attrs).to_zarr(tmp, mode="w-", compute=False, encoding=encoding)


def write_block(
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
        full = np.full((values.shape[0], n_lat * n_lon, *values.shape[2:]), np.nan, values.dtype)
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


class BlockWriter:
    """Writes each time block's outputs in a background thread while the caller runs the next block, and calls the
    block's ``done`` (its checkpoint) only after its outputs are in the store, so a checkpoint never runs ahead of
    the store. A resumed run redoes at most the blocks after the last checkpoint, whose regions it overwrites with
    the same values. The writes of one block wait for those of the block before."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dam-grid-writer")
        self._pending: tuple[Future, Callable[[], None]] | None = None

    def submit(self, writes: list[Callable[[], None]], done: Callable[[], None]) -> None:
        """Finish the block before (its writes, then its ``done``), then start writing this one."""
        self.flush()
        self._pending = (self._pool.submit(lambda: [write() for write in writes]), done)

    def flush(self) -> None:
        """Wait for the pending block's writes (raising their error) and call its ``done``."""
        if self._pending is not None:
            future, done = self._pending
            self._pending = None
            future.result()
            done()

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Finish the last block and stop the thread. After an error of the caller (the next block failed, or
        Ctrl-C) the pending block still counts once its writes succeeded; their own error then stays unraised."""
        try:
            if exc_type is None:
                self.flush()
            elif self._pending is not None and self._pending[0].exception() is None:
                self._pending[1]()
        finally:
            self._pool.shutdown(wait=True)
