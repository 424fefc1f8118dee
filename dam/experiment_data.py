"""Data of the station experiment: the physics set-up of each site, daily forcing features, daily observed
soil moisture at the sensors, the sensors' model layers and the chronological split.

Networks work on days: sub-daily forcing is averaged (precipitation summed to mm per day) over UTC+offset local
days, and the model's steps are averaged onto the same days before comparison. The split is chronological on
days: the first 4/5 train (its last tenth validates), the last 1/5 tests; normalisation statistics come from
the training days only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .sequences import chronological_split
from .site_run import StationSetup, setup_station, spin_up
from .sites import Site, SiteError, load_site

FEATURES = ("T_air", "q_air", "p_sfc", "wind", "sw_down", "lw_down", "precip")


@dataclasses.dataclass(frozen=True)
class SiteData:
    """One site, ready for the experiment (arrays are float64 numpy).

    ``days`` (D,) local calendar days; ``forcing`` (D, F) daily features of :data:`FEATURES` (precipitation in
    mm per day, the rest daily means in SI units); ``observed`` (D, S) daily mean soil moisture at the S sensors,
    m3 m-3 (NaN where missing); ``sensor_depths_m`` (S,); ``sensor_layers`` (S,) model layer that contains each
    sensor; ``sensor_weights`` (S, N) how each sensor reads the model layers (:mod:`dam.sensors`);
    ``sensor_liquid`` (S,) True where a sensor sees liquid water only (``soil_moisture_measures``);
    ``reliable`` (S,) False where the site flags the series; ``step_day`` (T,) day index of every model step;
    ``train``, ``val``, ``test`` slices of days.
    """

    name: str
    site: Site
    setup: StationSetup
    days: pd.DatetimeIndex
    forcing: np.ndarray
    observed: np.ndarray
    sensor_depths_m: np.ndarray
    sensor_layers: np.ndarray
    sensor_weights: np.ndarray
    sensor_liquid: np.ndarray
    reliable: np.ndarray
    step_day: np.ndarray
    train: slice
    val: slice
    test: slice

    @property
    def n_sensors(self) -> int:
        return len(self.sensor_depths_m)

    @property
    def fit_days(self) -> slice:
        """Training and validation days together (the first 4/5)."""
        return slice(0, self.test.start)

    def daily(self, per_step: np.ndarray) -> np.ndarray:
        """Daily means of a per-step series (T, ...) -> (D, ...)."""
        return daily_mean(per_step, self.step_day, len(self.days))

    def at_sensors(self, layered: np.ndarray) -> np.ndarray:
        """Model layers (..., N) -> the values the sensors read (..., S) (:attr:`sensor_weights`)."""
        return np.asarray(layered) @ self.sensor_weights.T

    def seen(self, total: np.ndarray, liquid: np.ndarray) -> np.ndarray:
        """The moisture each sensor sees (..., S) from the model's total and liquid layer moisture (..., N)."""
        return np.where(self.sensor_liquid, self.at_sensors(liquid), self.at_sensors(total))

    def describe_seen(self) -> str:
        """Which water the sensors see, in words."""
        kinds = ["liquid" if x else "total" for x in self.sensor_liquid]
        if len(set(kinds)) <= 1:
            return "liquid water" if kinds and kinds[0] == "liquid" else "total water (liquid + ice)"
        return ", ".join(f"{d:g} m: {k}" for d, k in zip(self.sensor_depths_m, kinds, strict=True))


def day_index(times: pd.DatetimeIndex, dt_s: float, utc_offset_hours: float) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Local calendar day of each step (a step belongs to the day of its midpoint) and the list of days."""
    mid = times - pd.to_timedelta(dt_s / 2.0, unit="s") + pd.to_timedelta(utc_offset_hours, unit="h")
    labels = mid.floor("D")
    days = pd.DatetimeIndex(np.unique(labels.values))
    return np.searchsorted(days.values, labels.values), days


def daily_mean(values: np.ndarray, step_day: np.ndarray, n_days: int) -> np.ndarray:
    """NaN-aware mean of ``values`` (T, ...) over the steps of each day (NaN for a day without values)."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    total = np.zeros((n_days, *v.shape[1:]))
    count = np.zeros((n_days, *v.shape[1:]))
    np.add.at(total, step_day, np.where(finite, v, 0.0))
    np.add.at(count, step_day, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def load_experiment_site(name_or_dir: str) -> Site:
    """Read and validate a site folder (:func:`~dam.sites.load_site`) and check that it has the soil moisture
    observations an experiment scores (SiteError naming the site otherwise)."""
    site = load_site(name_or_dir)
    if site.observations is None or "soil_moisture" not in site.observations:
        raise SiteError(f"site {site.meta.name} has no soil moisture observations: the experiment needs them")
    return site


def prepare_site(
    name_or_dir: str,
    *,
    spinup_cycles: int = 1,
    train_frac: float = 0.8,
    val_frac: float = 0.1,
    start: str | None = None,
    end: str | None = None,
) -> SiteData:
    """Load a site, set up and spin up the physics, and build the daily arrays and the split."""
    site = load_experiment_site(name_or_dir)
    setup = spin_up(setup_station(site, start=start, end=end), cycles=spinup_cycles)
    dt = float(setup.options.dt_s)
    step_day, days = day_index(setup.times, dt, site.meta.utc_offset_hours)

    ds = site.forcing.sel(time=setup.times)
    per_step = np.stack([np.asarray(ds[v].values, float) for v in FEATURES], axis=-1)
    forcing = daily_mean(per_step, step_day, len(days))
    forcing[:, FEATURES.index("precip")] *= 86400.0  # kg m-2 s-1 -> mm per day

    obs = site.observations["soil_moisture"]
    depth_dim = obs.dims[1]
    depths = np.asarray(obs[depth_dim].values, float)
    mapping = site.sensor_mapping("soil_moisture", setup.layer_bottoms_m, depths)
    obs_times = pd.DatetimeIndex(obs["time"].values)
    obs_dt = float(site.meta.time_step_s)
    obs_day, obs_days = day_index(obs_times, obs_dt, site.meta.utc_offset_hours)
    obs_daily = daily_mean(np.asarray(obs.values, float), obs_day, len(obs_days))
    observed = (pd.DataFrame(obs_daily, index=obs_days).reindex(days)).to_numpy()
    reliable = np.array([not site.unreliable_flag("soil_moisture", float(d)) for d in depths])
    try:
        train, val, test = chronological_split(len(days), train_frac, val_frac)
    except ValueError as err:
        raise SiteError(f"site {site.meta.name}: {len(days)} days cannot be split for the experiment ({err})") from None
    return SiteData(
        name=site.meta.name, site=site, setup=setup, days=days, forcing=forcing, observed=observed,
        sensor_depths_m=depths, sensor_layers=np.asarray(mapping.layer_index), sensor_weights=mapping.weights,
        sensor_liquid=site.sees_liquid("soil_moisture", depths), reliable=reliable, step_day=step_day,
        train=train, val=val, test=test,
    )  # fmt: skip
