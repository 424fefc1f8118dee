"""FLUXNET2015 / ONEFlux FULLSET files (also the ICOS and Warm Winter 2020 releases in FLUXNET format, and
AmeriFlux's ONEFlux product ``AMF_<ID>_FLUXNET_FULLSET_<res>_<years>_<ver>.csv``).

Half-hourly (``HH``), hourly (``HR``) and daily (``DD``) files. Forcing: the consolidated ``*_F`` variables
(measured, MDS gap-filled, ERA-downscaled where the tower was off): ``TA_F`` degC, ``VPD_F`` hPa, ``PA_F`` kPa,
``WS_F`` m s-1, ``SW_IN_F``, ``LW_IN_F`` W m-2, ``P_F`` mm per step. Observations: ``SWC_F_MDS_n`` (%) and
``TS_F_MDS_n`` (degC) at the depths the metadata gives for profile position n, ``H_F_MDS``, ``LE_F_MDS``,
``G_F_MDS``, ``NETRAD`` (+ the energy-balance-corrected ``H_CORR``/``LE_CORR`` kept as extra series). Missing:
-9999. Times: local standard time; ``TIMESTAMP_START``/``TIMESTAMP_END`` (YYYYMMDDHHMM) in sub-daily files,
``TIMESTAMP`` (YYYYMMDD, the local day) in daily files. Quality (``*_QC``): sub-daily files flag 0 (measured),
1 (good gap-fill), 2 (medium; ERA for the met variables), 3 (poor); daily files give the fraction of good
half-hours. The rules of ``conversion.quality`` turn them into gaps (forcing) or NaN (observations).
Daily files are disaggregated (:mod:`dam.disaggregate`); ``TA_F_DAY``/``TA_F_NIGHT`` give the temperature cycle.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from dam.readers.common import SW_CLIP_LOWEST, Columns, Source, Table, build_site, read_csv, time_steps
from dam.readers.metadata import SiteMetadata
from dam.sites import Site, SiteError

STEPS = {"HH": 1800, "HR": 3600, "DD": 86400}
# FLX_ (FLUXNET2015), ICOSETC_ (ICOS), AMF_..._FLUXNET_FULLSET/SUBSET_ (AmeriFlux's ONEFlux product; the lookahead
# keeps AmeriFlux BASE files, AMF_<ID>_BASE_..., out)
FILE_PATTERN = re.compile(
    r"^(?:FLX_|ICOSETC_|AMF_(?=[A-Z]{2}-[A-Za-z0-9]{3}_FLUXNET_(?:FULLSET|SUBSET)_))"
    r"([A-Z]{2}-[A-Za-z0-9]{3})_.*?_(HH|HR|DD|WW|MM|YY)_.*\.csv$"
)
FORCING = {
    "T_air": ("TA_F", "degC"),
    "humidity": ("VPD_F", "hPa"),
    "p_sfc": ("PA_F", "kPa"),
    "wind": ("WS_F", "m s-1"),
    "sw_down": ("SW_IN_F", "W m-2"),
    "lw_down": ("LW_IN_F", "W m-2"),
    "precip": ("P_F", "mm per step"),
}
FLUXES = {
    "sensible_heat_flux": "H_F_MDS",
    "latent_heat_flux": "LE_F_MDS",
    "ground_heat_flux": "G_F_MDS",
    "net_radiation": "NETRAD",
}
CORRECTED = {
    "sensible_heat_flux_corrected": ("H_CORR", "sensible heat flux corrected for energy-balance closure, + up"),
    "latent_heat_flux_corrected": ("LE_CORR", "latent heat flux corrected for energy-balance closure, + up"),
}
SOIL = {"soil_moisture": (r"SWC_F_MDS_\d+", "%"), "soil_temperature": (r"TS_F_MDS_\d+", "degC")}


def is_fluxnet_file(path: Path) -> bool:
    return FILE_PATTERN.match(path.name) is not None


def _flag_rule(max_flag: int | None, min_fraction: float | None, daily: bool, key: str):
    if daily and min_fraction is not None:
        return f"{key}_min_fraction={min_fraction:g}", lambda qc: qc < min_fraction
    if not daily and max_flag is not None:
        return f"{key}_max_flag={max_flag}", lambda qc: qc > max_flag
    return None


def read_table(path: Path) -> Table:
    """The file as a :class:`Table` (interval ends in local standard time)."""
    m = FILE_PATTERN.match(path.name)
    resolution = m.group(2) if m else None
    if resolution in ("WW", "MM", "YY"):
        raise SiteError(f"{path.name}: {resolution} files are too coarse for a station model (use HH, HR or DD)")
    frame = read_csv(path, [-9999, "-9999", "-9999.0"], dtype={"TIMESTAMP": str, "TIMESTAMP_END": str})
    if "TIMESTAMP_END" in frame:
        ends = pd.to_datetime(frame["TIMESTAMP_END"], format="%Y%m%d%H%M", errors="coerce")
    elif "TIMESTAMP" in frame and (resolution == "DD" or frame["TIMESTAMP"].str.len().eq(8).all()):
        ends = pd.to_datetime(frame["TIMESTAMP"], format="%Y%m%d", errors="coerce") + pd.Timedelta(days=1)
        resolution = "DD"
    else:
        raise SiteError(
            f"{path.name}: unknown time-stamp convention (rule: FLUXNET files have TIMESTAMP_START/TIMESTAMP_END "
            "(YYYYMMDDHHMM, sub-daily) or TIMESTAMP (YYYYMMDD, daily))"
        )
    if ends.isna().any():
        i = int(np.argmax(ends.isna().to_numpy()))
        raise SiteError(f"{path.name}: time stamp in data row {i + 1} is not a valid date")
    ends = pd.DatetimeIndex(ends)
    steps = time_steps(path.name, ends, frame["TIMESTAMP_END" if "TIMESTAMP_END" in frame else "TIMESTAMP"])
    if len(steps) != 1:
        raise SiteError(f"{path.name}: the time stamps are not regular (steps {steps[:5].tolist()} s); rows missing?")
    step = int(steps[0])
    if resolution is not None and STEPS[resolution] != step:
        raise SiteError(f"{path.name}: the file name says {resolution} but the rows are {step} s apart")
    if step not in STEPS.values():
        raise SiteError(f"{path.name}: time step {step} s (FLUXNET files are HH, HR or DD)")
    return Table(path, frame, ends, step, f"FLUXNET {next(k for k, v in STEPS.items() if v == step)}")


def columns(table: Table, meta: SiteMetadata) -> Columns:
    """Where each quantity is in a FLUXNET table (defaults, overridden by ``conversion.forcing_columns``)."""
    daily = table.step_s == 86400
    q = meta.conversion.quality
    key = "conversion.quality"
    forcing_rule = _flag_rule(q.forcing_max_flag, q.forcing_min_fraction, daily, f"{key}.forcing")
    obs_rule = _flag_rule(q.observations_max_flag, q.observations_min_fraction, daily, f"{key}.observations")
    chosen = meta.conversion.forcing_columns
    forcing = {}
    for name, (col, units) in FORCING.items():
        col = chosen.get(name, col)
        forcing[name] = Source([col], "%" if col.startswith("RH") else units, f"{col}_QC", forcing_rule)
    kind = "relative_humidity" if forcing["humidity"].columns[0].startswith("RH") else "vapour_pressure_deficit"
    missing = [s.columns[0] for s in forcing.values() if s.columns[0] not in table.frame]
    if missing:
        raise table.fail(
            f"missing required forcing column(s) {missing} (rule: FLUXNET forcing needs "
            f"{', '.join(c for c, _ in FORCING.values())}; choose others with conversion.forcing_columns)"
        )
    obs = {name: Source([col], "W m-2", f"{col}_QC", obs_rule) for name, col in FLUXES.items()}
    day_temperature = {
        key: Source([chosen.get(key, col)], "degC")
        for key, col in (("T_air_day", "TA_F_DAY"), ("T_air_night", "TA_F_NIGHT"))
        if chosen.get(key, col) in table.frame
    }
    day_temperature |= {k: Source([chosen[k]], "degC") for k in ("T_air_min", "T_air_max") if k in chosen}
    return Columns(
        forcing=forcing,
        humidity_kind=kind,
        observations=obs,
        soil_pattern={k: p for k, (p, _) in SOIL.items()},
        soil_units={k: u for k, (_, u) in SOIL.items()},
        soil_qc=lambda col: Source([col], "", f"{col}_QC", obs_rule),
        daily_temperature=day_temperature,
        extra_series={
            name: (Source([col], "W m-2"), {"units": "W m-2", "long_name": long})
            for name, (col, long) in CORRECTED.items()
        },
        clip_negative={"sw_down": SW_CLIP_LOWEST},  # ICOS and ONEFlux files can carry a night-time offset
    )


def read_fluxnet(path: str | Path, meta: SiteMetadata, meta_path: str = "the metadata file") -> Site:
    """Convert a FLUXNET FULLSET file with its metadata into a validated :class:`dam.sites.Site`."""
    path = Path(path)
    m = FILE_PATTERN.match(path.name)
    if m and meta.site_id and m.group(1) != meta.site_id:
        raise SiteError(f"{path.name}: the file is site {m.group(1)} but {meta_path} says site_id {meta.site_id}")
    table = read_table(path)
    site = build_site(table, columns(table, meta), meta, meta_path)
    return site
