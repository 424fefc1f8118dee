"""The input files of a grid run, opened and cross-checked before anything is created or locked: a truncated
file, a forcing on another grid or with broken time stamps, a fractional land mask or inf over land is one
:class:`dam.grid_run_config.GridRunError` naming the file and the variable, never a traceback or a run that
silently pairs the wrong cells or steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from dam.grid_run_config import FORCING, GridRunConfig, GridRunError


def open_input(path: str, chunks: dict | None = None) -> xr.Dataset:
    """A grid input (netCDF, or a zarr store by its ``.zarr`` name), lazily."""
    if not Path(path).exists():
        raise GridRunError(f"missing file {path}")
    try:
        if path.endswith(".zarr"):
            return xr.open_zarr(path, chunks=chunks)
        return xr.open_dataset(path, chunks=chunks)
    except (OSError, ValueError, KeyError) as err:  # truncated, not netCDF, no engine recognises it
        text = " ".join(str(err).split())[:200]
        raise GridRunError(
            f"{path} cannot be read as {'zarr' if path.endswith('.zarr') else 'netCDF'} ({text})"
        ) from None


def _check_time(forcing: xr.Dataset, dt_s: float | None, where: str) -> None:
    if "time" not in forcing.dims:
        raise GridRunError(f"{where}: no 'time' dimension")
    times = np.asarray(forcing["time"].values)
    if times.size < 1:
        raise GridRunError(f"{where}: no time steps")
    steps = np.diff(times)
    if np.issubdtype(times.dtype, np.datetime64):
        steps = steps / np.timedelta64(1, "s")
    if np.any(steps <= 0):
        k = int(np.flatnonzero(steps <= 0)[0])
        raise GridRunError(f"{where}: time is not strictly increasing (step {k + 1}: {times[k]} then {times[k + 1]})")
    if dt_s is not None and np.issubdtype(times.dtype, np.datetime64) and not np.allclose(steps, dt_s):
        k = int(np.flatnonzero(~np.isclose(steps, dt_s))[0])
        raise GridRunError(f"{where}: time step {steps[k]:g} s at {times[k + 1]} is not dt_s = {dt_s:g} s")


def check_inputs(config: GridRunConfig) -> None:
    """Open both inputs and check what pairs them (grid, variables, time stamps, land values).

    The forcing is read once in its chunks to find non-finite values over land (memory does not grow with the
    file); the columns' parameters and initial state are checked by :func:`dam.grid_run.load_columns`.
    """
    static, forcing = open_input(config.static), open_input(config.forcing, chunks={})
    for name, ds in (("static", static), ("forcing", forcing)):
        for dim in ("lat", "lon"):
            if dim not in ds.dims:
                raise GridRunError(f"{name} file {getattr(config, name)}: no {dim!r} dimension")
    for dim in ("lat", "lon"):
        a, b = np.asarray(static[dim].values), np.asarray(forcing[dim].values)
        if a.shape != b.shape or not np.allclose(a, b):
            raise GridRunError(f"forcing file: {dim} ({b.size} values, {b[:3]}...) differs from the static file's "
                               f"({a.size} values, {a[:3]}...): both must be on one grid")  # fmt: skip
    if "land_mask" in static:
        mask = np.asarray(static["land_mask"].values)
        if not np.isin(mask, (0, 1)).all():
            raise GridRunError(f"static file: land_mask must be 0 (sea) or 1 (land), got {np.unique(mask)[:5]}")
    missing = [name for name in FORCING if name not in forcing]
    if missing:
        raise GridRunError(f"forcing file: missing variable {missing[0]!r}")
    dt_s = config.options.dt_s or forcing.attrs.get("dt_s")
    _check_time(forcing, None if dt_s is None else float(dt_s), "forcing file")
    land = static["land_mask"] > 0 if "land_mask" in static else True
    for name in FORCING:
        bad = (~np.isfinite(forcing[name]) & land).any().compute()
        if bool(bad):
            raise GridRunError(f"forcing file: {name} has non-finite values over land")
