"""Hyytiälä 2000-2010 (daily; shortwave from PAR, longwave parameterised)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dam.sites import (
    DEFAULT_MAX_GAP,
    Site,
    SiteError,
    SiteMeta,
    check_site,
    daily_toa_shortwave,
    longwave_brutsaert_crawford_duchon,
    make_forcing,
    make_observations,
    saturation_vapour_pressure,
    shortwave_from_par,
    specific_humidity_from_vapour_pressure,
)

from .common import ZERO_C, _history

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
HYDE_LATITUDE, HYDE_LONGITUDE, HYDE_ELEVATION_M = 61.85, 24.29, 181.0


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
    forcing, sw_method, lw_method, n_e_clip = _hyytiala_forcing(c, times, par_umol_per_j, gaps, max_gap)
    obs = _hyytiala_observations(c, times)
    meta = _hyytiala_meta(sw_method, lw_method, n_e_clip)
    return check_site(Site(meta, forcing, obs))


def _hyytiala_forcing(c: dict, times: pd.DatetimeIndex, par_umol_per_j: float, gaps: str, max_gap: int | None):
    """The forcing Dataset of the columns ``c`` (see :func:`read_hyytiala_2000_2010`), the SW and LW methods and
    the number of days with clipped vapour pressure."""
    lat, elev = HYDE_LATITUDE, HYDE_ELEVATION_M
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
    return forcing, sw_method, lw_method, n_e_clip


def _hyytiala_observations(c: dict, times: pd.DatetimeIndex):
    """The observation Dataset of the columns ``c``: soil moisture and temperature of four horizons, fluxes, snow."""
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
    return obs


def _hyytiala_meta(sw_method: str, lw_method: str, n_e_clip: int) -> SiteMeta:
    """The site metadata, with the conversion notes."""
    lat, lon, elev = HYDE_LATITUDE, HYDE_LONGITUDE, HYDE_ELEVATION_M
    return SiteMeta(
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
