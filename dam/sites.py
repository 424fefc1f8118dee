"""Station sites: a folder format, validated forcing/observation Datasets, converters and sensor-to-layer mapping.

A site is a folder (see ``docs/site_format.md``)::

    <site>/site.yaml          metadata (location, time step, heights, soil/vegetation, licence, notes)
    <site>/forcing.nc         CF netCDF forcing, UTC, time stamp = END of each interval, no gaps
    <site>/observations.nc    optional CF netCDF soil/flux observations (NaN where missing)

:func:`load_site` returns a :class:`Site` (metadata, forcing Dataset, observations Dataset or ``None``) after
checking everything; any problem raises :class:`SiteError` naming the variable, key or file.

Canonical variables after loading (float64, SI units; dims ``time`` and, for soil series, a depth dimension):

==================  ================================================  ============  =============
name                standard_name                                      units         dims
==================  ================================================  ============  =============
T_air               air_temperature                                    K             time
q_air               specific_humidity                                  kg kg-1       time
p_sfc               surface_air_pressure                               Pa            time
wind                wind_speed                                         m s-1         time
sw_down             surface_downwelling_shortwave_flux_in_air          W m-2         time
lw_down             surface_downwelling_longwave_flux_in_air           W m-2         time
precip              precipitation_flux                                 kg m-2 s-1    time
soil_moisture       volume_fraction_of_condensed_water_in_soil         m3 m-3        time, sm_depth
soil_temperature    soil_temperature                                   K             time, st_depth
==================  ================================================  ============  =============

plus optional flux observations (:data:`OBSERVATION_VARIABLES`). Forcing values are means over the interval
that ends at the time stamp (as the Noah-MP/HRLDAS driver uses them: the record stamped t_k drives the step
(t_k - dt, t_k]); the bounds are stored in ``time_bnds``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from .schema import ConfigError, validate
from .sensors import SensorError as SensorError  # re-exported: the sensor mapping lives in dam.sensors
from .sensors import SensorMapping, map_sensors_to_layers, model_at_sensors
from .site_schema import FORMAT_VERSION, InitialState, SiteYaml, SoilColumn, migrate_v1


class SiteError(ValueError):
    """A site folder, Dataset or converter input is missing something or holds invalid values."""


# --------------------------------------------------------------------------------------------------------------
# Variable catalogue
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarSpec:
    """A canonical variable: CF standard name, canonical units, long name and the valid range (an error outside)."""

    standard_name: str
    units: str
    long_name: str
    valid_min: float
    valid_max: float
    depth_dim: str | None = None


FORCING_VARIABLES: dict[str, VarSpec] = {
    "T_air": VarSpec("air_temperature", "K", "air temperature at the reference height", 180.0, 340.0),
    "q_air": VarSpec("specific_humidity", "kg kg-1", "specific humidity at the reference height", 0.0, 0.06),
    "p_sfc": VarSpec("surface_air_pressure", "Pa", "surface air pressure", 30000.0, 110000.0),
    "wind": VarSpec("wind_speed", "m s-1", "wind speed at the reference height", 0.0, 100.0),
    "sw_down": VarSpec(
        "surface_downwelling_shortwave_flux_in_air", "W m-2", "downward shortwave radiation", 0.0, 1400.0
    ),
    "lw_down": VarSpec("surface_downwelling_longwave_flux_in_air", "W m-2", "downward longwave radiation", 50.0, 700.0),
    "precip": VarSpec("precipitation_flux", "kg m-2 s-1", "total precipitation rate (rain + snow)", 0.0, 0.2),
}

OBSERVATION_VARIABLES: dict[str, VarSpec] = {
    "soil_moisture": VarSpec(
        "volume_fraction_of_condensed_water_in_soil",
        "m3 m-3",
        "volumetric soil water content (liquid + ice) at the sensor depth",
        0.0,
        1.0,
        depth_dim="sm_depth",
    ),
    "soil_temperature": VarSpec(
        "soil_temperature", "K", "soil temperature at the sensor depth", 200.0, 350.0, depth_dim="st_depth"
    ),
    "sensible_heat_flux": VarSpec(
        "surface_upward_sensible_heat_flux", "W m-2", "sensible heat flux, positive upward", -1000.0, 1500.0
    ),
    "latent_heat_flux": VarSpec(
        "surface_upward_latent_heat_flux", "W m-2", "latent heat flux, positive upward", -1000.0, 1500.0
    ),
    "ground_heat_flux": VarSpec(
        "downward_heat_flux_in_soil", "W m-2", "ground heat flux, positive into the soil", -1000.0, 1000.0
    ),
    "net_radiation": VarSpec(
        "surface_net_downward_radiative_flux", "W m-2", "net radiation, positive downward", -500.0, 1400.0
    ),
    "surface_temperature": VarSpec("surface_temperature", "K", "radiometric surface temperature", 180.0, 360.0),
    "evapotranspiration": VarSpec(
        "water_evapotranspiration_flux", "kg m-2 s-1", "evapotranspiration, positive upward", -1e-3, 1e-3
    ),
    "snow_water_equivalent": VarSpec("surface_snow_amount", "kg m-2", "snow water equivalent", 0.0, 5000.0),
    "snow_depth": VarSpec("surface_snow_thickness", "m", "snow depth", 0.0, 20.0),
}

ALL_VARIABLES = {**FORCING_VARIABLES, **OBSERVATION_VARIABLES}
SOIL_VARIABLES = ("soil_moisture", "soil_temperature")
SOIL_MOISTURE_MEASURES = ("total", "liquid")  # what a soil moisture sensor sees (SiteMeta)

#: Raw missing-value codes treated as missing when found in a variable without a _FillValue.
MISSING_CODES = (-9999.0, -6999.0, -999.9, -9999.9)

GAP_METHODS = ("error", "interpolate", "previous", "climatology")
DEFAULT_MAX_GAP = 6  # steps: the longest run interpolate/previous will fill unless told otherwise

_ZERO_C = 273.15  # K

# Unit aliases, keyed by canonical units: normalised alias -> (scale, offset), canonical = value * scale + offset.
_UNIT_TABLE: dict[str, dict[str, tuple[float, float]]] = {
    "K": {"k": (1.0, 0.0), "kelvin": (1.0, 0.0), "degk": (1.0, 0.0), "deg_k": (1.0, 0.0)},
    "kg kg-1": {"kgkg-1": (1.0, 0.0), "kg/kg": (1.0, 0.0), "1": (1.0, 0.0), "gkg-1": (1e-3, 0.0), "g/kg": (1e-3, 0.0)},
    "Pa": {"pa": (1.0, 0.0), "hpa": (100.0, 0.0), "mb": (100.0, 0.0), "mbar": (100.0, 0.0), "kpa": (1000.0, 0.0)},
    "m s-1": {"ms-1": (1.0, 0.0), "m/s": (1.0, 0.0), "kmh-1": (1 / 3.6, 0.0), "km/h": (1 / 3.6, 0.0)},
    "W m-2": {"wm-2": (1.0, 0.0), "w/m2": (1.0, 0.0), "w/m^2": (1.0, 0.0)},
    "kg m-2 s-1": {
        "kgm-2s-1": (1.0, 0.0),
        "mms-1": (1.0, 0.0),
        "mm/s": (1.0, 0.0),
        "mmh-1": (1 / 3600.0, 0.0),
        "mm/h": (1 / 3600.0, 0.0),
        "mmd-1": (1 / 86400.0, 0.0),
        "mmday-1": (1 / 86400.0, 0.0),
        "mm/day": (1 / 86400.0, 0.0),
        "mm/d": (1 / 86400.0, 0.0),
        "ms-1": (1000.0, 0.0),
    },
    "m3 m-3": {"m3m-3": (1.0, 0.0), "m3/m3": (1.0, 0.0), "1": (1.0, 0.0), "%": (0.01, 0.0), "percent": (0.01, 0.0)},
    "kg m-2": {"kgm-2": (1.0, 0.0), "mm": (1.0, 0.0)},
    "m": {"m": (1.0, 0.0), "cm": (0.01, 0.0), "mm": (1e-3, 0.0)},
}
_CELSIUS = {"degc", "c", "°c", "deg_c", "celsius", "degrees_celsius", "degreescelsius", "degreec", "degree_celsius"}


def _normalise_units(units: str) -> str:
    u = str(units).strip().lower().replace("**", "").replace("^", "").replace(" ", "").replace(".", "")
    return u.replace("meter", "m").replace("metre", "m")


def unit_conversion(units: str, canonical: str, name: str) -> tuple[float, float]:
    """``(scale, offset)`` such that ``canonical_value = value * scale + offset``.

    Raises
    ------
    SiteError
        If ``units`` cannot be converted to ``canonical`` (the message names the variable).
    """
    u = _normalise_units(units)
    if canonical == "K" and u in _CELSIUS:
        return 1.0, _ZERO_C
    table = _UNIT_TABLE.get(canonical, {})
    if u in table:
        return table[u]
    if u == _normalise_units(canonical):
        return 1.0, 0.0
    raise SiteError(f"variable {name!r}: units {units!r} cannot be converted to {canonical!r}")


# --------------------------------------------------------------------------------------------------------------
# Physical conversions (numpy, elementwise)
# --------------------------------------------------------------------------------------------------------------

EPS_WATER = 0.622  # ratio of the molar masses of water vapour and dry air, as in the HRLDAS point converter
SIGMA_SB = 5.67e-8  # Stefan-Boltzmann constant [W m-2 K-4]
SOLAR_CONSTANT = 1367.0  # W m-2
PAR_UMOL_PER_J_SW = 2.1  # umol of PAR per J of total shortwave (4.57 umol/J of PAR x ~0.46 PAR fraction)


def saturation_vapour_pressure(t_k: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure over water [Pa] (Bolton 1980), as the HRLDAS point-data converter uses it."""
    return 611.2 * np.exp(17.67 * (t_k - _ZERO_C) / (t_k - 29.65))


def specific_humidity_from_vapour_pressure(e_pa: np.ndarray, p_pa: np.ndarray) -> np.ndarray:
    """Specific humidity [kg kg-1] from vapour pressure and air pressure [Pa]: q = 0.622 e / (p - 0.378 e)."""
    return EPS_WATER * e_pa / (p_pa - (1.0 - EPS_WATER) * e_pa)


def specific_humidity_from_rh(t_k: np.ndarray, rh_percent: np.ndarray, p_pa: np.ndarray) -> np.ndarray:
    """Specific humidity [kg kg-1] from air temperature [K], relative humidity [%] and pressure [Pa]."""
    return specific_humidity_from_vapour_pressure(rh_percent / 100.0 * saturation_vapour_pressure(t_k), p_pa)


def vapour_pressure_from_specific_humidity(q: np.ndarray, p_pa: np.ndarray) -> np.ndarray:
    """Vapour pressure [Pa] from specific humidity [kg kg-1] and pressure [Pa] (inverse of the above)."""
    return q * p_pa / (EPS_WATER + (1.0 - EPS_WATER) * q)


def shortwave_from_par(par_umol: np.ndarray, umol_per_joule: float = PAR_UMOL_PER_J_SW) -> np.ndarray:
    """Downward shortwave [W m-2] from PAR [umol m-2 s-1]: SW = PAR / 2.1 (4.57 umol J-1 x PAR fraction 0.46)."""
    return par_umol / umol_per_joule


def daily_toa_shortwave(latitude_deg: float, day_of_year: np.ndarray) -> np.ndarray:
    """Daily-mean top-of-atmosphere shortwave on a horizontal surface [W m-2] (FAO-56 eqs. 21-25)."""
    phi = np.deg2rad(latitude_deg)
    angle = 2.0 * np.pi * np.asarray(day_of_year, dtype=float) / 365.0
    dr = 1.0 + 0.033 * np.cos(angle)
    decl = 0.409 * np.sin(angle - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(decl), -1.0, 1.0))
    return SOLAR_CONSTANT / np.pi * dr * (ws * np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.sin(ws))


def longwave_brutsaert_crawford_duchon(
    t_k: np.ndarray, e_pa: np.ndarray, sw_down: np.ndarray, sw_clear: np.ndarray, min_clear_sw: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """Downward longwave [W m-2] and cloud fraction [-] from air temperature, vapour pressure and shortwave.

    Clear-sky emissivity of Brutsaert (1975), eps_c = 1.24 (e[hPa] / T)^(1/7); cloud fraction from the
    shortwave transmissivity, c = 1 - SW / SW_clear clipped to [0, 1]; all-sky emissivity of Crawford &
    Duchon (1999), eps = c + (1 - c) eps_c; LW = eps sigma T^4. Where the clear-sky shortwave is below
    ``min_clear_sw`` (polar night) c is interpolated in time from the neighbouring valid values.
    """
    eps_clear = 1.24 * (np.maximum(e_pa, 1e-3) / 100.0 / t_k) ** (1.0 / 7.0)
    valid = sw_clear >= min_clear_sw
    cloud = np.clip(1.0 - sw_down / np.where(valid, sw_clear, 1.0), 0.0, 1.0)
    if not valid.all():
        if not valid.any():
            raise SiteError(
                f"lw_down: no day with clear-sky shortwave >= {min_clear_sw:g} W m-2 to estimate cloudiness"
            )
        idx = np.arange(cloud.size)
        cloud = np.where(valid, cloud, np.interp(idx, idx[valid], cloud[valid]))
    eps = cloud + (1.0 - cloud) * eps_clear
    return eps * SIGMA_SB * t_k**4, cloud


# --------------------------------------------------------------------------------------------------------------
# Dataset construction and validation
# --------------------------------------------------------------------------------------------------------------


def _time_index(times: Any) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(times)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.as_unit("ns")


def _check_time(times: pd.DatetimeIndex, what: str, step_s: float | None = None) -> float:
    """Check monotonic, unique and (if ``step_s``) regular time stamps; returns the step [s]."""
    if len(times) < 2:
        raise SiteError(f"{what}: time has fewer than 2 values")
    dt = np.diff(times.as_unit("ns").asi8) / 1e9
    if (dt == 0).any():
        i = int(np.argmax(dt == 0))
        raise SiteError(f"{what}: duplicated time stamp {times[i + 1]}")
    if (dt < 0).any():
        i = int(np.argmax(dt < 0))
        raise SiteError(f"{what}: time is not monotonic increasing ({times[i]} is followed by {times[i + 1]})")
    if step_s is not None and not np.all(dt == step_s):
        i = int(np.argmax(dt != step_s))
        raise SiteError(
            f"{what}: time step is not regular {step_s:g} s ({times[i]} -> {times[i + 1]}: {dt[i]:g} s); "
            "missing records must be present as NaN, not absent"
        )
    return float(dt[0])


def _nan_runs(x: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of NaN in a 1-D array."""
    bad = np.isnan(x).astype(np.int8)
    edges = np.diff(np.concatenate([[0], bad, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def _fill_series(
    name: str, x: np.ndarray, times: pd.DatetimeIndex, method: str, max_gap: int | None
) -> tuple[np.ndarray, int]:
    runs = _nan_runs(x)
    if not runs:
        return x, 0
    n_missing = sum(length for _, length in runs)
    longest = max(length for _, length in runs)
    hint = (
        f"forcing variable {name!r} has {n_missing} missing value(s) in {len(runs)} gap(s) "
        f"(longest {longest} steps, first at {times[runs[0][0]]})"
    )
    if method == "error":
        raise SiteError(
            hint + "; choose gaps='interpolate' (with max_gap), 'previous' or 'climatology' to fill them explicitly"
        )
    if method in ("interpolate", "previous") and max_gap is not None and longest > max_gap:
        start = next(s for s, length in runs if length == longest)
        raise SiteError(hint + f"; the gap at {times[start]} is longer than max_gap={max_gap} steps")
    y = x.copy()
    good = ~np.isnan(x)
    if method == "interpolate":
        if np.isnan(x[0]) or np.isnan(x[-1]):
            raise SiteError(hint + "; a gap at the start or end of the series cannot be interpolated")
        idx = np.arange(x.size)
        y[~good] = np.interp(idx[~good], idx[good], x[good])
    elif method == "previous":
        if np.isnan(x[0]):
            raise SiteError(hint + "; a gap at the start of the series has no previous value")
        last = np.maximum.accumulate(np.where(good, np.arange(x.size), 0))
        y = x[last]
    elif method == "climatology":
        # Mean of the valid values with the same calendar month and time of day (daily data: month only).
        key = pd.Series(times.month * 100000 + times.hour * 3600 + times.minute * 60 + times.second)
        clim = pd.Series(x).groupby(key.to_numpy()).transform("mean").to_numpy()
        if np.isnan(clim[~good]).any():
            raise SiteError(hint + "; some gaps have no valid value of the same month and time of day")
        y[~good] = clim[~good]
    else:
        raise SiteError(f"gaps must be one of {GAP_METHODS}, got {method!r}")
    return y, n_missing


def _find_variable(ds: xr.Dataset, name: str, spec: VarSpec) -> str | None:
    if name in ds.data_vars:
        return name
    hits = [v for v in ds.data_vars if ds[v].attrs.get("standard_name") == spec.standard_name]
    if len(hits) > 1:
        raise SiteError(f"variable {name!r}: several variables have standard_name {spec.standard_name!r}: {hits}")
    return hits[0] if hits else None


def _standardise_variable(da: xr.DataArray, name: str, spec: VarSpec) -> tuple[xr.DataArray, int]:
    """Convert units to canonical, replace raw missing codes by NaN, check plausibility and range."""
    if "units" not in da.attrs:
        raise SiteError(f"variable {name!r}: no units attribute (expected {spec.units!r} or convertible)")
    units = da.attrs["units"]
    scale, offset = unit_conversion(units, spec.units, name)
    values = np.asarray(da.values, dtype=np.float64)
    codes = np.isin(values, MISSING_CODES)
    n_codes = int(codes.sum())
    values = np.where(codes, np.nan, values)
    finite = values[np.isfinite(values)]
    if spec.units == "K" and finite.size:
        med = float(np.median(finite))
        if scale == 1.0 and offset == 0.0 and med < 100.0:
            raise SiteError(f"variable {name!r}: units say {units!r} but the values (median {med:.3g}) look like degC")
        if offset == _ZERO_C and med > 150.0:
            raise SiteError(f"variable {name!r}: units say {units!r} but the values (median {med:.3g}) look like K")
    values = values * scale + offset
    bad = np.isfinite(values) & ((values < spec.valid_min) | (values > spec.valid_max))
    if bad.any():
        flat = np.flatnonzero(bad.reshape(-1))
        first = np.unravel_index(flat[0], values.shape)
        where = ""
        if "time" in da.dims:
            where = f" first at {pd.Timestamp(da['time'].values[first[da.dims.index('time')]])}"
        v = values[first]
        kind = "negative" if v < 0 <= spec.valid_min else "out of range"
        raise SiteError(
            f"variable {name!r}: {int(bad.sum())} value(s) {kind} [{spec.valid_min:g}, {spec.valid_max:g}] "
            f"{spec.units} (e.g. {v:.6g}){where}"
        )
    keep = {k: v for k, v in da.attrs.items() if k not in ("units", "standard_name", "long_name", "_FillValue")}
    if scale != 1.0 or offset != 0.0:
        keep["converted_from_units"] = str(units)
    out = xr.DataArray(values, dims=da.dims, coords=da.coords)
    out.attrs = {"standard_name": spec.standard_name, "long_name": spec.long_name, "units": spec.units, **keep}
    return out, n_codes


def _time_bounds(times: pd.DatetimeIndex, step_s: float) -> xr.DataArray:
    ends = times.to_numpy()
    starts = ends - np.timedelta64(int(round(step_s * 1e9)), "ns")
    return xr.DataArray(np.stack([starts, ends], axis=-1), dims=("time", "nv"))


def standardise_forcing(
    ds: xr.Dataset, *, step_s: float | None = None, gaps: str = "error", max_gap: int | None = DEFAULT_MAX_GAP
) -> xr.Dataset:
    """Validate a forcing Dataset and return it with canonical names, SI units, float64 and bounds.

    Variables are found by canonical name or by ``standard_name``; units are converted when convertible.
    Raw missing-value codes (:data:`MISSING_CODES`) and NaN are gaps: ``gaps="error"`` raises, any other
    method of :data:`GAP_METHODS` fills them and records the method and counts in the attributes
    (``gap_fill`` on the Dataset, ``gap_fill_method``/``gap_fill_count`` on each filled variable).

    Parameters
    ----------
    ds
        Dataset with a ``time`` dimension (UTC, end of each interval).
    step_s
        Expected regular time step [s]; ``None`` takes the first difference.
    gaps
        ``"error"`` (default), ``"interpolate"`` (linear, runs of at most ``max_gap`` steps), ``"previous"``
        (repeat the last valid value, at most ``max_gap`` steps) or ``"climatology"`` (mean of the valid values
        of the same calendar month and time of day).
    max_gap
        Longest run of missing steps that ``interpolate``/``previous`` may fill; ``None``: no limit.
    """
    if gaps not in GAP_METHODS:
        raise SiteError(f"gaps must be one of {GAP_METHODS}, got {gaps!r}")
    if "time" not in ds.dims:
        raise SiteError("forcing: no 'time' dimension")
    times = _time_index(ds["time"].values)
    step = _check_time(times, "forcing", step_s)
    out = {}
    counts: dict[str, int] = {}
    codes_total = 0
    for name, spec in FORCING_VARIABLES.items():
        src = _find_variable(ds, name, spec)
        if src is None:
            raise SiteError(
                f"forcing: missing variable {name!r} (standard_name {spec.standard_name!r}, units {spec.units!r})"
            )
        da = ds[src]
        if da.dims != ("time",):
            raise SiteError(f"variable {name!r}: dims {da.dims} (expected ('time',))")
        da, n_codes = _standardise_variable(da, name, spec)
        codes_total += n_codes
        values, n_filled = _fill_series(name, da.values, times, gaps, max_gap)
        da = da.copy(data=values)
        if n_filled:
            counts[name] = n_filled
            da.attrs["gap_fill_method"] = gaps
            da.attrs["gap_fill_count"] = n_filled
        out[name] = da
    res = xr.Dataset(out, coords={"time": times.to_numpy()})
    res["time_bnds"] = _time_bounds(times, step)
    res["time"].attrs = {
        "standard_name": "time",
        "long_name": "end of the averaging interval (UTC)",
        "bounds": "time_bnds",
        "axis": "T",
    }
    attrs = {k: v for k, v in ds.attrs.items() if not k.startswith("gap_fill")}
    res.attrs = {**attrs, "time_step_s": step, "time_convention": "end of interval, UTC", "Conventions": "CF-1.8"}
    prior = ds.attrs.get("gap_fill")
    if counts:
        desc = gaps + (f" (max_gap={max_gap} steps)" if gaps in ("interpolate", "previous") else "")
        text = desc + ": " + ", ".join(f"{k} {v}" for k, v in counts.items())
        res.attrs["gap_fill"] = f"{prior}; {text}" if prior and prior != "none" else text
        res.attrs["gap_fill_total"] = int(sum(counts.values())) + int(ds.attrs.get("gap_fill_total", 0))
    else:
        res.attrs["gap_fill"] = prior if prior else "none"
        res.attrs["gap_fill_total"] = int(ds.attrs.get("gap_fill_total", 0))
    if codes_total:
        res.attrs["missing_codes_replaced"] = codes_total
    return res


def standardise_observations(ds: xr.Dataset) -> xr.Dataset:
    """Validate an observation Dataset and return canonical names, SI units and float64 (NaN kept, counted).

    Soil series have dims ``(time, depth)``; the depth coordinate (any name, units convertible to m) becomes
    ``sm_depth`` / ``st_depth`` in metres, positive down (a coordinate with ``positive: up`` or all-negative
    values is negated). Observations are never filled: each variable gets ``n_missing`` in its attributes.
    Variables outside :data:`OBSERVATION_VARIABLES` are kept unchanged.
    """
    if "time" not in ds.dims:
        raise SiteError("observations: no 'time' dimension")
    times = _time_index(ds["time"].values)
    _check_time(times, "observations")
    out: dict[str, xr.DataArray] = {}
    used: set[str] = set()
    for name, spec in OBSERVATION_VARIABLES.items():
        src = _find_variable(ds, name, spec)
        if src is None:
            continue
        used.add(src)
        da = ds[src]
        if spec.depth_dim is not None:
            other = [d for d in da.dims if d != "time"]
            if len(other) != 1 or da.dims[0] != "time":
                raise SiteError(f"variable {name!r}: dims {da.dims} (expected ('time', <depth>))")
            ddim = other[0]
            if ddim not in ds.coords:
                raise SiteError(f"variable {name!r}: depth dimension {ddim!r} has no coordinate values")
            dc = ds[ddim]
            scale, _ = unit_conversion(dc.attrs.get("units", "m"), "m", f"{name} depth coordinate {ddim!r}")
            depth = np.asarray(dc.values, dtype=np.float64) * scale
            if dc.attrs.get("positive", "down") == "up" or (depth < 0).all():
                depth = -depth
            if (depth < 0).any() or (np.diff(depth) <= 0).any():
                raise SiteError(f"variable {name!r}: sensor depths {depth.tolist()} m must be >= 0 and increasing")
            da = da.rename({ddim: spec.depth_dim}).assign_coords({spec.depth_dim: depth})
        elif da.dims != ("time",):
            raise SiteError(f"variable {name!r}: dims {da.dims} (expected ('time',))")
        da, n_codes = _standardise_variable(da, name, spec)
        da.attrs["n_missing"] = int(np.isnan(da.values).sum())
        out[name] = da
    if not out:
        raise SiteError(f"observations: none of the known variables {list(OBSERVATION_VARIABLES)} found")
    res = xr.Dataset(out, coords={"time": times.to_numpy()})
    for name in SOIL_VARIABLES:
        if name in res:
            d = OBSERVATION_VARIABLES[name].depth_dim
            res[d].attrs = {
                "standard_name": "depth",
                "long_name": f"sensor depth of {name}",
                "units": "m",
                "positive": "down",
                "axis": "Z",
            }
    for v in ds.data_vars:
        if v not in used and ds[v].dims == ("time",):  # unknown series: kept unchanged
            res[v] = ds[v].assign_coords(time=times.to_numpy())
    res["time"].attrs = {"standard_name": "time", "long_name": "end of the averaging interval (UTC)", "axis": "T"}
    res.attrs = {**ds.attrs, "Conventions": "CF-1.8"}
    return res


def make_forcing(
    times_end_utc: Any,
    step_s: float,
    values: Mapping[str, np.ndarray],
    *,
    attrs: Mapping[str, Any] | None = None,
    gaps: str = "error",
    max_gap: int | None = DEFAULT_MAX_GAP,
    var_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> xr.Dataset:
    """Build a validated forcing Dataset from canonical arrays (already in canonical units, NaN for gaps)."""
    times = _time_index(times_end_utc)
    data = {}
    for name, spec in FORCING_VARIABLES.items():
        if name not in values:
            raise SiteError(f"forcing: missing variable {name!r}")
        a = {"units": spec.units, **(var_attrs or {}).get(name, {})}
        data[name] = xr.DataArray(np.asarray(values[name], dtype=np.float64), dims=("time",), attrs=a)
    ds = xr.Dataset(data, coords={"time": times.to_numpy()}, attrs=dict(attrs or {}))
    return standardise_forcing(ds, step_s=step_s, gaps=gaps, max_gap=max_gap)


def make_observations(
    times_end_utc: Any,
    values: Mapping[str, np.ndarray],
    *,
    depths: Mapping[str, Sequence[float]] | None = None,
    attrs: Mapping[str, Any] | None = None,
    var_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> xr.Dataset:
    """Build a validated observation Dataset; soil series are ``(time, depth)`` with ``depths[name]`` in m."""
    times = _time_index(times_end_utc)
    data = {}
    coords: dict[str, Any] = {"time": times.to_numpy()}
    for name, arr in values.items():
        spec = OBSERVATION_VARIABLES[name]
        a = {"units": spec.units, **(var_attrs or {}).get(name, {})}
        if spec.depth_dim is not None:
            coords[spec.depth_dim] = xr.DataArray(
                np.asarray(depths[name], float), dims=spec.depth_dim, attrs={"units": "m", "positive": "down"}
            )
            data[name] = xr.DataArray(np.asarray(arr, np.float64), dims=("time", spec.depth_dim), attrs=a)
        else:
            data[name] = xr.DataArray(np.asarray(arr, np.float64), dims=("time",), attrs=a)
    return standardise_observations(xr.Dataset(data, coords=coords, attrs=dict(attrs or {})))


# --------------------------------------------------------------------------------------------------------------
# Site metadata and folder format
# --------------------------------------------------------------------------------------------------------------


class SiteConfigError(SiteError, ConfigError):
    """``site.yaml`` (or a :class:`SiteMeta` built in code) breaks the schema: the message names the key."""


@dataclass(frozen=True)
class UnreliableSeries:
    """An observation series to flag or down-weight: ``variable``, optional sensor ``depth_m``, ``reason``."""

    variable: str
    reason: str
    depth_m: float | None = None


@dataclass(frozen=True)
class SiteMeta:
    """Metadata and model set-up of a site (``site.yaml``, format 2). Units: degrees, metres, seconds, hours.

    Every instance is validated by the ``site.yaml`` schema (:class:`dam.site_schema.SiteYaml`) when it is made,
    so a site built in code obeys the same rules as one read from a file; a violation is a
    :class:`SiteConfigError` naming the key.

    Attributes
    ----------
    name : short identifier (letters, digits, ``.``, ``_``, ``-``; used in file names).
    latitude, longitude : degrees north / east.
    elevation_m : m above sea level.
    utc_offset_hours : local standard time of the site = UTC + offset (the files are in UTC).
    time_zone : free text, e.g. ``"US Central Standard Time (UTC-6, no DST)"``.
    time_step_s : forcing time step [s].
    reference_height_temperature_m, reference_height_wind_m : measurement heights above ground [m].
    vegetation_type_igbp : MODIS IGBP class 1..20 (Noah-MP ``MODIFIED_IGBP_MODIS_NOAH`` table row).
    soil_type_stas : STAS soil class 1..19 (Noah-MP table row), one for all layers or a tuple with one per layer
        of the soil column; or None with ``soil_texture``.
    soil_texture : ``{"sand": f, "clay": f}`` fractions (0..1); gives the STAS class (USDA texture triangle)
        when ``soil_type_stas`` is None.
    soil_colour : Noah-MP soil colour index 1..8.
    max_vegetation_fraction : SHDMAX (0..1), optional (the station model's default is 0.8).
    sensor_depths_m : ``{"soil_moisture": (...), "soil_temperature": (...)}`` [m, positive down].
    sensor_footprint_m : ``{variable: footprint or (one per sensor)}``, the vertical extent each probe averages
        over [m]; default 0 (a point). See :mod:`dam.sensors`.
    licence, citation, source, title : provenance.
    notes : free-text notes (data quality, approximations made by the converter).
    unreliable : series to flag (see :class:`UnreliableSeries`).
    soil_moisture_measures : what each soil moisture sensor sees, one value for all or a tuple with one per
        sensor: ``"total"`` water (liquid + ice; gravimetric samples, neutron probes, cosmic-ray sensors) or
        ``"liquid"`` water only (dielectric sensors: TDR, reflectometers, capacitance probes read frozen soil as
        dry). Models are compared with the same quantity, sensor by sensor.
    soil_column : :class:`dam.site_schema.SoilColumn` (layer thicknesses, deep boundary depth and temperature),
        or None for Noah-MP's default column (0.1/0.3/0.6/1.0 m, ZBOT 8 m, TBOT the mean air temperature).
    parameters : overrides of Noah-MP table values, ``{section: {TABLE_NAME: value}}`` (:mod:`dam.tables`).
    initial_state : :class:`dam.site_schema.InitialState` or None (a mapping is validated into one).
    assumed : dotted metadata key -> reason, for every value that is a best guess rather than a documented fact
        (e.g. ``{"sensor_depths_m.soil_moisture": "FLUXNET gives no depths ..."}``); results should carry that
        caveat.
    attributes : static site attributes for information and multi-site models (e.g. ``site_id``, ``igbp``,
        ``canopy_height_m``).
    """

    name: str
    latitude: float
    longitude: float
    elevation_m: float
    utc_offset_hours: float
    time_step_s: float
    reference_height_temperature_m: float
    reference_height_wind_m: float
    vegetation_type_igbp: int
    soil_colour: int
    licence: str
    citation: tuple[str, ...]
    soil_type_stas: int | tuple[int, ...] | None = None
    soil_texture: Mapping[str, float] | None = None
    max_vegetation_fraction: float | None = None
    time_zone: str = ""
    title: str = ""
    source: str = ""
    sensor_depths_m: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    unreliable: tuple[UnreliableSeries, ...] = ()
    soil_moisture_measures: str | tuple[str, ...] = "total"
    initial_state: InitialState | None = None
    sensor_footprint_m: Mapping[str, float | tuple[float, ...]] = field(default_factory=dict)
    soil_column: SoilColumn | None = None
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    assumed: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        model = _validate_site_yaml(self.to_yaml_dict())
        object.__setattr__(self, "initial_state", model.initial_state)
        if self.soil_column is not None:
            object.__setattr__(self, "soil_column", model.soil_column)
        object.__setattr__(self, "_model", model)

    @property
    def schema(self) -> SiteYaml:
        """The validated ``site.yaml`` model (defaults filled in)."""
        return self._model  # type: ignore[attr-defined]

    def soil_moisture_kinds(self) -> tuple[str, ...]:
        """``"total"`` or ``"liquid"`` for each soil moisture sensor (order of ``sensor_depths_m``)."""
        n = len(self.sensor_depths_m.get("soil_moisture", ()))
        m = self.soil_moisture_measures
        return tuple(m) if isinstance(m, tuple | list) else (m,) * n

    def footprints(self, variable: str) -> tuple[float, ...]:
        """The vertical footprint of each sensor of ``variable`` [m]."""
        n = len(self.sensor_depths_m.get(variable, ()))
        f = self.sensor_footprint_m.get(variable, 0.0)
        return tuple(float(x) for x in f) if isinstance(f, tuple | list) else (float(f),) * n

    def to_yaml_dict(self) -> dict[str, Any]:
        """The nested ``site.yaml`` mapping (format 2)."""
        d: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "title": self.title,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "elevation_m": self.elevation_m,
            "time_zone": self.time_zone,
            "utc_offset_hours": self.utc_offset_hours,
            "time_step_s": self.time_step_s,
            "reference_height": {
                "temperature_m": self.reference_height_temperature_m,
                "wind_m": self.reference_height_wind_m,
            },
            "sensor_depths_m": {k: [float(x) for x in v] for k, v in self.sensor_depths_m.items()},
            "soil": {"stas_type": _plain(self.soil_type_stas), "colour": self.soil_colour},
            "vegetation": {"igbp_type": self.vegetation_type_igbp},
            "licence": self.licence,
            "citation": list(self.citation),
            "source": self.source,
            "notes": list(self.notes),
            "unreliable": [{k: v for k, v in dataclasses.asdict(u).items() if v is not None} for u in self.unreliable],
            "soil_moisture_measures": _plain(self.soil_moisture_measures),
        }
        if self.sensor_footprint_m:
            d["sensor_footprint_m"] = {k: _plain(v) for k, v in self.sensor_footprint_m.items()}
        if self.soil_texture is not None:
            d["soil"]["texture"] = dict(self.soil_texture)
        if self.max_vegetation_fraction is not None:
            d["vegetation"]["max_fraction"] = self.max_vegetation_fraction
        if self.soil_column is not None:
            d["soil_column"] = _dump(self.soil_column, compact=False)
        if self.parameters:
            d["parameters"] = {k: {n: _plain(v) for n, v in sec.items()} for k, sec in self.parameters.items()}
        if self.initial_state is not None:
            d["initial_state"] = _dump(self.initial_state)
        if self.assumed:
            d["assumed"] = {str(k): str(v) for k, v in self.assumed.items()}
        if self.attributes:
            d["attributes"] = dict(self.attributes)
        return d


def _plain(x: Any) -> Any:
    """Tuples as lists (YAML), everything else unchanged."""
    return [_plain(v) for v in x] if isinstance(x, tuple | list) else x


def _dump(x: Any, *, compact: bool = True) -> dict[str, Any]:
    """A mapping or pydantic model as plain YAML data (``compact``: without the keys left at their defaults)."""
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x.model_dump(mode="json", exclude_none=True, exclude_defaults=compact)


def _validate_site_yaml(d: Mapping[str, Any], where: str = "site.yaml") -> SiteYaml:
    try:
        return validate(SiteYaml, d, where)
    except ConfigError as exc:
        msg = str(exc).replace("(top level): ", "").replace("Value error, ", "")
        raise SiteConfigError(msg) from None


def parse_site_yaml(d: Mapping[str, Any], where: str = "site.yaml") -> SiteMeta:
    """Validate a ``site.yaml`` mapping (format 2, or format 1 migrated) and return :class:`SiteMeta`.

    Raises
    ------
    SiteConfigError
        Naming the key, the value and what is allowed (unknown keys with the nearest valid name).
    """
    if not isinstance(d, Mapping):
        raise SiteConfigError(f"{where}: top level must be a mapping of keys to values")
    version = d.get("format_version", FORMAT_VERSION)
    if version == 1:
        d = migrate_v1(d, where)
    elif version != FORMAT_VERSION:
        raise SiteConfigError(f"{where}: format_version {version!r} is not supported (1 or {FORMAT_VERSION})")
    m = _validate_site_yaml(d, where)
    depths = {k: tuple(getattr(m.sensor_depths_m, k)) for k in SOIL_VARIABLES if getattr(m.sensor_depths_m, k)}
    feet = {k: getattr(m.sensor_footprint_m, k) for k in SOIL_VARIABLES}
    feet = {k: tuple(v) if isinstance(v, list) else v for k, v in feet.items() if v != 0.0}
    raw = d.get("soil_column")
    return SiteMeta(
        name=m.name,
        title=m.title,
        latitude=m.latitude,
        longitude=m.longitude,
        elevation_m=m.elevation_m,
        time_zone=m.time_zone,
        utc_offset_hours=m.utc_offset_hours,
        time_step_s=m.time_step_s,
        reference_height_temperature_m=m.reference_height.temperature_m,
        reference_height_wind_m=m.reference_height.wind_m,
        vegetation_type_igbp=m.vegetation.igbp_type,
        max_vegetation_fraction=m.vegetation.max_fraction,
        soil_type_stas=tuple(m.soil.stas_type) if isinstance(m.soil.stas_type, list) else m.soil.stas_type,
        soil_texture=None if m.soil.texture is None else m.soil.texture.model_dump(),
        soil_colour=m.soil.colour,
        licence=m.licence,
        citation=(m.citation,) if isinstance(m.citation, str) else tuple(m.citation),
        source=m.source,
        sensor_depths_m=depths,
        sensor_footprint_m=feet,
        notes=tuple(m.notes),
        unreliable=tuple(UnreliableSeries(u.variable, u.reason, u.depth_m) for u in m.unreliable),
        soil_moisture_measures=tuple(m.soil_moisture_measures)
        if isinstance(m.soil_moisture_measures, list)
        else m.soil_moisture_measures,
        soil_column=None if raw is None else m.soil_column,
        parameters={k: dict(v) for k, v in m.parameters.items()},
        initial_state=m.initial_state,
        assumed=dict(m.assumed),
        attributes=dict(m.attributes),
    )


@dataclass(frozen=True)
class Site:
    """A loaded, validated site: metadata, forcing Dataset, observation Dataset (or None), folder (or None)."""

    meta: SiteMeta
    forcing: xr.Dataset
    observations: xr.Dataset | None = None
    path: Path | None = None

    def sensor_mapping(
        self, variable: str, layer_bottoms_m: Sequence[float], depths_m: Sequence[float] | None = None, **kw
    ) -> SensorMapping:
        """How the sensors of ``variable`` (default all; or those at ``depths_m``) read the model layers, with
        their footprints from ``site.yaml`` (0 at a depth site.yaml does not list), see
        :func:`dam.sensors.map_sensors_to_layers` (``kw``: e.g. ``rule``)."""
        all_depths = self.meta.sensor_depths_m.get(variable, ())
        feet = self.meta.footprints(variable)
        if depths_m is None:
            depths_m = all_depths
        idx = [_sensor_index(all_depths, d) for d in depths_m]
        chosen = [0.0 if i is None else feet[i] for i in idx]
        return map_sensors_to_layers(depths_m, layer_bottoms_m, variable, footprint_m=chosen, **kw)

    def sees_liquid(self, variable: str = "soil_moisture", depths_m: Sequence[float] | None = None) -> np.ndarray:
        """(S,) True where a sensor of ``variable`` sees liquid water only (``soil_moisture_measures``); always
        False for other variables. A depth site.yaml does not list takes the kind all the site's sensors share."""
        all_depths = self.meta.sensor_depths_m.get(variable, ())
        if depths_m is None:
            depths_m = all_depths
        if variable != "soil_moisture":
            return np.zeros(len(depths_m), bool)
        kinds = self.meta.soil_moisture_kinds()
        out = []
        for d in depths_m:
            i = _sensor_index(all_depths, d)
            if i is None:
                if len(set(kinds)) > 1:
                    raise SiteError(f"{variable} at {float(d):g} m: not a sensor of site.yaml, and its sensors see "
                                    f"different water {kinds}: which does this one see?")  # fmt: skip
                out.append(bool(kinds) and kinds[0] == "liquid")
            else:
                out.append(kinds[i] == "liquid")
        return np.array(out, bool)

    def model_at_sensors(
        self,
        model: xr.Dataset,
        variable: str,
        layer_bottoms_m: Sequence[float],
        depths_m: Sequence[float] | None = None,
        **kw,
    ) -> tuple[SensorMapping, xr.DataArray]:
        """The model series each sensor of ``variable`` sees (dims ``(time, <depth dim>)``): soil moisture as
        total (``soil_moisture``) or liquid water (``soil_liquid_water``) sensor by sensor, read at the sensors'
        depths and footprints. ``model`` is a station-model output Dataset with a ``layer`` dimension."""
        spec = OBSERVATION_VARIABLES[variable]
        depths = self.meta.sensor_depths_m.get(variable, ()) if depths_m is None else tuple(depths_m)
        mapping = self.sensor_mapping(variable, layer_bottoms_m, depths, **kw)
        obs = xr.DataArray(np.zeros((1, len(depths))), dims=("time", spec.depth_dim), name=variable,
                           coords={spec.depth_dim: list(depths)})  # fmt: skip
        feet = mapping.footprint_m
        rule = mapping.rule
        _, total = model_at_sensors(model[variable], obs, layer_bottoms_m, footprint_m=feet, rule=rule)
        if variable != "soil_moisture":
            return mapping, total
        liquid = self.sees_liquid(variable, depths)
        if liquid.any():
            _, liq = model_at_sensors(model["soil_liquid_water"], obs, layer_bottoms_m, footprint_m=feet, rule=rule)
            dims = total.dims
            total = xr.where(xr.DataArray(liquid, dims=spec.depth_dim), liq, total, keep_attrs=True).transpose(*dims)
            total.name = variable
        return mapping, total.assign_coords(sees=(spec.depth_dim, np.where(liquid, "liquid", "total")))

    def unreliable_flag(self, variable: str, depth_m: float | None = None) -> str:
        """The reason a series is flagged unreliable in ``site.yaml``, or ``""``."""
        for u in self.meta.unreliable:
            if u.variable == variable and (u.depth_m is None or depth_m is None or np.isclose(u.depth_m, depth_m)):
                return u.reason
        return ""


def _sensor_index(depths: Sequence[float], depth: float) -> int | None:
    """Index of the sensor at ``depth`` (1 um tolerance), or None."""
    hits = np.flatnonzero(np.isclose(np.asarray(depths, float), float(depth), rtol=0, atol=1e-6))
    return int(hits[0]) if hits.size else None


def check_site(site: Site) -> Site:
    """Cross-check metadata against the Datasets (time step, sensor depths); returns ``site``."""
    step = float(site.forcing.attrs["time_step_s"])
    if step != site.meta.time_step_s:
        raise SiteError(
            f"forcing.nc: time step {step:g} s differs from site.yaml time_step_s {site.meta.time_step_s:g}"
        )
    obs = site.observations
    for name in SOIL_VARIABLES:
        declared = site.meta.sensor_depths_m.get(name)
        present = obs is not None and name in obs
        if present:
            d = tuple(float(x) for x in obs[OBSERVATION_VARIABLES[name].depth_dim].values)
            if declared is None:
                raise SiteError(f"site.yaml: sensor_depths_m.{name} missing (observations.nc has depths {list(d)} m)")
            if not np.allclose(d, declared, rtol=0, atol=1e-6):
                raise SiteError(
                    f"site.yaml: sensor_depths_m.{name} {list(declared)} differ from observations.nc depths {list(d)}"
                )
        elif declared:
            raise SiteError(f"site.yaml: sensor_depths_m.{name} given but observations.nc has no {name!r}")
    return site


def _open_nc(path: Path) -> xr.Dataset:
    try:
        with xr.open_dataset(path) as ds:
            return ds.load()
    except (OSError, ValueError) as exc:
        raise SiteError(f"{path}: cannot be read as netCDF ({exc})") from exc


def load_site(path: str | os.PathLike, *, gaps: str = "error", max_gap: int | None = DEFAULT_MAX_GAP) -> Site:
    """Read and validate a site folder (``site.yaml``, ``forcing.nc``, optional ``observations.nc``).

    ``path`` may also be the name of a shipped site (see :func:`shipped_sites`). ``gaps``/``max_gap`` apply to
    NaN in the forcing (see :func:`standardise_forcing`); observations are never filled.

    Raises
    ------
    SiteError
        Naming the missing file, the bad key or the bad variable.
    """
    p = Path(path)
    if not p.exists() and str(path) in shipped_sites():
        p = shipped_site_dir(str(path))
    if not p.is_dir():
        raise SiteError(f"site folder {str(path)!r} does not exist")
    yml = p / "site.yaml"
    if not yml.is_file():
        raise SiteError(f"{p}: missing site.yaml")
    try:
        raw = yaml.safe_load(yml.read_text())
    except yaml.YAMLError as exc:
        raise SiteError(f"{yml}: invalid YAML ({exc})") from exc
    meta = parse_site_yaml(raw, where=str(yml))
    fpath = p / "forcing.nc"
    if not fpath.is_file():
        raise SiteError(f"{p}: missing forcing.nc")
    try:
        forcing = standardise_forcing(_open_nc(fpath), step_s=meta.time_step_s, gaps=gaps, max_gap=max_gap)
    except SiteError as exc:
        raise SiteError(f"{fpath}: {exc}") from None
    opath = p / "observations.nc"
    obs = None
    if opath.is_file():
        try:
            obs = standardise_observations(_open_nc(opath))
        except SiteError as exc:
            raise SiteError(f"{opath}: {exc}") from None
    return check_site(Site(meta, forcing, obs, p))


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for v in ds.data_vars:
        if v == "time_bnds":
            enc[v] = {
                "units": "seconds since 1970-01-01 00:00:00",
                "dtype": "int64",
                "calendar": "standard",
                "zlib": True,
                "complevel": 9,
            }
        elif np.issubdtype(ds[v].dtype, np.floating):
            enc[v] = {
                "dtype": "float32",
                "zlib": True,
                "complevel": 9,
                "shuffle": True,
                "_FillValue": np.float32(np.nan),
            }
    enc["time"] = {
        "units": "seconds since 1970-01-01 00:00:00",
        "dtype": "int64",
        "calendar": "standard",
        "zlib": True,
        "complevel": 9,
    }
    for c in ds.coords:
        if c != "time":
            enc[c] = {"dtype": "float64", "_FillValue": None}
    return enc


def write_site(site: Site, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a site folder (``site.yaml``, ``forcing.nc``, ``observations.nc``); floats are stored as float32
    with zlib level 9 (the converted source values have at most 4-5 significant digits)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SiteError(f"{out} exists and is not empty (pass overwrite=True)")
        for f in ("site.yaml", "forcing.nc", "observations.nc"):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    check_site(site)
    (out / "site.yaml").write_text(
        "# dam site metadata (format: docs/site_format.md)\n"
        + yaml.safe_dump(site.meta.to_yaml_dict(), sort_keys=False, allow_unicode=True, width=110)
    )
    site.forcing.to_netcdf(out / "forcing.nc", encoding=_encoding(site.forcing), engine="netcdf4")
    if site.observations is not None:
        obs = site.observations
        obs.to_netcdf(out / "observations.nc", encoding=_encoding(obs), engine="netcdf4")
    return out


# --------------------------------------------------------------------------------------------------------------
# Shipped sites and conversion of source data
# --------------------------------------------------------------------------------------------------------------

SHIPPED_SITES_DIR = Path(__file__).resolve().parent / "data" / "sites"


def default_shared_data_dir() -> Path:
    """``$DAM_SHARED_DATA`` if set, else ``<checkout>/../shared/data``."""
    env = os.environ.get("DAM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def shipped_sites() -> list[str]:
    """Names of the sites shipped under ``dam/data/sites``."""
    if not SHIPPED_SITES_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_SITES_DIR.iterdir() if (p / "site.yaml").is_file())


def shipped_site_dir(name: str) -> Path:
    """Folder of a shipped site (raises :class:`SiteError` listing the known names)."""
    p = SHIPPED_SITES_DIR / name
    if not (p / "site.yaml").is_file():
        raise SiteError(f"no shipped site {name!r} (shipped: {shipped_sites()})")
    return p


def convert_site(
    source_name_or_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    gaps: str = "error",
    max_gap: int | None = DEFAULT_MAX_GAP,
    overwrite: bool = False,
    converter: str | None = None,
    **options: Any,
) -> Path:
    """Convert a source data folder into a site folder and return its path.

    Parameters
    ----------
    source_name_or_dir
        A known source name (:data:`dam.site_readers.CONVERTERS`: ``bondville_1998``, ``bondville_1998_hrldas``,
        ``hyytiala_2000_2010``, ``tanggula_forcing_only``) looked up in :func:`default_shared_data_dir`, or a
        folder whose name is one of these or whose files identify the format.
    out_dir
        The site folder to write (created; must be empty unless ``overwrite``).
    gaps, max_gap
        Gap handling of the forcing (see :func:`standardise_forcing`); the default refuses to fill.
    converter
        Force a converter for a source folder (e.g. ``"bondville_1998_hrldas"`` for the Bondville folder).
    **options
        Passed to the converter (e.g. ``wind="u_bar"`` for Bondville).
    """
    from dam.site_readers import CONVERTERS, identify_source

    src = Path(source_name_or_dir)
    if not src.exists():
        name = str(source_name_or_dir)
        if name not in CONVERTERS:
            raise SiteError(f"unknown source {name!r}: not a folder and not one of {sorted(CONVERTERS)}")
        folder = default_shared_data_dir() / CONVERTERS[name].folder
        if not folder.is_dir():
            raise SiteError(f"source folder {folder} for {name!r} does not exist (set DAM_SHARED_DATA)")
        src, kind = folder, name
    else:
        kind = converter or identify_source(src)
        if kind not in CONVERTERS:
            raise SiteError(f"unknown converter {kind!r} (known: {sorted(CONVERTERS)})")
    site = CONVERTERS[kind].read(src, gaps=gaps, max_gap=max_gap, **options)
    out = write_site(site, out_dir, overwrite=overwrite)
    if (src / "SOURCE.md").is_file():
        shutil.copyfile(src / "SOURCE.md", out / "SOURCE.md")
    return out
