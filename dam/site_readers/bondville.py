"""Bondville 1998: the 30-min station file (``forcing98_with_validation.dat``, LST) and the HRLDAS forcing of the
Fortran Noah-MP reference run (``hrldas_bondville.dat``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from dam.sites import (
    DEFAULT_MAX_GAP,
    Site,
    SiteError,
    SiteMeta,
    UnreliableSeries,
    check_site,
    make_forcing,
    make_observations,
    specific_humidity_from_rh,
)

from .common import INCH_MM, ZERO_C, _history

MISSING_BONDVILLE = -6999.0


# --------------------------------------------------------------------------------------------------------------
# Bondville 1998
# --------------------------------------------------------------------------------------------------------------

BONDVILLE_COLUMNS = (
    "jday time w_speed w_dir Ta RH Pres Rg Par_in Par_out Rnet GHF rain wet IRT T_2cm T_4cm T_8cm T_16cm T_32cm "
    "T_64cm u_bar uw u2 v2 w2 H LE CO2 LW_in sm_5 sm_20 sm_60"
).split()
BONDVILLE_SM_DEPTHS = (0.05, 0.20, 0.60)  # m
BONDVILLE_ST_DEPTHS = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64)  # m
BONDVILLE_UTC_OFFSET = -6.0  # h: US Central Standard Time, no DST

_BONDVILLE_CITATION = (
    "Meyers, T. P. (NOAA/ARL). Bondville, IL surface flux site observations, 1998 (as distributed with the Noah "
    "LSM 2.7.1 test case).",
    "Ek, M. B. et al. (2003): Implementation of Noah land surface model advances in the NCEP operational "
    "mesoscale Eta model. J. Geophys. Res., 108(D22), 8851, doi:10.1029/2002JD003296.",
)
_BONDVILLE_UNRELIABLE = (
    UnreliableSeries(
        "soil_moisture",
        "Noah 2.7.1 User's Guide section 7: 20 and 60 cm soil moisture virtually time invariant over the year, "
        "accuracy very suspect (std 0.019 against 0.059 at 5 cm)",
        0.20,
    ),
    UnreliableSeries("soil_moisture", "as for 20 cm (Noah 2.7.1 User's Guide section 7)", 0.60),
)
# Initial state of the HRLDAS/Noah-MP reference run (namelist of hrldas_bondville.dat), valid 1998-01-02T00:00Z.
_BONDVILLE_INITIAL = {
    "valid_at_utc": "1998-01-02T00:00:00",
    "source": "hrldas_bondville.dat &initial namelist (used by the Noah-MP v5.2 reference run); its canopy_water "
    "0.01 mm and leaf_area_index 2.0 are not used (Noah-MP's initialisation sets canopy water to 0; LAI comes from "
    "the table by month)",
    "soil_layer_thickness_m": [0.10, 0.30, 0.60, 1.00],
    "soil_temperature_K": [266.1, 274.0, 276.9, 279.9],
    "soil_moisture": [0.298, 0.294, 0.271, 0.307],
    "skin_temperature_K": 263.7,
    "snow_depth_m": 0.01,
    "snow_water_equivalent_mm": 1.0,
}
# The Noah-MP reference run's soil column: 4 layers, TBOT 285 K at ZBOT = 8 m (hrldas_bondville.dat).
_BONDVILLE_COLUMN = {
    "layer_thickness_m": [0.10, 0.30, 0.60, 1.00],
    "bottom_depth_m": 8.0,
    "bottom_temperature_K": 285.0,
}


def _read_bondville_main(src: Path) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray]]:
    path = src / "forcing98_with_validation.dat"
    if not path.is_file():
        raise SiteError(f"{src}: missing forcing98_with_validation.dat")
    raw = np.loadtxt(path)
    if raw.ndim != 2 or raw.shape[1] != len(BONDVILLE_COLUMNS):
        raise SiteError(f"{path}: expected {len(BONDVILLE_COLUMNS)} columns, got shape {raw.shape}")
    cols = {name: raw[:, i] for i, name in enumerate(BONDVILLE_COLUMNS)}
    # Time stamps: end of the half hour in LST (UTC-6); jday=1,time=0 in the last record is 1999-01-01 00:00.
    hhmm = cols["time"].astype(int)
    year = np.where((cols["jday"] == 1) & (hhmm == 0) & (np.arange(raw.shape[0]) > 0), 1999, 1998)
    lst = (
        pd.to_datetime(year.astype(str), format="%Y")
        + pd.to_timedelta(cols["jday"] - 1, unit="D")
        + pd.to_timedelta(hhmm // 100, unit="h")
        + pd.to_timedelta(hhmm % 100, unit="min")
    )
    utc = pd.DatetimeIndex(lst - pd.Timedelta(hours=BONDVILLE_UTC_OFFSET))
    for name in cols:
        cols[name] = np.where(cols[name] == MISSING_BONDVILLE, np.nan, cols[name])
    return utc, cols


def _bondville_observations(times: pd.DatetimeIndex, c: dict[str, np.ndarray], source: str):
    sm = np.stack([c["sm_5"], c["sm_20"], c["sm_60"]], axis=-1)
    st = np.stack([c[f"T_{d}cm"] for d in (2, 4, 8, 16, 32, 64)], axis=-1) + ZERO_C
    values = {
        "soil_moisture": sm,
        "soil_temperature": st,
        "sensible_heat_flux": c["H"],
        "latent_heat_flux": c["LE"],
        "ground_heat_flux": c["GHF"],
        "net_radiation": c["Rnet"],
        "surface_temperature": c["IRT"] + ZERO_C,
    }
    var_attrs = {
        "soil_moisture": {"comment": "0.01 m3 m-3 resolution; 20 and 60 cm flagged unreliable (site.yaml)"},
        "soil_temperature": {"converted_from_units": "degC"},
        "sensible_heat_flux": {"comment": "eddy covariance at 6 m"},
        "latent_heat_flux": {"comment": "eddy covariance at 6 m, not energy-balance corrected"},
        "surface_temperature": {"converted_from_units": "degC", "comment": "infrared thermometer (IRT)"},
    }
    return make_observations(
        times,
        values,
        depths={"soil_moisture": BONDVILLE_SM_DEPTHS, "soil_temperature": BONDVILLE_ST_DEPTHS},
        attrs={"title": "Bondville 1998 observations", **_history(source, "-6999 -> NaN; degC -> K")},
        var_attrs=var_attrs,
    )


def _bondville_meta(name: str, wind_height: float, notes: list[str]) -> SiteMeta:
    return SiteMeta(
        name=name,
        title="Bondville, Illinois, USA, 1998 (NOAA/ARL flux site; Noah LSM 2.7.1 test case)",
        latitude=40.01,
        longitude=-88.37,
        elevation_m=218.0,
        time_zone="US Central Standard Time (UTC-6, no daylight saving); files are UTC",
        utc_offset_hours=BONDVILLE_UTC_OFFSET,
        time_step_s=1800.0,
        reference_height_temperature_m=3.0,
        reference_height_wind_m=wind_height,
        vegetation_type_igbp=12,
        max_vegetation_fraction=0.96,
        soil_type_stas=8,
        soil_colour=4,
        licence="Public domain (US Government work, NOAA/ARL; distributed by NOAA/NCEP EMC). Credit NOAA/ARL "
        "(T. Meyers) and NCEP/EMC.",
        citation=_BONDVILLE_CITATION,
        source="GitHub NOAA-EMC/NoahLSM test/forcing98_with_validation.dat (commit 3e4eca57); see SOURCE.md",
        sensor_depths_m={"soil_moisture": BONDVILLE_SM_DEPTHS, "soil_temperature": BONDVILLE_ST_DEPTHS},
        notes=tuple(
            [
                "Vegetation (MODIS IGBP 12 croplands), soil (STAS 8 silty clay loam), soil colour 4 and SHDMAX 0.96 "
                "are those of the HRLDAS/Noah-MP v5.2 reference run (the Noah 2.7.1 test used loam and GFS veg 16).",
                "Noah-MP reference run: reference height ZLVL = 10 m for temperature and wind; 4 layers "
                "0.1/0.3/0.6/1.0 m; TBOT 285 K at 8 m.",
                "Soil moisture sensors read liquid water only (soil_moisture_measures: liquid): a hard frost halves "
                "the 5 cm reading within two days (local daily means 0.36 -> 0.18 on 12-14 Jan, 0.38 -> 0.19 on 21-23 "
                "Dec) and the thaw restores it without rain, as for any dielectric (TDR/reflectometer) probe.",
                *notes,
            ]
        ),
        unreliable=_BONDVILLE_UNRELIABLE,
        soil_moisture_measures="liquid",
        initial_state=_BONDVILLE_INITIAL,
        soil_column=_BONDVILLE_COLUMN,
    )


def read_bondville_1998(
    src: str | Path, *, wind: str = "w_speed", gaps: str = "error", max_gap: int | None = DEFAULT_MAX_GAP
) -> Site:
    """Bondville 1998 from ``forcing98_with_validation.dat`` (30 min, LST = UTC-6, stamps = end of interval).

    Conversions: time LST -> UTC (+6 h); Ta degC -> K; RH % (clipped to 100: sensor artefact up to 109.4 %) ->
    specific humidity with the HRLDAS formula (Bolton saturation pressure, q = 0.622 e / (p - 0.378 e));
    pressure hPa -> Pa; rain inches per 30 min -> kg m-2 s-1 (x 25.4 / 1800); SW -0 -> 0; -6999 -> NaN.
    ``wind="w_speed"`` (default) uses the complete 10 m propeller wind (2 negative values clipped to 0), as the
    Noah 2.7.1 driver; ``wind="u_bar"`` uses the 6 m eddy-covariance wind (1526 missing: needs ``gaps``).
    The 2 missing SW values (1998-07-26 10:00-10:30 LST) make ``gaps="error"`` raise: choose a fill method.
    Observations: SM at 5/20/60 cm, ST at 2..64 cm, H, LE, G, Rnet, IRT (never filled).
    """
    src = Path(src)
    times, c = _read_bondville_main(src)
    t_k = c["Ta"] + ZERO_C
    n_rh = int((c["RH"] > 100.0).sum())
    rh = np.minimum(c["RH"], 100.0)
    p = c["Pres"] * 100.0
    if wind == "w_speed":
        n_neg_wind = int((c["w_speed"] < 0).sum())
        u = np.maximum(c["w_speed"], 0.0)
        wind_height = 10.0
        wind_note = f"wind: w_speed (10 m propeller anemometer); {n_neg_wind} negative values clipped to 0"
    elif wind == "u_bar":
        u, wind_height, n_neg_wind = c["u_bar"], 6.0, 0
        wind_note = "wind: u_bar (6 m eddy-covariance mean wind vector speed)"
    else:
        raise SiteError(f"wind must be 'w_speed' or 'u_bar', got {wind!r}")
    n_neg_sw = int((c["Rg"] < 0).sum())
    sw = np.where(c["Rg"] < 0, 0.0, c["Rg"])
    values = {
        "T_air": t_k,
        "q_air": specific_humidity_from_rh(t_k, rh, p),
        "p_sfc": p,
        "wind": u,
        "sw_down": sw,
        "lw_down": c["LW_in"],
        "precip": c["rain"] * INCH_MM / 1800.0,
    }
    var_attrs = {
        "T_air": {"converted_from_units": "degC", "height_m": 3.0},
        "q_air": {
            "comment": f"from RH (%) with svp = 611.2 exp(17.67 (T - 273.15) / (T - 29.65)) Pa and q = 0.622 e / "
            f"(p - 0.378 e); RH > 100 % clipped to 100 in {n_rh} steps",
            "clipped_count": n_rh,
        },
        "p_sfc": {"converted_from_units": "hPa"},
        "wind": {"comment": wind_note, "height_m": wind_height, "clipped_count": n_neg_wind},
        "sw_down": {"comment": f"negative values set to 0: {n_neg_sw}", "clipped_count": n_neg_sw},
        "precip": {"converted_from_units": "inch per 30 min"},
    }
    attrs = {
        "title": "Bondville 1998 forcing",
        "source_time_zone": "LST = UTC-6; stamps = end of the half hour; converted to UTC",
        **_history("forcing98_with_validation.dat"),
    }
    forcing = make_forcing(times, 1800.0, values, attrs=attrs, gaps=gaps, max_gap=max_gap, var_attrs=var_attrs)
    obs = _bondville_observations(times, c, "forcing98_with_validation.dat")
    notes = [
        "Converted from forcing98_with_validation.dat; time LST (UTC-6, end of half hour) -> UTC.",
        wind_note + ".",
        f"RH above 100 % (sensor artefact, up to 109.4 %) clipped to 100 in {n_rh} steps; negative SW set to 0 in "
        f"{n_neg_sw} steps.",
        f"Forcing gaps: {forcing.attrs['gap_fill']}.",
        "Temperature/RH measured at 3 m; the soil moisture has 0.01 m3 m-3 resolution.",
    ]
    return check_site(Site(_bondville_meta("bondville_1998", wind_height, notes), forcing, obs))


def read_bondville_1998_hrldas(src: str | Path, *, gaps: str = "error", max_gap: int | None = DEFAULT_MAX_GAP) -> Site:
    """Bondville 1998 forcing of ``hrldas_bondville.dat``, converted as HRLDAS ``create_point_data`` does.

    This is the forcing of the Fortran Noah-MP v5.2 reference run (``tests/data/noahmp_full``): UTC stamps,
    u_bar wind gap-filled by the HRLDAS authors, RH not clipped, conversions in float32 like the single-precision
    converter (T + 273.15, p x 100, rain x 0.014111, q from RH). The stored float32 values are the LDASIN values
    the model read. Observations come from ``forcing98_with_validation.dat`` on the same UTC stamps.
    """
    src = Path(src)
    path = src / "hrldas_bondville.dat"
    if not path.is_file():
        raise SiteError(f"{src}: missing hrldas_bondville.dat")
    rows = [ln.split() for ln in path.read_text().splitlines() if re.match(r"^\d{4} \d\d \d\d \d\d \d\d\s", ln)]
    arr = np.array(rows, dtype=np.float64)
    times = pd.to_datetime(
        {"year": arr[:, 0], "month": arr[:, 1], "day": arr[:, 2], "hour": arr[:, 3], "minute": arr[:, 4]}
    )
    f32 = np.float32
    wind, t_c, rh, p_mb, sw, lw, rain = (arr[:, k].astype(f32) for k in range(5, 12))
    t_k = t_c * f32(1.0) + f32(ZERO_C)
    p = p_mb * f32(100.0)
    svp = f32(611.2) * np.exp(f32(17.67) * (t_k - f32(ZERO_C)) / (t_k - f32(29.65)))
    e = rh / f32(100.0) * svp
    q = (f32(0.622) * e) / (p - (f32(1.0) - f32(0.622)) * e)
    values = {
        "T_air": t_k,
        "q_air": q,
        "p_sfc": p,
        "wind": wind,
        "sw_down": sw,
        "lw_down": lw,
        "precip": rain * f32(0.014111),
    }
    var_attrs = {
        "q_air": {"comment": "float32 HRLDAS create_point_data conversion from RH (not clipped)"},
        "wind": {"comment": "u_bar (6 m) gap-filled by the HRLDAS authors; used by HRLDAS as the 10 m wind"},
        "precip": {"converted_from_units": "inch per 30 min (x 0.014111 in float32)"},
    }
    attrs = {
        "title": "Bondville 1998 forcing as used by the HRLDAS/Noah-MP v5.2 reference run",
        **_history("hrldas_bondville.dat", "float32 arithmetic as in HRLDAS create_point_data.f90"),
    }
    forcing = make_forcing(times, 1800.0, values, attrs=attrs, gaps=gaps, max_gap=max_gap, var_attrs=var_attrs)
    main_times, c = _read_bondville_main(src)
    keep = main_times.isin(forcing.indexes["time"])
    if keep.sum() != forcing.sizes["time"]:
        raise SiteError(f"{src}: the HRLDAS and main Bondville files do not share the UTC time stamps")
    obs = _bondville_observations(main_times[keep], {k: v[keep] for k, v in c.items()}, "forcing98_with_validation.dat")
    notes = [
        "Forcing converted from hrldas_bondville.dat exactly as HRLDAS create_point_data (float32): this is the "
        "forcing of the Fortran reference run tests/data/noahmp_full/bondville (its first record, 1998-01-02T00:00Z, "
        "is read but "
        "never used by the model).",
        "Wind is u_bar (6 m eddy covariance) gap-filled by the HRLDAS authors (missing u_bar ~ 0.85 x w_speed), "
        "treated as the 10 m wind by the reference run; RH up to 109.4 % is not clipped.",
        "Observations from forcing98_with_validation.dat, shifted from LST (UTC-6) to UTC.",
    ]
    meta = _bondville_meta("bondville_1998_hrldas", 10.0, notes)
    return check_site(Site(meta, forcing, obs))
