"""Solar geometry for station forcing, as the HRLDAS driver computes it (``CALC_DECLIN``).

The driver evaluates the zenith angle at the END of each step, treats time as UTC, uses a 365-day orbit
with a fixed 23.5 degree obliquity and no equation of time. Reproducing it (rather than a more accurate
ephemeris) keeps the shortwave partition identical to the Fortran reference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_DEGRAD = 3.14159265 / 180.0  # the driver's own pi
_DEG_PER_DAY = 360.0 / 365.0


def julian_day(times_utc: pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Day of year minus one plus the fraction of the day (1998-01-02T00:30Z -> 1.0208), float64."""
    t = pd.DatetimeIndex(times_utc)
    day = (t.day_of_year - 1).to_numpy(np.float64)
    hours = t.hour.to_numpy(np.float64) + t.minute.to_numpy(np.float64) / 60.0 + t.second.to_numpy(np.float64) / 3600.0
    return day + hours / 24.0


def solar_declination(julian: np.ndarray) -> np.ndarray:
    """Solar declination [rad] at :func:`julian_day` values (HRLDAS ``CALC_DECLIN``: 365-day orbit, 23.5 deg)."""
    sun_longitude = np.where(julian >= 80.0, _DEG_PER_DAY * (julian - 80.0), _DEG_PER_DAY * (julian + 285.0)) * _DEGRAD
    return np.arcsin(np.sin(23.5 * _DEGRAD) * np.sin(sun_longitude))


def sun_times(
    days: pd.DatetimeIndex | np.ndarray, latitude_deg: float, longitude_deg: float, utc_offset_hours: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sunrise and sunset of each local standard-time day, in local standard hours, with the geometry of
    :func:`cos_zenith` (declination at local noon, no equation of time). Polar day gives (noon - 12, noon + 12),
    polar night (noon, noon)."""
    days = pd.DatetimeIndex(days).normalize()
    noon_solar = 12.0 - longitude_deg / 15.0 + utc_offset_hours  # local standard hour of solar noon
    declination = solar_declination(julian_day(days + pd.to_timedelta(12.0 - utc_offset_hours, unit="h")))
    lat = latitude_deg * _DEGRAD
    half_day = np.arccos(np.clip(-np.tan(lat) * np.tan(declination), -1.0, 1.0)) / _DEGRAD / 15.0
    return noon_solar - half_day, noon_solar + half_day


def cos_zenith(times_utc: pd.DatetimeIndex | np.ndarray, latitude_deg: float, longitude_deg: float) -> np.ndarray:
    """Cosine of the solar zenith angle at ``times_utc`` (negative at night), HRLDAS ``CALC_DECLIN``.

    Parameters
    ----------
    times_utc : the instants (for a half-hour step, its END), UTC.
    latitude_deg, longitude_deg : site location, degrees north / east.
    """
    t = pd.DatetimeIndex(times_utc)
    declination = solar_declination(julian_day(t))
    hours = t.hour.to_numpy(np.float64) + t.minute.to_numpy(np.float64) / 60.0 + t.second.to_numpy(np.float64) / 3600.0
    local_time = np.mod(hours + longitude_deg / 15.0 + 24.0, 24.0)
    hour_angle = 15.0 * (local_time - 12.0) * _DEGRAD
    lat = latitude_deg * _DEGRAD
    return np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(hour_angle)


def daily_mean_cos_zenith(
    dates: pd.DatetimeIndex | np.ndarray,
    latitude_deg: float,
    longitude_deg: float,
    utc_offset_hours: float = 0.0,
    samples: int = 48,
) -> np.ndarray:
    """Daylight-weighted daily mean cosine of the zenith angle for daily forcing (local calendar days).

    The mean of max(cos z, 0) over ``samples`` instants of each local day: with daily mean shortwave, the
    absorbed daily energy then follows the mean sun height.
    """
    days = pd.DatetimeIndex(dates).normalize()
    offsets = pd.to_timedelta((np.arange(samples) + 0.5) * 24.0 / samples - utc_offset_hours, unit="h")
    instants = (days.values[:, None] + offsets.values[None, :]).ravel()
    mu = np.maximum(cos_zenith(instants, latitude_deg, longitude_deg), 0.0).reshape(len(days), samples)
    return mu.mean(axis=1)
