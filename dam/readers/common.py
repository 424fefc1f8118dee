"""What every reader shares: reading a table, quality masks, the gap policy with messages that name the file,
column and rule, soil sensors from the metadata, daily forcing through :mod:`dam.disaggregate`, and the
:class:`dam.sites.Site` built from it all.

A format reader (FLUXNET, AmeriFlux BASE, table) turns its file into a :class:`Table` (one row per interval,
interval ends in local standard time, NaN for missing) and a :class:`Columns` description; :func:`build_site`
does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dam.disaggregate import DailyForcing, disaggregate
from dam.readers.metadata import SiteMetadata
from dam.site_datasets import _fill_series
from dam.sites import (
    Site,
    SiteError,
    SiteMeta,
    UnreliableSeries,
    check_site,
    make_forcing,
    saturation_vapour_pressure,
    specific_humidity_from_rh,
    specific_humidity_from_vapour_pressure,
    unit_conversion,
)

READER_VERSION = "dam.readers 1"
QcRule = Callable[[np.ndarray], np.ndarray]  # QC values -> True where the value is to be dropped
SW_CLIP_LOWEST = -20.0  # W m-2: negative shortwave down to this (a pyranometer's night-time offset) is set to 0


@dataclass
class Table:
    """A data file as read: ``frame`` (file column names, NaN for missing), the interval ends in local standard
    time, the step [s], the file and a short format name for messages and attributes."""

    path: Path
    frame: pd.DataFrame
    ends_local: pd.DatetimeIndex
    step_s: int
    format: str

    def fail(self, message: str) -> SiteError:
        return SiteError(f"{self.path.name}: {message}")

    def column(self, name: str, what: str, rule: str) -> np.ndarray:
        if name not in self.frame:
            raise self.fail(f"missing required column {name!r} ({what}; rule: {rule})")
        return self.frame[name].to_numpy(np.float64)


@dataclass
class Source:
    """Where one canonical quantity comes from: columns (averaged where several), units, optional QC column and
    the rule that turns QC values into drops."""

    columns: list[str]
    units: str
    qc: str | None = None
    qc_rule: tuple[str, QcRule] | None = None  # (description, function)


@dataclass
class Columns:
    """Everything a reader found in its file for :func:`build_site`."""

    forcing: dict[str, Source]  # T_air, humidity, p_sfc, wind, sw_down, lw_down, precip
    humidity_kind: str  # relative_humidity | vapour_pressure_deficit | specific_humidity | vapour_pressure
    observations: dict[str, Source] = field(default_factory=dict)
    soil_pattern: dict[str, str] = field(default_factory=dict)  # soil variable -> regex of its file columns
    soil_units: dict[str, str] = field(default_factory=dict)
    soil_qc: Callable[[str], Source | None] | None = None  # sensor column -> QC source (or None)
    daily_temperature: dict[str, Source] = field(default_factory=dict)  # T_air_day/night/min/max (daily files)
    extra_series: dict[str, tuple[Source, dict[str, str]]] = field(default_factory=dict)  # kept as they are
    clip_negative: dict[str, float] = field(default_factory=dict)  # forcing -> lowest value (source units) set to 0


# --------------------------------------------------------------------------------------------------------------
# Reading values
# --------------------------------------------------------------------------------------------------------------


def read_csv(source: Path | Any, missing: list[str | float], name: str | None = None, **kw: Any) -> pd.DataFrame:
    """A delimited text file (or buffer) with the given missing-value codes as NaN (errors name the file)."""
    name = name or Path(source).name
    try:
        frame = pd.read_csv(source, na_values=[str(m) for m in missing], keep_default_na=True, **kw)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SiteError(f"{name}: cannot be read as a table ({exc})") from None
    if frame.empty:
        raise SiteError(f"{name}: no data rows")
    return frame


def time_steps(name: str, stamps: pd.DatetimeIndex, raw: pd.Series | None = None) -> np.ndarray:
    """The distinct steps between the rows' time stamps (s), each reader checking them against its format's rule;
    refuses a file of fewer than two rows (its step cannot be known) and stamps that do not increase, naming the
    first such row by the file's own text (``raw``: its time-stamp column, else the stamps)."""
    if len(stamps) < 2:
        raise SiteError(
            f"{name}: only {len(stamps)} data row; the file is too short (at least two rows are needed: the time "
            "step comes from the stamps)"
        )
    ns = stamps.as_unit("ns").asi8
    back = np.flatnonzero(np.diff(ns) <= 0)
    if back.size:  # duplicated or unsorted rows: name the first, not a "rows missing?"
        i = int(back[0])
        if raw is None:
            label, shown = "time", [f"{t:%Y-%m-%d %H:%M}" for t in stamps[i : i + 2]]
        else:
            label, shown = raw.name, raw.to_numpy()[i : i + 2]
        raise SiteError(f"{name}: time stamps must increase; data row {i + 2} ({label} {shown[1]}) does not follow "
                        f"row {i + 1} ({label} {shown[0]}): duplicated or unsorted rows")  # fmt: skip
    return np.unique(np.diff(ns) // 10**9)


def mean_present(cols: np.ndarray) -> np.ndarray:
    """Mean over the first axis of the finite values; NaN where none is (without numpy's empty-slice warning)."""
    present = np.isfinite(cols).sum(axis=0)
    return np.where(present > 0, np.nansum(cols, axis=0) / np.maximum(present, 1), np.nan)


def values(table: Table, src: Source, what: str, rule: str) -> tuple[np.ndarray, int]:
    """The source's values (replicate columns averaged) with QC drops as NaN; also the number dropped by QC."""
    x = mean_present(np.stack([table.column(c, what, rule) for c in src.columns]))
    n_qc = 0
    if src.qc is not None and src.qc_rule is not None and src.qc in table.frame:
        drop = src.qc_rule[1](table.frame[src.qc].to_numpy(np.float64)) & np.isfinite(x)
        n_qc = int(drop.sum())
        x = np.where(drop, np.nan, x)
    return x, n_qc


def to_units(x: np.ndarray, units: str, canonical: str, name: str, step_s: float) -> np.ndarray:
    """Convert to canonical units; ``mm per step`` precipitation becomes kg m-2 s-1."""
    if units == "mm per step":
        return x / step_s
    scale, offset = unit_conversion(units, canonical, name)
    return x * scale + offset


# --------------------------------------------------------------------------------------------------------------
# Forcing
# --------------------------------------------------------------------------------------------------------------

_CANONICAL = {"T_air": "K", "p_sfc": "Pa", "wind": "m s-1", "sw_down": "W m-2", "lw_down": "W m-2"}


def local_time(meta: SiteMetadata) -> str:
    """The file's time zone, as messages and the forcing's ``source_time_zone`` name it."""
    return f"local standard time UTC{meta.time.utc_offset_hours:+g}"


def utc_note(meta: SiteMetadata) -> str:
    """Messages give times of the UTC axis: say how they map to the file's stamps, so the row can be found."""
    return f"times in UTC; the file's stamps are {local_time(meta)}"


def apply_gap_policy(
    table: Table, name: str, src: Source, x: np.ndarray, times: pd.DatetimeIndex, meta: SiteMetadata, n_qc: int
) -> tuple[np.ndarray, int]:
    """Fill the gaps of one forcing series by the metadata's policy; errors name file, column and rule."""
    conv = meta.conversion
    method = conv.gap_method("q_air" if name == "humidity" else name)
    if np.isnan(x).all():
        raise table.fail(f"forcing column {'+'.join(src.columns)} ({name}): all values missing")
    try:
        return _fill_series(name, x, times, method, conv.max_gap, meta.time.utc_offset_hours)
    except SiteError as exc:
        why = f"; {n_qc} of them set missing by the rule {src.qc_rule[0]}" if n_qc and src.qc_rule else ""
        raise table.fail(
            f"column {'+'.join(src.columns)}: {exc}{why} (gap policy: conversion.gaps={method!r}, "
            f"max_gap={conv.max_gap} steps; {utc_note(meta)})"
        ) from None


def clip_small_negative(x: np.ndarray, lowest: float) -> tuple[np.ndarray, int]:
    """Values in ``[lowest, 0)`` set to 0 (a pyranometer's night-time thermal offset), and their number; values
    below ``lowest`` are kept, for the range check to refuse as errors of the data."""
    small = (x < 0.0) & (x >= lowest)
    return np.where(small, 0.0, x), int(small.sum())


def _humidity(kind: str, h: np.ndarray, t_k: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, int]:
    """Specific humidity from the file's humidity series; values above saturation are clipped (counted)."""
    es = saturation_vapour_pressure(t_k)
    if kind == "relative_humidity":
        n = int((h > 100.0).sum())
        return specific_humidity_from_rh(t_k, np.clip(h, 0.0, 100.0), p), n
    if kind == "vapour_pressure_deficit":
        e = es - np.maximum(h, 0.0)
        n = int((e < 0.01 * es).sum())
        return specific_humidity_from_vapour_pressure(np.maximum(e, 0.01 * es), p), n
    if kind == "vapour_pressure":
        n = int((h > es).sum())
        return specific_humidity_from_vapour_pressure(np.minimum(h, es), p), n
    return h, 0


def forcing_arrays(table: Table, cols: Columns, meta: SiteMetadata, times: pd.DatetimeIndex):
    """Canonical forcing arrays (gaps filled by the policy) and per-variable attributes."""
    out: dict[str, np.ndarray] = {}
    attrs: dict[str, dict[str, Any]] = {}
    for name, src in cols.forcing.items():
        raw, n_qc = values(table, src, f"forcing {name}", f"{table.format} forcing needs {name}")
        lowest = cols.clip_negative.get(name)
        raw, n_neg = clip_small_negative(raw, lowest) if lowest is not None else (raw, 0)
        filled, n_fill = apply_gap_policy(table, name, src, raw, times, meta, n_qc)
        canonical = _CANONICAL.get(name)
        if name == "precip":
            x = to_units(filled, src.units, "kg m-2 s-1", name, table.step_s)
        elif name == "humidity":
            target = {"relative_humidity": "%", "specific_humidity": "kg kg-1"}.get(cols.humidity_kind, "Pa")
            x = filled if target == "%" else to_units(filled, src.units, target, name, 1)
        else:
            x = to_units(filled, src.units, canonical, name, table.step_s)
        out[name] = x
        a: dict[str, Any] = {"source_column": "+".join(src.columns), "source_units": src.units}
        if n_qc:
            a["qc_dropped"] = n_qc
            a["qc_rule"] = src.qc_rule[0] if src.qc_rule else ""
        if n_fill:
            a["gap_fill_method"] = meta.conversion.gap_method("q_air" if name == "humidity" else name)
            a["gap_fill_count"] = n_fill
        if lowest is not None:  # named like the site readers' clipping (bondville: sw_down)
            a["comment"] = f"negative values down to {lowest:g} {src.units} set to 0: {n_neg}"
            a["clipped_count"] = n_neg
        attrs[name] = a
    q, n_clip = _humidity(cols.humidity_kind, out.pop("humidity"), out["T_air"], out["p_sfc"])
    out["q_air"] = q
    attrs["q_air"] = {**attrs.pop("humidity"), "comment": f"from {cols.humidity_kind}; {n_clip} values clipped"}
    return out, attrs


def _fill_daily_offset(offset: np.ndarray, days: pd.DatetimeIndex) -> tuple[np.ndarray, int]:
    """Fill missing daily temperature offsets (day/night mean minus daily mean) by their monthly mean."""
    bad = np.isnan(offset)
    if not bad.any():
        return offset, 0
    clim = pd.Series(offset).groupby(days.month.to_numpy()).transform("mean").to_numpy()
    if np.isnan(clim[bad]).any() and not bad.all():
        clim = np.where(np.isnan(clim), np.nanmean(offset), clim)
    # A column without any value stays NaN: polar-night days do not need it, and disaggregation reports the others.
    filled = np.where(bad, clim, offset)
    return filled, int((bad & np.isfinite(filled)).sum())


def daily_forcing(table: Table, cols: Columns, meta: SiteMetadata):
    """Disaggregate a daily table: returns (times UTC, values, var_attrs, dataset attrs)."""
    opt = meta.conversion.disaggregation
    days = table.ends_local - pd.Timedelta(days=1)
    utc_days = days - pd.Timedelta(hours=meta.time.utc_offset_hours)
    v, attrs = forcing_arrays(table, cols, meta, pd.DatetimeIndex(utc_days))
    p = v["p_sfc"]
    e = specific_humidity_to_vapour_pressure(v["q_air"], p)
    extra: dict[str, np.ndarray] = {}
    n_filled = 0
    need = {"day_night": ("T_air_day", "T_air_night"), "min_max": ("T_air_min", "T_air_max")}.get(opt.temperature, ())
    for key in need:
        src = cols.daily_temperature.get(key)
        if src is None:
            raise table.fail(
                f"no column for {key} (rule: conversion.disaggregation.temperature={opt.temperature!r} needs it; "
                "set conversion.forcing_columns or choose temperature: mean_range with temperature_range_K)"
            )
        x, _ = values(table, src, key, "daily disaggregation")
        x = to_units(x, src.units, "K", key, 1)
        filled, n = _fill_daily_offset(x - v["T_air"], days)
        extra[key] = v["T_air"] + filled
        n_filled += n
    # The file's VPD is the mean of the half-hourly VPD: keep it (disaggregate recomputes e from the T cycle).
    vpd = None
    if cols.humidity_kind == "vapour_pressure_deficit":
        vpd = saturation_vapour_pressure(v["T_air"]) - e
    daily = DailyForcing(
        days=pd.DatetimeIndex(days),
        t_mean_k=v["T_air"],
        p_pa=p,
        wind_ms=v["wind"],
        sw_wm2=v["sw_down"],
        lw_wm2=v["lw_down"],
        precip_mm=v["precip"] * 86400.0,
        vpd_pa=vpd,
        vapour_pressure_pa=None if vpd is not None else e,
        t_day_k=extra.get("T_air_day"),
        t_night_k=extra.get("T_air_night"),
        t_min_k=extra.get("T_air_min"),
        t_max_k=extra.get("T_air_max"),
    )
    try:
        times, out, dis_attrs = disaggregate(daily, meta.latitude, meta.longitude, meta.time.utc_offset_hours, opt)
    except SiteError as exc:
        empty = [f"{'+'.join(cols.daily_temperature[k].columns)} ({k})" for k in need if np.isnan(extra[k]).all()]
        if empty:  # the cause, not the symptom (a singular day/night system)
            raise table.fail(
                f"column {', '.join(empty)} has no values (rule: conversion.disaggregation.temperature="
                f"{opt.temperature!r} needs them on days with a sunrise and a sunset; choose temperature: mean_range "
                "with temperature_range_K)"
            ) from None
        raise table.fail(str(exc)) from None
    dis_attrs["disaggregation_temperature_days_filled"] = n_filled
    dis_attrs["source_time_step_s"] = 86400
    return times, out, attrs, dis_attrs


def specific_humidity_to_vapour_pressure(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return q * p / (0.622 + 0.378 * q)


# --------------------------------------------------------------------------------------------------------------
# The site
# --------------------------------------------------------------------------------------------------------------


def _history(table: Table) -> dict[str, str]:
    return {"source_files": table.path.name, "converter": READER_VERSION, "source_format": table.format}


def stas_from_texture(sand: float, clay: float) -> int:
    """USDA texture class (STAS 1..12 in Noah-MP's SOILPARM order) from sand and clay fractions."""
    s, c = 100.0 * sand, 100.0 * clay
    silt = 100.0 - s - c
    if silt + 1.5 * c < 15:
        return 1  # sand
    if silt + 2 * c < 30:
        return 2  # loamy sand
    if c >= 40:
        return 12 if s <= 45 and silt < 40 else (11 if silt >= 40 else 10)
    if c >= 35 and s > 45:
        return 10  # sandy clay
    if c >= 27:
        return 9 if s > 20 else 8  # clay loam / silty clay loam
    if c >= 20 and s > 45 and silt < 28:
        return 7  # sandy clay loam
    if silt >= 80 and c < 12:
        return 5  # silt
    if silt >= 50:
        return 4  # silt loam
    if c >= 7 and s <= 52 and silt >= 28:
        return 6  # loam
    return 3  # sandy loam


#: Metadata keys -> the site.yaml keys holding the same value (longest prefix first), for ``assumed``.
_SITE_YAML_KEYS = (
    ("sensors.soil_moisture_measures", "soil_moisture_measures"),
    ("sensors.soil_moisture", "sensor_depths_m.soil_moisture"),
    ("sensors.soil_temperature", "sensor_depths_m.soil_temperature"),
    ("vegetation.igbp", "vegetation.igbp_type"),
    ("time.utc_offset_hours", "utc_offset_hours"),
    ("time.time_zone", "time_zone"),
    ("time.stamp", "source_time_stamp"),
)


def site_yaml_key(key: str) -> str:
    """The site.yaml name of a metadata key (``sensors.soil_moisture`` -> ``sensor_depths_m.soil_moisture``)."""
    for prefix, target in _SITE_YAML_KEYS:
        if key == prefix or key.startswith(prefix + "."):
            return target + key[len(prefix) :]
    return key


def site_meta(meta: SiteMetadata, step_s: float, depths: dict[str, list[float]], notes: list[str]) -> SiteMeta:
    soil = meta.soil
    stas = soil.stas_type
    if stas is None and soil.texture is not None:
        stas = stas_from_texture(soil.texture.sand, soil.texture.clay)
        notes = [*notes, f"STAS class {stas} from the texture (USDA triangle)."]
    attributes = {"site_id": meta.site_id, "igbp": str(meta.vegetation.igbp), **meta.attributes}
    return SiteMeta(
        name=meta.name,
        title=meta.title,
        latitude=meta.latitude,
        longitude=meta.longitude,
        elevation_m=meta.elevation_m,
        time_zone=meta.time.time_zone,
        utc_offset_hours=meta.time.utc_offset_hours,
        time_step_s=float(step_s),
        reference_height_temperature_m=meta.reference_height.temperature_m,
        reference_height_wind_m=meta.reference_height.wind_m,
        vegetation_type_igbp=meta.vegetation.igbp_class,
        max_vegetation_fraction=meta.vegetation.max_fraction,
        soil_type_stas=stas,
        soil_texture=None if soil.texture is None else soil.texture.model_dump(),
        soil_colour=soil.colour,
        licence=meta.licence,
        citation=tuple(meta.citation),
        source=meta.source,
        sensor_depths_m={k: tuple(v) for k, v in depths.items()},
        notes=tuple([*meta.notes, *notes]),
        unreliable=tuple(UnreliableSeries(u.variable, u.reason, u.depth_m) for u in meta.unreliable),
        soil_moisture_measures=meta.sensors.soil_moisture_measures or "total",
        assumed={site_yaml_key(k): v for k, v in meta.assumed.items()},
        attributes={k: v for k, v in attributes.items() if v != ""},
    )


def build_site(table: Table, cols: Columns, meta: SiteMetadata, meta_path: str) -> Site:
    """The validated :class:`Site` of a table read by a format reader."""
    offset = pd.Timedelta(hours=meta.time.utc_offset_hours)
    ends_utc = pd.DatetimeIndex(table.ends_local - offset)
    notes = [f"Converted by {READER_VERSION} from {table.path.name} ({table.format}, step {table.step_s} s)."]
    if table.step_s == 86400:
        times, values_, var_attrs, dis_attrs = daily_forcing(table, cols, meta)
        step = float(meta.conversion.disaggregation.step_s)
        notes.append("Forcing disaggregated from daily values: " + str(dis_attrs["disaggregation"]) + ".")
    else:
        values_, var_attrs = forcing_arrays(table, cols, meta, ends_utc)
        times, step, dis_attrs = ends_utc, float(table.step_s), {}
    fills = {k: a["gap_fill_count"] for k, a in var_attrs.items() if "gap_fill_count" in a}
    attrs = {
        "title": f"{meta.title or meta.name} forcing",
        "source_time_zone": f"{local_time(meta)}; converted to UTC",
        **_history(table),
        **dis_attrs,
    }
    if fills:
        attrs["gap_fill"] = "; ".join(f"{k} {n} ({var_attrs[k]['gap_fill_method']})" for k, n in fills.items())
        attrs["gap_fill_total"] = int(sum(fills.values()))
        notes.append(f"Forcing gaps filled: {attrs['gap_fill']} (max_gap={meta.conversion.max_gap}).")
    try:
        forcing = make_forcing(times, step, values_, attrs=attrs, var_attrs=var_attrs)
    except SiteError as exc:  # name the file and its column, not only dam's variable
        found = re.search(r"variable '(\w+)'", str(exc))
        source = cols.forcing.get(found.group(1)) if found else None
        column = f" (column {'/'.join(source.columns)})" if source else ""
        raise table.fail(f"{exc}{column}" + (f"; {utc_note(meta)}" if " UTC" in str(exc) else "")) from None
    from dam.readers.observations import observations  # it builds on this module's helpers

    obs = observations(table, cols, meta, ends_utc, meta_path)
    depths = {}
    if obs is not None:
        for kind, dim in (("soil_moisture", "sm_depth"), ("soil_temperature", "st_depth")):
            if kind in obs:
                depths[kind] = [float(d) for d in obs[dim].values]
    return check_site(Site(site_meta(meta, step, depths, notes), forcing, obs))
