"""Synthetic gridded soil-column inputs: varied soils, climates and a land mask, no downloads needed.

Two CF-style datasets on a regular lat-lon grid:

* ``static``: ``land_mask`` (1 land, 0 sea), the soil parameters of :class:`dam.physics.SoilParams`
  (per layer ``(layer, lat, lon)``, per column ``(lat, lon)``) and the initial state ``t``, ``smc``, ``sh2o``;
* ``forcing``: the soil-column boundary fluxes of :class:`dam.physics.SoilForcing` on ``(time, [layer,] lat,
  lon)``, with a diurnal and seasonal ground heat flux that depends on latitude, stochastic storms and
  evapotranspiration, and frozen ground in cold places.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from dam.io_safety import write_netcdf
from dam.site_variables import TFRZ
from dam.soil_table import stas_parameters

START = np.datetime64("2000-01-01T00:00:00", "ns")  # time origin of the synthetic forcing (UTC)
TIME_UNITS = "seconds since 2000-01-01 00:00:00"
ZSOIL = np.array([-0.1, -0.4, -1.0, -2.0])
PER_LAYER = ("bexp", "smcmax", "smcref", "smcwlt", "psisat", "dksat", "dwsat", "quartz")
STAS = np.array([[stas_parameters(k)[f] for f in PER_LAYER] for k in range(1, 13)])  # mineral classes 1-12
UNITS = {
    "bexp": "1",
    "smcmax": "m3 m-3",
    "smcref": "m3 m-3",
    "smcwlt": "m3 m-3",
    "psisat": "m",
    "dksat": "m s-1",
    "dwsat": "m2 s-1",
    "quartz": "1",
    "csoil": "J m-3 K-1",
    "slope": "1",
    "refkdt": "1",
    "refdk": "m s-1",
    "frzk": "m",
    "tbot": "K",
    "t": "K",
    "smc": "m3 m-3",
    "sh2o": "m3 m-3",
}


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A smooth random field in [0, 1] (sum of a few random plane waves)."""
    lat, lon = np.meshgrid(np.linspace(0, 1, shape[0]), np.linspace(0, 1, shape[1]), indexing="ij")
    field = np.zeros(shape)
    for _ in range(6):
        k = rng.normal(0, scale, 2)
        field += np.cos(2 * np.pi * (k[0] * lat + k[1] * lon) + rng.uniform(0, 2 * np.pi))
    return (field - field.min()) / (np.ptp(field) + 1e-12)


def _static(n_lat: int, n_lon: int, land_fraction: float, rng: np.random.Generator) -> xr.Dataset:
    """Land mask, soil parameters and initial state (draws from ``rng`` first, as :func:`make_grid` always has)."""
    shape = (n_lat, n_lon)
    lat = np.linspace(-60, 70, n_lat)
    lon = np.linspace(-180, 180, n_lon, endpoint=False)
    land = _smooth_field(rng, shape, 1.5) < land_fraction
    soil = rng.integers(0, len(STAS), shape)
    n_layers = len(ZSOIL)
    latg = np.broadcast_to(lat[:, None], shape)
    mean_t = 300.0 - 0.45 * np.abs(latg - 10.0) + rng.normal(0, 1.5, shape)  # K, colder towards the poles

    static = xr.Dataset(
        coords={
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
            "layer": ("layer", np.arange(1, n_layers + 1)),
            "zsoil": ("layer", ZSOIL, {"units": "m", "long_name": "depth of layer bottom"}),
        }
    )
    static["land_mask"] = (("lat", "lon"), land.astype(np.int8), {"long_name": "1 = land column, 0 = not run"})
    for j, name in enumerate(PER_LAYER):
        values = np.broadcast_to(STAS[soil, j][None], (n_layers, *shape)).copy()
        static[name] = (("layer", "lat", "lon"), values, {"units": UNITS[name]})
    for name, value in (("csoil", 2.0e6), ("slope", 0.1), ("refkdt", 3.0), ("refdk", 2.0e-6), ("frzk", 0.15)):
        static[name] = (("lat", "lon"), np.full(shape, value), {"units": UNITS[name]})
    static["tbot"] = (("lat", "lon"), mean_t, {"units": "K"})
    smcmax = STAS[soil, 1]
    wetness = 0.45 + 0.45 * _smooth_field(rng, shape, 1.0)
    smc = np.stack([wetness * smcmax * (0.9 + 0.05 * k) for k in range(n_layers)])
    t0 = np.stack([mean_t + 4.0 - 2.0 * k for k in range(n_layers)])
    sh2o = np.where(t0 < TFRZ, 0.6 * smc, smc)
    for name, values in (("t", t0), ("smc", smc), ("sh2o", sh2o)):
        static[f"{name}_init"] = (("layer", "lat", "lon"), values, {"units": UNITS[name]})
    return static


def _forcing(static: xr.Dataset, time: np.ndarray, rng: np.random.Generator) -> xr.Dataset:
    """Forcing at the step ends ``time`` (s after :data:`START`); the climate follows ``static`` (latitude,
    ``tbot``). The time coordinate holds the dates (CF ``seconds since START``)."""
    lat, lon = static["lat"].values, static["lon"].values
    shape = (lat.size, lon.size)
    latg = np.broadcast_to(lat[:, None], shape)
    mean_t = static["tbot"].values
    n_steps = time.size
    hours = time / 3600.0
    day = hours[:, None, None] / 24.0
    phase = lon[None, None, :] / 360.0
    diurnal = np.sin(2 * np.pi * (day + phase))
    seasonal = np.sin(2 * np.pi * day / 365.0 - np.sign(latg)[None] * np.pi / 2)
    amplitude = 40.0 + 40.0 * np.abs(latg)[None] / 70.0
    ghf = amplitude * (0.8 * diurnal + 0.3 * seasonal) + rng.normal(0, 8, (n_steps, *shape))
    storms = rng.uniform(0, 1, (n_steps, *shape)) < 0.03
    rain = storms * rng.exponential(4e-6, (n_steps, *shape))
    cold = (mean_t[None] + 6.0 * diurnal) < TFRZ
    et = np.maximum(0.0, 3e-8 * (1.0 + diurnal)) * (~cold)
    roots = np.array([0.4, 0.3, 0.2, 0.1])
    ends = START + (np.asarray(time) * 1e9).astype("timedelta64[ns]")
    forcing = xr.Dataset(
        coords={
            "time": ("time", ends, {"standard_name": "time", "axis": "T", "long_name": "end of the step (UTC)"}),
            "lat": static.lat,
            "lon": static.lon,
            "layer": static.layer,
        }
    )
    forcing["ghf_wm2"] = (("time", "lat", "lon"), ghf, {"units": "W m-2", "long_name": "ground heat flux, down"})
    forcing["qinsurf_mps"] = (("time", "lat", "lon"), rain, {"units": "m s-1"})
    forcing["evap_mps"] = (("time", "lat", "lon"), 0.5 * et, {"units": "m s-1"})
    forcing["etran_mps"] = (
        ("time", "layer", "lat", "lon"),
        0.5 * et[:, None] * roots[None, :, None, None],
        {"units": "m s-1"},
    )
    forcing["frozen_ground"] = (("time", "lat", "lon"), cold.astype(np.float64), {"units": "1"})
    forcing["frz_top_ice_flux_mmps"] = (("time", "lat", "lon"), np.where(cold, 1e-6, 0.0), {"units": "kg m-2 s-1"})
    forcing["time"].encoding = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "float64"}
    return forcing


def _attrs(dt_s: float, seed: int) -> dict:
    return {"Conventions": "CF-1.10", "title": "dam synthetic soil-column grid", "dt_s": dt_s, "seed": seed}


def make_grid(
    n_lat: int = 16,
    n_lon: int = 24,
    n_steps: int = 480,
    dt_s: float = 1800.0,
    land_fraction: float = 0.6,
    seed: int = 0,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Synthetic static fields and forcing, ``(static, forcing)``, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    static = _static(n_lat, n_lon, land_fraction, rng)
    forcing = _forcing(static, np.arange(1, n_steps + 1) * dt_s, rng)
    forcing.attrs = static.attrs = _attrs(dt_s, seed)
    return static, forcing


def write_grid(
    directory: str | Path,
    n_lat: int = 16,
    n_lon: int = 24,
    n_steps: int = 480,
    *,
    block_steps: int = 240,
    dt_s: float = 1800.0,
    land_fraction: float = 0.6,
    seed: int = 0,
    compressed: bool = True,
    lat_chunk: int | None = None,
) -> tuple[Path, Path]:
    """Write ``static.nc`` and ``forcing.zarr`` into ``directory``, the forcing ``block_steps`` steps at a time.

    Memory stays at one block of forcing however long the series, so forcing larger than RAM can be made for
    tests and benchmarks. The zarr store is chunked ``(block_steps, [layer,] lat_chunk, lon)`` (default: all
    latitudes in one chunk). The static fields
    equal :func:`make_grid`'s for the same arguments; the forcing has the same climate but its noise is drawn
    per block (deterministic for a seed and ``block_steps``). ``compressed=False`` stores the arrays raw, so the
    store's size on disk is the size of the forcing in memory. Returns the two paths.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    static = _static(n_lat, n_lon, land_fraction, np.random.default_rng(seed))
    static.attrs = _attrs(dt_s, seed)
    static_path, forcing_path = directory / "static.nc", directory / "forcing.zarr"
    write_netcdf(static, static_path)
    # zarr 3 warns that consolidated metadata (which xarray writes and reads fastest) is not in its spec.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        chunks = {"time": block_steps, "lat": lat_chunk or n_lat}
        _append_blocks(forcing_path, static, n_steps, chunks, dt_s, seed, compressed)
    return static_path, forcing_path


def _append_blocks(
    path: Path, static: xr.Dataset, n_steps: int, chunks: dict, dt_s: float, seed: int, compressed: bool
) -> None:
    block_steps = chunks["time"]
    for start in range(0, n_steps, block_steps):
        time = np.arange(start + 1, min(start + block_steps, n_steps) + 1) * dt_s
        block = _forcing(static, time, np.random.default_rng([seed, start]))
        block.attrs = _attrs(dt_s, seed)
        if start == 0:
            encoding = {} if compressed else {name: {"compressors": None} for name in block.data_vars}
            block.chunk(chunks).to_zarr(path, mode="w", encoding=encoding)
        else:
            block.drop_vars(["lat", "lon", "layer"]).chunk(chunks).to_zarr(path, append_dim="time")
