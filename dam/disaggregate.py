"""Daily station forcing to hourly (or half-hourly) forcing that conserves every daily value given.

Noah-MP resolves the diurnal cycle (stability, the skin temperature, freezing at night, snowmelt by day); run on
daily means it is a different model. A daily file is therefore disaggregated when it is converted, with the
methods of the VIC/MTCLIM forcing chain (Bohn et al. 2013, Bennett et al. 2020 "MetSim") and of MELODIST
(Förster et al. 2016), which this module reimplements because both libraries are GPL-3.0 (dam is Apache-2.0)
and need daily minimum and maximum temperature, which FLUXNET daily files do not have (see docs/adding_a_site.md,
"Daily files").

The day is the local standard-time calendar day. Internally every day is resolved in 48 half-hours (the FLUXNET
step, so that FLUXNET's day/night split can be reproduced) and then averaged to ``step_s``.

* **Shortwave**: the daily mean times the half-hour's share of the day's potential (top-of-atmosphere) radiation,
  from the model's own solar geometry (:func:`dam.solar.cos_zenith`, 6 samples per half-hour). Daily mean exact.
* **Air temperature**: the Parton & Logan (1981) diurnal curve (a sine from the minimum near sunrise to sunset,
  an exponential decay through the night to the next minimum), continuous across days. Its knots (each day's
  minimum and maximum) are solved, in one sparse linear system for the whole record, to keep the daily mean and
  the difference of the daytime and night-time means (FLUXNET DD ``TA_F_DAY`` - ``TA_F_NIGHT``; day = half-hours
  with the sun above the horizon). Given a daily minimum and maximum instead, they are the knots. Given the mean
  only, the knots are ``mean -+ range/2`` with a stated constant ``temperature_range_K``, shifted to keep each
  daily mean.
* **Humidity**: vapour pressure constant through the day (VIC/MTCLIM, Bohn et al. 2013) but never above
  saturation (RH <= 100 %), the constant chosen so that the daily mean VPD is kept exactly.
* **Longwave**: the daily effective emissivity is held constant, LW = LW_day T^4 / mean_day(T^4), so LW follows
  the temperature cycle and its daily mean is exact.
* **Precipitation**: the daily total at a constant rate over ``precip_hours`` hours from ``precip_start_hour``
  local standard time, by default 3 h from 14:00 (24 h from 00:00 is MELODIST ``equal``). Daily totals exact.
  Spreading rain over the whole day cuts infiltration-excess runoff and wets the canopy all day: on Bondville
  1998 uniform rain gave 23 mm of surface runoff instead of 143 mm and a soil 0.015 m3 m-3 too wet; 3 h gave
  133 mm and soil within 0.002 m3 m-3 on average (benchmarks/disaggregation_bondville.py).
* **Pressure, wind**: constant through the day (MELODIST ``equal``).

References: Bohn, T.J. et al. (2013) Agric. For. Meteorol. 176, 38-49; Bennett, A. et al. (2020) J. Open Source
Softw. 5(47), 2042; Förster, K. et al. (2016) Geosci. Model Dev. 9, 2315-2333; Parton, W.J. & Logan, J.A. (1981)
Agric. Meteorol. 23, 205-216.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, model_validator
from scipy.sparse.linalg import spsolve

from dam.schema import Strict
from dam.sites import SiteError, saturation_vapour_pressure, specific_humidity_from_vapour_pressure
from dam.solar import cos_zenith, sun_times

HALF_HOURS = 48
_SOLAR_SAMPLES = 6  # cos(zenith) samples per half-hour for the potential-radiation weights


class Disaggregation(Strict):
    """How daily forcing is disaggregated (``conversion.disaggregation`` of a site metadata file)."""

    step_s: Literal[1800, 3600] = Field(3600, description="output time step [s]")
    temperature: Literal["day_night", "min_max", "mean_range"] = Field(
        "day_night",
        description="daily temperature given as daytime and night-time means (FLUXNET DD), as minimum and "
        "maximum, or as the mean only (then temperature_range_K is required)",
    )
    temperature_range_K: float | None = Field(
        None, gt=0, lt=40, description="constant diurnal temperature range for temperature='mean_range' [K]"
    )
    parton_logan_a_h: float = Field(1.86, ge=0, le=5, description="Parton-Logan a: lag of the maximum after noon [h]")
    parton_logan_b: float = Field(2.20, gt=0, le=10, description="Parton-Logan b: night-time decay coefficient")
    parton_logan_c_h: float = Field(-0.17, ge=-3, le=3, description="Parton-Logan c: minimum after sunrise [h]")
    precip_hours: int = Field(3, ge=1, le=24, description="hours over which each daily total falls")
    precip_start_hour: int = Field(14, ge=0, le=23, description="local standard hour at which the daily total starts")

    @model_validator(mode="after")
    def _range_given(self) -> Disaggregation:
        if self.temperature == "mean_range" and self.temperature_range_K is None:
            raise ValueError("temperature='mean_range' needs temperature_range_K")
        return self

    def describe(self) -> str:
        """One line for the forcing attributes and site.yaml notes."""
        a, b, c = self.parton_logan_a_h, self.parton_logan_b, self.parton_logan_c_h
        curve = f"Parton & Logan (1981) curve (a={a:g} h, b={b:g}, c={c:g} h)"
        t = {
            "day_night": f"{curve} solved to keep the daily mean and day-night difference",
            "min_max": f"{curve} through the daily minimum and maximum",
            "mean_range": f"{curve} of range {self.temperature_range_K or 0.0:g} K, shifted to keep each daily mean",
        }[self.temperature]
        p = (
            "uniform over the day"
            if self.precip_hours == 24
            else f"over {self.precip_hours} h from {self.precip_start_hour:02d}:00 local standard time"
        )
        return (
            f"daily -> {self.step_s} s (dam.disaggregate): SW by potential radiation; T: {t}; vapour pressure "
            f"constant (VPD mean kept); LW = LW_day T^4 / mean(T^4); precipitation {p}; p and wind constant"
        )


@dataclass(frozen=True)
class DailyForcing:
    """Daily forcing on local standard-time calendar days (SI units; NaN not allowed).

    Attributes
    ----------
    days : the local days (midnight stamps, naive).
    t_mean_k : daily mean air temperature [K].
    t_day_k, t_night_k : mean over the half-hours with the sun up / down [K] (``temperature="day_night"``).
    t_min_k, t_max_k : daily minimum / maximum [K] (``temperature="min_max"``).
    vpd_pa : daily mean vapour pressure deficit [Pa]; or ``vapour_pressure_pa``: daily mean vapour pressure.
    p_pa, wind_ms, sw_wm2, lw_wm2 : daily means.
    precip_mm : daily total [mm].
    """

    days: pd.DatetimeIndex
    t_mean_k: np.ndarray
    p_pa: np.ndarray
    wind_ms: np.ndarray
    sw_wm2: np.ndarray
    lw_wm2: np.ndarray
    precip_mm: np.ndarray
    vpd_pa: np.ndarray | None = None
    vapour_pressure_pa: np.ndarray | None = None
    t_day_k: np.ndarray | None = None
    t_night_k: np.ndarray | None = None
    t_min_k: np.ndarray | None = None
    t_max_k: np.ndarray | None = None


def half_hour_geometry(
    days: pd.DatetimeIndex, latitude: float, longitude: float, utc_offset_hours: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per day and half-hour (shape ``(n_days, 48)``): the mean of max(cos zenith, 0) over the half-hour, and
    whether the sun is up at its midpoint (FLUXNET's day/night split)."""
    days = pd.DatetimeIndex(days).normalize()
    frac = (np.arange(HALF_HOURS * _SOLAR_SAMPLES) + 0.5) / _SOLAR_SAMPLES * 1800.0
    offsets = pd.to_timedelta(frac - utc_offset_hours * 3600.0, unit="s")
    instants = (days.values[:, None] + offsets.values[None, :]).ravel()
    mu = cos_zenith(instants, latitude, longitude).reshape(len(days), HALF_HOURS, _SOLAR_SAMPLES)
    weight = np.maximum(mu, 0.0).mean(axis=2)
    mid = pd.to_timedelta((np.arange(HALF_HOURS) + 0.5) * 1800.0 - utc_offset_hours * 3600.0, unit="s")
    up = cos_zenith((days.values[:, None] + mid.values[None, :]).ravel(), latitude, longitude) > 0.0
    return weight, up.reshape(len(days), HALF_HOURS)


def temperature_operator(sunrise: np.ndarray, sunset: np.ndarray, opt: Disaggregation) -> sp.csr_matrix:
    """Sparse ``(n_days*48, 2*n_days)`` operator from the knots ``(Tmin_0, Tmax_0, Tmin_1, ...)`` to half-hour
    mean temperatures along the Parton & Logan (1981) curve.

    Day d, from its minimum at ``sunrise + c`` to sunset: T = Tmin + (Tmax - Tmin) sin(pi m / (Y + 2a)), m hours
    after the minimum, Y the day length. Night after sunset: T = Tmin' + (T_sunset - Tmin') exp(-b n / Z), n hours
    after sunset, Z the time to the next day's minimum Tmin'. Day length is kept within [1, 23] h (polar days).
    """
    n = len(sunrise)
    a, b, c = opt.parton_logan_a_h, opt.parton_logan_b, opt.parton_logan_c_h
    rise = np.clip(sunrise, None, sunset - 1.0)
    length = np.clip(sunset - rise, 1.0, 23.0)
    start = 24.0 * np.arange(n) + rise + c  # absolute hours (since the first local midnight) of each minimum
    set_abs = start - c + length
    w_set = np.sin(np.pi * (length - c) / (length + 2.0 * a))  # weight of Tmax at sunset
    sub = (np.arange(n * HALF_HOURS * 3) + 0.5) / 6.0  # 3 samples per half-hour
    d = np.searchsorted(start, sub, side="right") - 1  # the last minimum before each sample
    before = d < 0
    d = np.maximum(d, 0)
    daytime = ~before & (sub < set_abs[d])
    w_max = np.where(daytime, np.sin(np.pi * np.clip(sub - start[d], 0.0, None) / (length[d] + 2.0 * a)), 0.0)
    nxt = np.minimum(d + 1, n - 1)
    z = np.where(d + 1 < n, start[nxt] - set_abs[d], 24.0 - length[d] + c)
    f = np.where(daytime | before, 0.0, np.exp(-b * np.clip(sub - set_abs[d], 0.0, None) / z))
    # Columns: Tmin_d, Tmax_d, Tmin_{d+1}; night weights via T_sunset = Tmin_d (1 - w_set) + Tmax_d w_set.
    w_min_d = np.where(daytime, 1.0 - w_max, f * (1.0 - w_set[d]))
    w_max_d = np.where(daytime, w_max, f * w_set[d])
    w_min_next = np.where(daytime, 0.0, 1.0 - f)
    w_min_d = np.where(before, 1.0, w_min_d)
    w_min_next = np.where(before, 0.0, w_min_next)
    rows = np.tile(np.repeat(np.arange(n * HALF_HOURS), 3), 3)
    cols = np.concatenate([2 * d, 2 * d + 1, 2 * nxt])
    data = np.concatenate([w_min_d, w_max_d, w_min_next]) / 3.0
    return sp.csr_matrix((data, (rows, cols)), shape=(n * HALF_HOURS, 2 * n))


def _day_means(mask: np.ndarray) -> sp.csr_matrix:
    """``(n_days, n_days*48)`` operator: the mean over the half-hours of each day where ``mask`` is true."""
    n = mask.shape[0]
    counts = mask.sum(axis=1)
    rows = np.repeat(np.arange(n), HALF_HOURS)
    vals = np.where(mask, 1.0 / np.maximum(counts, 1)[:, None], 0.0).ravel()
    return sp.csr_matrix((vals, (rows, np.arange(n * HALF_HOURS))), shape=(n, n * HALF_HOURS))


def half_hour_temperature(
    daily: DailyForcing,
    up: np.ndarray,
    latitude: float,
    longitude: float,
    utc_offset_hours: float,
    options: Disaggregation,
) -> np.ndarray:
    """Half-hour temperatures ``(n_days, 48)`` [K] by the method of ``options.temperature``."""
    n = len(daily.days)
    curve = temperature_operator(*sun_times(daily.days, latitude, longitude, utc_offset_hours), options)
    if options.temperature == "min_max":
        if daily.t_min_k is None or daily.t_max_k is None:
            raise SiteError("temperature='min_max' needs daily minimum and maximum temperature")
        x = np.stack([daily.t_min_k, daily.t_max_k], axis=1).ravel()
        return (curve @ x).reshape(n, HALF_HOURS)
    all_hours = _day_means(np.ones_like(up))
    if options.temperature == "mean_range":
        half = 0.5 * float(options.temperature_range_K or 0.0)
        shape = curve @ np.tile([-half, half], n)
        shift = sp.csr_matrix(sp.kron(sp.eye(n), np.ones((2, 1))))
        c = spsolve((all_hours @ curve @ shift).tocsc(), daily.t_mean_k - all_hours @ shape)
        return (shape + curve @ (shift @ c)).reshape(n, HALF_HOURS)
    if daily.t_day_k is None or daily.t_night_k is None:
        raise SiteError("temperature='day_night' needs daily daytime and night-time mean temperatures")
    # Days without sunrise or sunset (polar day/night) keep the daily mean and a zero range instead.
    regular = up.any(axis=1) & (~up).any(axis=1)
    r, not_r = sp.diags(regular.astype(float)), sp.diags((~regular).astype(float))
    diff = sp.csr_matrix((np.tile([-1.0, 1.0], n), (np.repeat(np.arange(n), 2), np.arange(2 * n))), shape=(n, 2 * n))
    # Rows: the daily mean (exact even where the file's day/night split differs slightly from this geometry's) and
    # the day-night contrast.
    contrast = r @ (_day_means(up) - _day_means(~up)) @ curve + not_r @ diff
    a = sp.vstack([all_hours @ curve, contrast]).tocsc()
    rhs = np.concatenate([daily.t_mean_k, np.where(regular, daily.t_day_k - daily.t_night_k, 0.0)])
    x = spsolve(a, rhs)
    t = (curve @ x).reshape(n, HALF_HOURS)
    if not np.all(np.isfinite(t)):
        raise SiteError("temperature disaggregation failed (singular day/night system)")
    return t


def vapour_pressure_keeping_vpd(es: np.ndarray, vpd: np.ndarray) -> np.ndarray:
    """The daily vapour pressure e [Pa] whose half-hour values min(e, e_s) keep the daily mean VPD:
    mean(max(e_s - e, 0)) = VPD, solved exactly on the piecewise-linear function (``es``: ``(n_days, n)``)."""
    s = np.sort(es, axis=1)
    n = s.shape[1]
    tail = np.cumsum(s[:, ::-1], axis=1)[:, ::-1]  # sum of s_k for k >= j
    j = np.arange(n)
    deficit_at = (tail - (n - j) * s) / n  # mean VPD if e = s_j; decreases with j
    vpd = np.maximum(np.asarray(vpd, float), 0.0)
    k = np.sum(deficit_at >= vpd[:, None], axis=1) - 1  # the last breakpoint at or above the target
    above = np.take_along_axis(np.concatenate([tail, np.zeros((len(s), 1))], axis=1), (k + 1)[:, None], 1)[:, 0]
    e = np.where(k < 0, s.mean(axis=1) - vpd, (above - n * vpd) / np.maximum(n - k - 1, 1))
    return np.where(k >= n - 1, s[:, -1], e)


def disaggregate(
    daily: DailyForcing,
    latitude: float,
    longitude: float,
    utc_offset_hours: float,
    options: Disaggregation | None = None,
) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray], dict[str, object]]:
    """Disaggregate ``daily`` forcing; returns the step ends in UTC, the seven canonical forcing arrays of
    :mod:`dam.sites` (SI units) and attributes describing the method (``disaggregation``, counts).
    """
    opt = options or Disaggregation()
    n = len(daily.days)
    for name in ("t_mean_k", "p_pa", "wind_ms", "sw_wm2", "lw_wm2", "precip_mm"):
        v = np.asarray(getattr(daily, name), float)
        if v.shape != (n,) or not np.all(np.isfinite(v)):
            raise SiteError(f"daily forcing {name!r}: expected {n} finite values (fill gaps before disaggregating)")
    weight, up = half_hour_geometry(daily.days, latitude, longitude, utc_offset_hours)
    day_w = weight.mean(axis=1, keepdims=True)
    no_sun = day_w[:, 0] <= 0.0
    share = np.where(no_sun[:, None], 1.0, weight / np.where(no_sun[:, None], 1.0, day_w))
    sw = daily.sw_wm2[:, None] * share
    t = half_hour_temperature(daily, up, latitude, longitude, utc_offset_hours, opt)
    es = saturation_vapour_pressure(t)
    if daily.vpd_pa is not None:
        e_day = vapour_pressure_keeping_vpd(es, daily.vpd_pa)
    elif daily.vapour_pressure_pa is not None:
        e_day = np.asarray(daily.vapour_pressure_pa, float)
    else:
        raise SiteError("daily forcing: humidity needs vpd_pa or vapour_pressure_pa")
    e_floor = 0.01 * es.min(axis=1)
    n_dry = int((e_day < e_floor).sum())
    e = np.minimum(np.maximum(e_day, e_floor)[:, None], es)
    n_saturated = int((e_day[:, None] >= es).sum())
    t4 = t**4
    lw = daily.lw_wm2[:, None] * t4 / t4.mean(axis=1, keepdims=True)
    hours = np.arange(HALF_HOURS) * 0.5
    rain_on = ((hours - opt.precip_start_hour) % 24.0) < opt.precip_hours
    precip = daily.precip_mm[:, None] * rain_on[None, :] / (opt.precip_hours * 3600.0)
    p = np.repeat(daily.p_pa[:, None], HALF_HOURS, axis=1)
    values = {
        "T_air": t,
        "q_air": specific_humidity_from_vapour_pressure(e, p),
        "p_sfc": p,
        "wind": np.repeat(daily.wind_ms[:, None], HALF_HOURS, axis=1),
        "sw_down": sw,
        "lw_down": lw,
        "precip": precip,
    }
    k = opt.step_s // 1800
    values = {name: v.reshape(-1, k).mean(axis=1) for name, v in values.items()}
    local_ends = (
        daily.days.normalize().values[:, None]
        + pd.to_timedelta(np.arange(1, HALF_HOURS // k + 1) * opt.step_s, unit="s").values[None, :]
    )
    times = pd.DatetimeIndex(local_ends.ravel() - pd.Timedelta(hours=utc_offset_hours))
    attrs: dict[str, object] = {
        "disaggregation": opt.describe(),
        "disaggregation_parameters": opt.model_dump_json(),
        "disaggregation_saturated_half_hours": n_saturated,
        "disaggregation_dry_days_clipped": n_dry,
        "disaggregation_days_without_sun": int(no_sun.sum()),
    }
    return times, values, attrs


def daily_means_from_subdaily(
    times_end_utc: pd.DatetimeIndex,
    values: Mapping[str, np.ndarray],
    latitude: float,
    longitude: float,
    utc_offset_hours: float,
) -> DailyForcing:
    """Aggregate half-hourly canonical forcing (as :func:`dam.sites.make_forcing` holds it) to the
    :class:`DailyForcing` a FLUXNET DD file would give (local standard-time days; complete days only; day and
    night by the sun at each half-hour's midpoint). Used to validate the disaggregation against the truth."""
    t = pd.DatetimeIndex(times_end_utc)
    step = (t[1] - t[0]).total_seconds()
    if step != 1800.0:
        raise SiteError(f"daily_means_from_subdaily needs a 1800 s step, got {step:g} s")
    local_start = t - pd.Timedelta(seconds=step) + pd.Timedelta(hours=utc_offset_hours)
    first = local_start[0].ceil("D")
    i0 = int(np.searchsorted(local_start, first))
    n_days = (len(t) - i0) // HALF_HOURS
    sl = slice(i0, i0 + n_days * HALF_HOURS)
    days = pd.date_range(first, periods=n_days, freq="D")

    def grid(name: str) -> np.ndarray:
        return np.asarray(values[name], float)[sl].reshape(n_days, HALF_HOURS)

    _, up = half_hour_geometry(days, latitude, longitude, utc_offset_hours)
    tk, q, p = grid("T_air"), grid("q_air"), grid("p_sfc")
    e = q * p / (0.622 + 0.378 * q)
    vpd = saturation_vapour_pressure(tk) - e
    with np.errstate(invalid="ignore"):
        t_day = np.where(up, tk, 0.0).sum(axis=1) / up.sum(axis=1)
        t_night = np.where(~up, tk, 0.0).sum(axis=1) / (~up).sum(axis=1)
    return DailyForcing(
        days=days,
        t_mean_k=tk.mean(axis=1),
        t_day_k=t_day,
        t_night_k=t_night,
        t_min_k=tk.min(axis=1),
        t_max_k=tk.max(axis=1),
        vpd_pa=vpd.mean(axis=1),
        p_pa=p.mean(axis=1),
        wind_ms=grid("wind").mean(axis=1),
        sw_wm2=grid("sw_down").mean(axis=1),
        lw_wm2=grid("lw_down").mean(axis=1),
        precip_mm=grid("precip").sum(axis=1) * step,
    )
