"""Construction and validation of a site's forcing and observation Datasets: time axis checks, gap filling,
variable standardisation (names, units, ranges) and the builders :func:`make_forcing`, :func:`make_observations`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .sensors import SensorError as SensorError  # re-exported: the sensor mapping lives in dam.sensors
from .site_variables import (
    DEFAULT_MAX_GAP,
    FORCING_VARIABLES,
    GAP_METHODS,
    MISSING_CODES,
    OBSERVATION_VARIABLES,
    SOIL_VARIABLES,
    ZERO_C,
    SiteError,
    VarSpec,
    unit_conversion,
)

# --------------------------------------------------------------------------------------------------------------
# Dataset construction and validation
# --------------------------------------------------------------------------------------------------------------


def _time_index(times: Any) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(times)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.as_unit("ns")


def _utc(t: Any) -> str:
    """A time of the UTC axis for a message, labelled so that nobody reads it as a file's local stamp."""
    t = pd.Timestamp(t)
    return t.strftime("%Y-%m-%d %H:%M:%S" if t.second else "%Y-%m-%d %H:%M") + " UTC"


def _check_time(times: pd.DatetimeIndex, what: str, step_s: float | None = None) -> float:
    """Check monotonic, unique and (if ``step_s``) regular time stamps; returns the step [s]."""
    if len(times) < 2:
        raise SiteError(f"{what}: time has fewer than 2 values")
    dt = np.diff(times.as_unit("ns").asi8) / 1e9
    if (dt == 0).any():
        i = int(np.argmax(dt == 0))
        raise SiteError(f"{what}: duplicated time stamp {_utc(times[i + 1])}")
    if (dt < 0).any():
        i = int(np.argmax(dt < 0))
        raise SiteError(
            f"{what}: time is not monotonic increasing ({_utc(times[i])} is followed by {_utc(times[i + 1])})"
        )
    if step_s is not None and not np.all(dt == step_s):
        i = int(np.argmax(dt != step_s))
        raise SiteError(
            f"{what}: time step is not regular {step_s:g} s ({_utc(times[i])} -> {_utc(times[i + 1])}: {dt[i]:g} s); "
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
    name: str,
    x: np.ndarray,
    times: pd.DatetimeIndex,
    method: str,
    max_gap: int | None,
    utc_offset_hours: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Fill the gaps (NaN) of one series by ``method``; returns the series and the number filled.

    ``times`` are UTC (messages label them so); ``utc_offset_hours`` shifts them to the local standard time whose
    calendar month and time of day ``climatology`` groups by (a site's weather follows its local clock and
    months, not UTC's).
    """
    runs = _nan_runs(x)
    if not runs:
        return x, 0
    n_missing = sum(length for _, length in runs)
    longest = max(length for _, length in runs)
    hint = (
        f"forcing variable {name!r} has {n_missing} missing value(s) in {len(runs)} gap(s) "
        f"(longest {longest} steps, first at {_utc(times[runs[0][0]])})"
    )
    if method == "error":
        raise SiteError(
            hint + "; choose gaps='interpolate' (with max_gap), 'previous' or 'climatology' to fill them explicitly"
        )
    if method in ("interpolate", "previous") and max_gap is not None and longest > max_gap:
        start = next(s for s, length in runs if length == longest)
        raise SiteError(hint + f"; the gap at {_utc(times[start])} is longer than max_gap={max_gap} steps")
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
        # Mean of the valid values with the same local calendar month and time of day (daily data: month only).
        local = times + pd.Timedelta(hours=utc_offset_hours)
        key = pd.Series(local.month * 100000 + local.hour * 3600 + local.minute * 60 + local.second)
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
        if offset == ZERO_C and med > 150.0:
            raise SiteError(f"variable {name!r}: units say {units!r} but the values (median {med:.3g}) look like K")
    values = values * scale + offset
    bad = ~np.isnan(values) & ((values < spec.valid_min) | (values > spec.valid_max))  # NaN: gaps; inf: bad
    if bad.any():
        flat = np.flatnonzero(bad.reshape(-1))
        first = np.unravel_index(flat[0], values.shape)
        where = ""
        if "time" in da.dims:
            where = f" first at {_utc(da['time'].values[first[da.dims.index('time')]])}"
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


#: Annual precipitation of the world's stations, mm per year: ~1 (Atacama) to ~12,000 (Meghalaya), with a margin.
PLAUSIBLE_PRECIP_MM_PER_YEAR = (1.0, 15000.0)


def _check_annual_precipitation(da: xr.DataArray, step_s: float) -> None:
    """Warn when a record of a year or more has a mean annual precipitation outside
    :data:`PLAUSIBLE_PRECIP_MM_PER_YEAR`: the mark of mislabelled units (mm s-1 data labelled mm h-1 is read 3600
    times too small; every value is still within range, so nothing else would notice)."""
    days = da.sizes["time"] * step_s / 86400.0
    if days < 365.0 or not np.isfinite(da.values).any():
        return
    per_year = float(np.nanmean(da.values)) * 86400.0 * 365.25  # kg m-2 s-1 = mm s-1 -> mm per year
    lo, hi = PLAUSIBLE_PRECIP_MM_PER_YEAR
    if not lo <= per_year <= hi:
        units = da.attrs.get("converted_from_units", da.attrs.get("units"))
        warnings.warn(
            f"variable 'precip': {per_year:.3g} mm per year on average over {days:.0f} days, outside the {lo:g}-{hi:g} "
            f"mm per year of the world's stations; check its units (given as {units!r})",
            UserWarning,
            stacklevel=3,
        )


def standardise_forcing(
    ds: xr.Dataset,
    *,
    step_s: float | None = None,
    gaps: str = "error",
    max_gap: int | None = DEFAULT_MAX_GAP,
    utc_offset_hours: float = 0.0,
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
        of the same calendar month and time of day, in local standard time).
    max_gap
        Longest run of missing steps that ``interpolate``/``previous`` may fill; ``None``: no limit.
    utc_offset_hours
        The site's local standard time = UTC + offset (the months and hours ``climatology`` groups by).
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
        values, n_filled = _fill_series(name, da.values, times, gaps, max_gap, utc_offset_hours)
        da = da.copy(data=values)
        if n_filled:
            counts[name] = n_filled
            da.attrs["gap_fill_method"] = gaps
            da.attrs["gap_fill_count"] = n_filled
        out[name] = da
    _check_annual_precipitation(out["precip"], step)
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
