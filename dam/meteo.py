"""Physical conversions used by the site converters (numpy, elementwise): humidity, vapour pressure,
shortwave from PAR, top-of-atmosphere shortwave, clear/cloudy-sky longwave."""

from __future__ import annotations

import numpy as np

from .sensors import SensorError as SensorError  # re-exported: the sensor mapping lives in dam.sensors
from .site_variables import ZERO_C, SiteError

# --------------------------------------------------------------------------------------------------------------
# Physical conversions (numpy, elementwise)
# --------------------------------------------------------------------------------------------------------------

EPS_WATER = 0.622  # ratio of the molar masses of water vapour and dry air, as in the HRLDAS point converter
SIGMA_SB = 5.67e-8  # Stefan-Boltzmann constant [W m-2 K-4]
SOLAR_CONSTANT = 1367.0  # W m-2
PAR_UMOL_PER_J_SW = 2.1  # umol of PAR per J of total shortwave (4.57 umol/J of PAR x ~0.46 PAR fraction)


def saturation_vapour_pressure(t_k: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure over water [Pa] (Bolton 1980), as the HRLDAS point-data converter uses it."""
    return 611.2 * np.exp(17.67 * (t_k - ZERO_C) / (t_k - 29.65))


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
