"""Converters from the original station files (one folder per source, named as in :data:`CONVERTERS`; the test
suite ships copies in ``tests/data/stations``) to :class:`dam.sites.Site` objects.

Each reader reads its source folder (the ``SOURCE.md`` there documents units, time zones, depths and known
problems), converts to the canonical variables of :mod:`dam.sites` and returns a validated :class:`Site`.
Every correction a reader makes (clipping RH above 100 %, negative wind or shortwave to 0, derived
variables) is counted and recorded in the attributes of the variable it touched and in ``site.yaml`` notes.

=========================  ==============================================================================
source name                reader
=========================  ==============================================================================
``bondville_1998``         :func:`read_bondville_1998` (``forcing98_with_validation.dat``, 30 min, LST)
``bondville_1998_hrldas``  :func:`read_bondville_1998_hrldas` (``hrldas_bondville.dat``: the forcing the Fortran
                           Noah-MP reference run used, + the observations of the main file)
``hyytiala_2000_2010``     :func:`read_hyytiala_2000_2010` (daily; SW from PAR, LW parameterised)
``tanggula_forcing_only``  :func:`read_noahpy_forcing` (NoahPy daily forcing, no observations)
=========================  ==============================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dam.sites import (
    DEFAULT_MAX_GAP,
    Site,
    SiteError,
    SiteMeta,
    UnreliableSeries,
    check_site,
    daily_toa_shortwave,
    longwave_brutsaert_crawford_duchon,
    make_forcing,
    make_observations,
    saturation_vapour_pressure,
    shortwave_from_par,
    specific_humidity_from_rh,
    specific_humidity_from_vapour_pressure,
)

ZERO_C = 273.15  # K
INCH_MM = 25.4  # mm per inch
MISSING_BONDVILLE = -6999.0
CONVERTER_VERSION = "dam.site_readers 1"


def _history(source: str, extra: str = "") -> dict[str, str]:
    return {"source_files": source, "converter": CONVERTER_VERSION, **({"conversion_notes": extra} if extra else {})}


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
    svp = f32(611.2) * np.exp(f32(17.67) * (t_k - f32(273.15)) / (t_k - f32(29.65)))
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


# --------------------------------------------------------------------------------------------------------------
# Hyytiälä 2000-2010 (daily)
# --------------------------------------------------------------------------------------------------------------

HYDE_COLUMNS = (
    "yyyy mm dd doy NEE GPP TER ET H NEEflag ETflag Hflag PAR Rnet Tair VPD CO2 Precip_SMEAR Precip_FMI U P SWE "
    "SWC_humus SWC_A SWC_B SWC_C Tsoil_humus Tsoil_A Tsoil_B Tsoil_C Rnetflag Trfall Snowdepth Snowdepth_std SWE2 "
    "SWE2_std Roff1 Roff2"
).split()
# Approximate sensor depths (m below the top of the organic layer), SOURCE.md: humus 0-5 cm, A 5-8 cm, B 10-20 cm,
# C 40-60 cm; the middle of each range is used.
HYDE_DEPTHS = (0.025, 0.065, 0.15, 0.50)
HYDE_UTC_OFFSET = 2.0  # h: Finnish winter time, kept all year in SMEAR II data


def read_hyytiala_2000_2010(
    src: str | Path,
    *,
    gaps: str = "error",
    max_gap: int | None = DEFAULT_MAX_GAP,
    par_umol_per_j: float = 2.1,
) -> Site:
    """Hyytiälä SMEAR II daily 2000-2010 (``HydeDaily2000-2010.txt``).

    Time: each row is a local (UTC+2) day, so its interval is [d 00:00, d+1 00:00) UTC+2 and the stamp is its end,
    d+1 00:00 UTC+2 = d 22:00 UTC. Conversions: Tair degC -> K; q from VPD (kPa) and Tair via e = es(T) - VPD with
    the Bolton es (daily means: es(mean T) is used, which underestimates the daily mean es slightly; e clipped to
    >= 1 % of es, counted); P hPa (the readme's kPa is wrong) -> Pa; Precip_FMI mm/d -> kg m-2 s-1; SW = PAR / 2.1;
    LW from Brutsaert (1975) clear-sky emissivity with the Crawford & Duchon (1999) cloud correction, cloud
    fraction from SW against the FAO-56 clear-sky SW (0.75 + 2e-5 z) x TOA. Observations: SM and ST of the humus,
    A, B, C horizons at approximate depths :data:`HYDE_DEPTHS`, ET, H, Rnet, SWE, snow depth.
    """
    src = Path(src)
    path = src / "HydeDaily2000-2010.txt"
    if not path.is_file():
        raise SiteError(f"{src}: missing HydeDaily2000-2010.txt")
    raw = np.loadtxt(path)
    if raw.ndim != 2 or raw.shape[1] != len(HYDE_COLUMNS):
        raise SiteError(f"{path}: expected {len(HYDE_COLUMNS)} columns, got shape {raw.shape}")
    c = {name: raw[:, i] for i, name in enumerate(HYDE_COLUMNS)}
    days = pd.to_datetime({"year": c["yyyy"], "month": c["mm"], "day": c["dd"]})
    times = pd.DatetimeIndex(days + pd.Timedelta(days=1) - pd.Timedelta(hours=HYDE_UTC_OFFSET))
    lat, lon, elev = 61.85, 24.29, 181.0
    t_k = c["Tair"] + ZERO_C
    p = c["P"] * 100.0
    es = saturation_vapour_pressure(t_k)
    e_raw = es - c["VPD"] * 1000.0
    n_e_clip = int((e_raw < 0.01 * es).sum())
    e = np.maximum(e_raw, 0.01 * es)
    sw = shortwave_from_par(c["PAR"], par_umol_per_j)
    n_sw_neg = int((sw < 0).sum())
    sw = np.maximum(sw, 0.0)
    sw_clear = (0.75 + 2e-5 * elev) * daily_toa_shortwave(lat, c["doy"])
    lw, cloud = longwave_brutsaert_crawford_duchon(t_k, e, sw, sw_clear)
    values = {
        "T_air": t_k,
        "q_air": specific_humidity_from_vapour_pressure(e, p),
        "p_sfc": p,
        "wind": c["U"],
        "sw_down": sw,
        "lw_down": lw,
        "precip": c["Precip_FMI"] / 86400.0,
    }
    sw_method = f"SW = PAR / {par_umol_per_j:g} (PAR in umol m-2 s-1; SOURCE.md); {n_sw_neg} negative set to 0"
    lw_method = (
        "LW = eps sigma T^4, eps = c + (1 - c) 1.24 (e[hPa]/T)^(1/7) (Brutsaert 1975, Crawford & Duchon 1999), "
        "c = clip(1 - SW / SW_clear, 0, 1), SW_clear = (0.75 + 2e-5 z) x daily TOA (FAO-56)"
    )
    var_attrs = {
        "T_air": {"converted_from_units": "degC", "comment": "daily mean"},
        "q_air": {
            "comment": "from VPD (kPa) and Tair: e = es(T) - VPD, Bolton es; "
            f"e clipped to >= 0.01 es in {n_e_clip} days",
            "clipped_count": n_e_clip,
        },
        "p_sfc": {"converted_from_units": "hPa (readme says kPa; values 951-1030 are hPa)"},
        "sw_down": {"derived": sw_method},
        "lw_down": {"derived": lw_method, "mean_cloud_fraction": float(cloud.mean())},
        "precip": {"converted_from_units": "mm d-1", "comment": "Precip_FMI (Hyytiälä FMI station, complete)"},
    }
    attrs = {
        "title": "Hyytiälä SMEAR II daily forcing 2000-2010",
        "source_time_zone": "UTC+2 days (Finnish winter time); stamp = end of the local day, in UTC",
        "sw_down_method": sw_method,
        "lw_down_method": lw_method,
        **_history("HydeDaily2000-2010.txt"),
    }
    forcing = make_forcing(times, 86400.0, values, attrs=attrs, gaps=gaps, max_gap=max_gap, var_attrs=var_attrs)
    obs_values = {
        "soil_moisture": np.stack([c["SWC_humus"], c["SWC_A"], c["SWC_B"], c["SWC_C"]], axis=-1),
        "soil_temperature": np.stack([c["Tsoil_humus"], c["Tsoil_A"], c["Tsoil_B"], c["Tsoil_C"]], axis=-1) + ZERO_C,
        "evapotranspiration": c["ET"] / 86400.0,
        "sensible_heat_flux": c["H"],
        "net_radiation": c["Rnet"],
        "snow_water_equivalent": c["SWE"],
        "snow_depth": c["Snowdepth"] / 100.0,
    }
    horizons = "humus, A, B, C horizons"
    obs_attrs = {
        "soil_moisture": {"comment": f"{horizons}; depths approximate (SOURCE.md)"},
        "soil_temperature": {"comment": f"{horizons}; depths approximate", "converted_from_units": "degC"},
        "evapotranspiration": {"converted_from_units": "mm d-1", "comment": "eddy covariance, gap-filled"},
        "snow_depth": {"converted_from_units": "cm"},
    }
    obs = make_observations(
        times,
        obs_values,
        depths={"soil_moisture": HYDE_DEPTHS, "soil_temperature": HYDE_DEPTHS},
        attrs={"title": "Hyytiälä SMEAR II daily observations 2000-2010", **_history("HydeDaily2000-2010.txt")},
        var_attrs=obs_attrs,
    )
    meta = SiteMeta(
        name="hyytiala_2000_2010",
        title="Hyytiälä SMEAR II (FI-Hyy), Finland, daily 2000-2010, Scots pine forest on podzol",
        latitude=lat,
        longitude=lon,
        elevation_m=elev,
        time_zone="Finnish winter time (UTC+2) all year; files are UTC",
        utc_offset_hours=HYDE_UTC_OFFSET,
        time_step_s=86400.0,
        reference_height_temperature_m=16.8,
        reference_height_wind_m=16.8,
        vegetation_type_igbp=1,
        soil_type_stas=3,
        soil_colour=4,
        licence="SMEAR II data: CC BY 4.0, attribution to INAR, University of Helsinki (SMEAR terms of use; confirm "
        "before external publication). Carrying repository LukeEcomod/SpaFHy_v1 is MIT.",
        citation=(
            "Launiainen, S., Guan, M., Salmivaara, A., Kieloaho, A.-J. (2019). Modeling boreal forest "
            "evapotranspiration and water balance at stand and catchment scales: a spatial approach. Hydrol. Earth "
            "Syst. Sci. 23, 3457-3480, doi:10.5194/hess-23-3457-2019.",
            "Kolari, P. et al. (2009). CO2 exchange and component CO2 fluxes of a boreal Scots pine forest. Boreal "
            "Env. Res. 14, 761-783.",
            "Hari, P. & Kulmala, M. (2005). Station for Measuring Ecosystem-Atmosphere Relations (SMEAR II). Boreal "
            "Env. Res. 10, 315-322.",
        ),
        source="GitHub LukeEcomod/SpaFHy_v1 data/HydeDaily2000-2010.txt (commit 6fdd9e40); see SOURCE.md",
        sensor_depths_m={"soil_moisture": HYDE_DEPTHS, "soil_temperature": HYDE_DEPTHS},
        notes=(
            "Daily means/sums; days are local UTC+2 days (assumed: the readme does not say).",
            "No SW or LW measured in this file: " + sw_method + "; " + lw_method + ".",
            f"Humidity from daily-mean VPD and Tair; e clipped to >= 1 % of es on {n_e_clip} days.",
            "Sensor depths are approximate horizon depths (humus 0-5 cm, A 5-8 cm, B 10-20 cm, C 40-60 cm below the "
            "top of the organic layer); the middle of each range is used.",
            "Measurement heights are not stated in the file: 16.8 m (a SMEAR II mast level, above the ~15 m "
            "canopy) is assumed for temperature and wind.",
            "Vegetation IGBP 1 (evergreen needleleaf forest); soil STAS 3 (sandy loam, podzol on sandy till) and "
            "colour 4 are assumptions.",
            "Precipitation: Precip_FMI (complete); the SMEAR II gauge (76 NaN) is not used. ET, H and Rnet are "
            "gap-filled by the compiler; SWE and snow depth are mostly NaN.",
            "Soil moisture is compared as total water (soil_moisture_measures: total): the file does not name the "
            "sensors, and the observed soil stays near or above 0 C under the snow (monthly 2.5 cm means >= -1 C, "
            "deeper horizons above 0 C), so observed liquid and total water agree.",
        ),
        # SOURCE.md flags no Hyytiala series as unreliable: approximate horizon depths are a note, not a flag.
        unreliable=(),
        soil_moisture_measures="total",
    )
    return check_site(Site(meta, forcing, obs))


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
    meta = SiteMeta(
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
    return check_site(Site(meta, forcing, None))


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Converter:
    """A source format: the name of its source folder and the reader."""

    folder: str
    read: Callable[..., Site]


CONVERTERS: dict[str, Converter] = {
    "bondville_1998": Converter("bondville_1998", read_bondville_1998),
    "bondville_1998_hrldas": Converter("bondville_1998", read_bondville_1998_hrldas),
    "hyytiala_2000_2010": Converter("hyytiala_2000_2010", read_hyytiala_2000_2010),
    "tanggula_forcing_only": Converter("tanggula_forcing_only", read_noahpy_forcing),
}


def identify_source(folder: str | Path) -> str:
    """The converter name for a source folder (by folder name, else by the files it holds)."""
    p = Path(folder)
    if p.name in CONVERTERS:
        return p.name
    if (p / "forcing98_with_validation.dat").is_file():
        return "bondville_1998"
    if (p / "hrldas_bondville.dat").is_file():
        return "bondville_1998_hrldas"
    if (p / "HydeDaily2000-2010.txt").is_file():
        return "hyytiala_2000_2010"
    if (p / "forcing.txt").is_file() and "<forcing>" in (p / "forcing.txt").read_text()[:20000].lower():
        return "tanggula_forcing_only"
    raise SiteError(f"{p}: no known source format (known: {sorted(CONVERTERS)})")
