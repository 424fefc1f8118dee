"""NoahPy daily forcing files (Tanggula; forcing only, no observations)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dam.sites import (
    DEFAULT_MAX_GAP,
    Site,
    SiteError,
    SiteMeta,
    check_site,
    make_forcing,
    specific_humidity_from_rh,
)

from .common import _history

# --------------------------------------------------------------------------------------------------------------
# NoahPy forcing files (Tanggula)
# --------------------------------------------------------------------------------------------------------------


def _parse_namelist(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ln in text.splitlines():
        m = re.match(r"^\s*(\w+)\s*=\s*(.+?)\s*$", ln)
        if not m:
            continue
        key, val = m.group(1), m.group(2).strip()
        if val.startswith('"'):
            out[key] = val.strip('"')
            continue
        if val.upper() in (".TRUE.", ".FALSE."):
            out[key] = val.upper() == ".TRUE."
            continue
        try:
            nums = [float(x) for x in val.split()]
        except ValueError:
            out[key] = val
            continue
        out[key] = nums[0] if len(nums) == 1 else nums
    return out


TANGGULA_ZBOT_M = 20.0  # m: depth given to the file's deep soil temperature (below the 15.2 m column)
TANGGULA_MERGED_TOP = 3  # NoahPy's thin top layers merged into the model's first layer (stability at daily steps)


def read_noahpy_forcing(
    src: str | Path, *, gaps: str = "error", max_gap: int | None = DEFAULT_MAX_GAP, name: str = "tanggula_forcing_only"
) -> Site:
    """A NoahPy / Noah-LSM text forcing (``forcing.txt``: namelist, then ``<Forcing>`` rows), e.g. Tanggula.

    Rows: yyyy mm dd hh mi, wind (m s-1), wind direction, T (K), RH (%), p (hPa), SW, LW (W m-2), precipitation
    (kg m-2 s-1). Each daily row (stamped 00:00, "UTC") is taken as the mean of that calendar day, so the stamp
    of its interval end is the next day 00:00 UTC (the source day was probably China Standard Time, UTC+8: an
    offset below the daily resolution, noted). q from RH with the Bolton saturation pressure. No observations.
    """
    src = Path(src)
    path = src / "forcing.txt"
    if not path.is_file():
        raise SiteError(f"{src}: missing forcing.txt")
    text = path.read_text()
    head, sep, body = text.partition("<Forcing>")
    if not sep:
        raise SiteError(f"{path}: no <Forcing> tag")
    nml = _parse_namelist(re.split(r"^\s*/\s*$", head, maxsplit=1, flags=re.M)[0])
    rows = [ln.split() for ln in body.splitlines()[1:] if re.match(r"^\d{4} \d\d \d\d", ln)]
    arr = np.array(rows, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 13:
        raise SiteError(f"{path}: expected 13 fields per forcing row, got shape {arr.shape}")
    stamps = pd.to_datetime(
        {"year": arr[:, 0], "month": arr[:, 1], "day": arr[:, 2], "hour": arr[:, 3], "minute": arr[:, 4]}
    )
    step = float(nml.get("Forcing_Timestep", 86400.0))
    times = pd.DatetimeIndex(stamps + pd.Timedelta(seconds=step))
    t_k, rh, p = arr[:, 7], arr[:, 8], arr[:, 9] * 100.0
    n_rh = int((rh > 100).sum())
    rh = np.minimum(rh, 100.0)
    values = {
        "T_air": t_k,
        "q_air": specific_humidity_from_rh(t_k, rh, p),
        "p_sfc": p,
        "wind": arr[:, 5],
        "sw_down": arr[:, 10],
        "lw_down": arr[:, 11],
        "precip": arr[:, 12],
    }
    var_attrs = {
        "q_air": {"comment": f"from RH (%) with the Bolton es; RH > 100 clipped in {n_rh} steps"},
        "p_sfc": {"converted_from_units": "hPa"},
    }
    attrs = {
        "title": "Tanggula (TGL) daily forcing 2007-2010 (NoahPy)",
        "source_time_zone": "rows stamped 00:00 'UTC' hold daily means; stamp of the interval end = next day 00:00",
        **_history("forcing.txt"),
    }
    forcing = make_forcing(times, step, values, attrs=attrs, gaps=gaps, max_gap=max_gap, var_attrs=var_attrs)
    meta = _noahpy_meta(nml, stamps, step, name)
    return check_site(Site(meta, forcing, None))


def _noahpy_meta(nml: dict, stamps: pd.Series, step: float, name: str) -> SiteMeta:
    """The site metadata from the file's namelist ``nml``: location, heights, classes, soil column and the
    initial state, with the conversion notes."""
    thick = nml.get("Soil_layer_thickness")
    initial = {
        "valid_at_utc": str(stamps[0].isoformat()),
        "source": "forcing.txt &METADATA_NAMELIST (NoahPy)",
        "soil_layer_thickness_m": thick,
        "soil_temperature_K": nml.get("Soil_Temperature"),
        "soil_moisture": nml.get("Soil_Moisture"),
        "soil_liquid": nml.get("Soil_Liquid"),
        "skin_temperature_K": nml.get("Skin_Temperature"),
        "snow_depth_m": nml.get("Snow_depth"),
        "snow_water_equivalent_mm": nml.get("Snow_equivalent"),
        "canopy_liquid_mm": nml.get("Canopy_water"),
    }
    # NoahPy's 20-layer column (15.2 m) with its three thin top layers merged (see notes). Noah-MP's ZBOT_DATA (8 m)
    # lies inside it: the deep temperature of the file is placed at 20 m (an assumption, see notes).
    merged = [round(sum(thick[:TANGGULA_MERGED_TOP]), 9), *thick[TANGGULA_MERGED_TOP:]]
    column = {"layer_thickness_m": merged, "bottom_depth_m": TANGGULA_ZBOT_M,
              "bottom_temperature_K": nml.get("Deep_Soil_Temperature")}  # fmt: skip
    return SiteMeta(
        name=name,
        title="Tanggula (TGL), central Tibetan Plateau, daily forcing 2007-04 to 2010-12 (forcing only)",
        latitude=float(nml.get("Latitude", 33.02)),
        longitude=float(nml.get("Longitude", 91.96)),
        elevation_m=5100.0,
        time_zone="China Standard Time (UTC+8) probably; rows are daily means stamped 00:00 UTC",
        utc_offset_hours=8.0,
        time_step_s=step,
        reference_height_temperature_m=float(nml.get("Air_temperature_level", 2.0)),
        reference_height_wind_m=float(nml.get("Wind_level", 10.0)),
        vegetation_type_igbp=10,
        soil_type_stas=int(nml.get("Soil_type_index", 3)),
        soil_colour=4,
        max_vegetation_fraction=float(nml.get("Green_Vegetation_Max", 0.96)),
        licence="Apache-2.0 (CUG-hydro/NoahPy repository)",
        citation=(
            "Tian, W. & Nan, Z. (2025). wbtian/NoahPy: NoahPy v1.0.1. Zenodo. https://doi.org/10.5281/zenodo.16530326.",
            "Station: Cryosphere Research Station on the Qinghai-Xizang Plateau, CAS.",
        ),
        source="GitHub CUG-hydro/NoahPy data/forcing.txt (commit 6705f071); see SOURCE.md",
        notes=(
            "Forcing only: no soil observations (TGL ground temperatures were not found).",
            "Each row is a daily mean stamped 00:00 of its day; taken as the mean over that UTC day (end stamp = next "
            "day 00:00 UTC). The source day was probably China Standard Time (UTC+8).",
            "Elevation 5100 m from the pressure (~547 hPa), not stated in the file.",
            "Vegetation: the file gives USGS type 9 (mixed shrubland/grassland), mapped to IGBP 10 (grasslands, "
            "alpine meadow); soil: Soil_type_index 3 (sandy loam) of the file; colour 4 assumed.",
            "Wind direction (constant 249, a placeholder) dropped. Monthly albedo/green fraction/LAI/z0 of the file "
            "are not carried over.",
            "soil_column: NoahPy's 20-layer column of the file (15.2 m deep) with its three top layers (4.5, 4.6 and "
            "7.5 cm) merged into one of 16.6 cm: Noah-MP couples the surface energy balance to the top layer "
            "explicitly, and at this daily step a 4.5 cm top layer oscillates and diverges within 15 days "
            "(18 layers run the whole record). initial_state: the file's 20-layer profile, averaged onto the model "
            "layers. The per-layer NoahPy soil classes (Soil_htype) are not carried over: STAS 3 in every layer.",
            f"Deep soil temperature 272.43 K (Deep_Soil_Temperature of the file) placed at {TANGGULA_ZBOT_M:g} m, an "
            "assumption: Noah-MP's ZBOT_DATA (8 m) lies inside this column.",
        ),
        initial_state=initial,
        soil_column=column,
    )
