"""Physics in AI at a site: the physics-constraint loss terms and their bounds, from a site's data (the array core
is :mod:`dam.coupling.losses`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .experiment_config import ConstraintConfig
from .experiment_data import FEATURES, SiteData


def _sensor_bounds(data: SiteData) -> tuple[np.ndarray, np.ndarray]:
    """Plausible moisture range at each sensor (m3 m-3): half the wilting point to the porosity of the model soil
    at the sensor's layer, widened to every value observed on the training days (a reading above the table
    porosity says the site's soil is more porous than its class, not that the reading is impossible)."""
    p = data.setup.params.soil
    n = len(data.setup.layer_bottoms_m)
    smcmax = np.broadcast_to(np.asarray(p.smcmax), (n,))
    smcdry = np.broadcast_to(np.asarray(p.smcwlt), (n,)) * 0.5
    seen = data.observed[data.fit_days]  # fmin/fmax skip NaN (a sensor without data keeps the table bounds)
    lo = np.fmin(data.at_sensors(smcdry), np.fmin.reduce(seen, axis=0))
    hi = np.fmax(data.at_sensors(smcmax), np.fmax.reduce(seen, axis=0))
    return lo, hi


ICE_FREE = 1e-3  # m3 m-3: the physics model's ice below which a layer counts as unfrozen


def _water_created(data: SiteData, pred, precip_mm, ice_free, xp=np):
    """Water gained by the top sensor's layer beyond the day's precipitation (mm), (D-1,), from the daily
    moisture ``pred`` (D, S), precipitation ``precip_mm`` (D,) and the ``ice_free`` (D,) days (a thaw turns ice
    into liquid without rain, so where the sensors see liquid water only days without ice count)."""
    dz_top = float(np.diff(np.r_[0.0, data.setup.layer_bottoms_m])[data.sensor_layers[0]])
    excess = xp.maximum(xp.diff(pred[:, 0]) * dz_top * 1000.0 - precip_mm[1:], 0.0)
    return xp.where(ice_free[1:] & ice_free[:-1], excess, 0.0)


def physics_constraint(data: SiteData, weights: ConstraintConfig, ice_free: np.ndarray):
    """Physics-in-AI loss terms on a predicted window (W, S) of days ``days`` (W,): physical bounds (half the
    wilting point <= theta <= porosity, widened to the training observations) and the water balance of the top
    sensor's layer (no day gains more water than falls as precipitation; on ``ice_free`` days)."""
    from .coupling.losses import bounds_penalty

    lo, hi = (jnp.asarray(b) for b in _sensor_bounds(data))
    precip = jnp.asarray(data.forcing[:, FEATURES.index("precip")])
    free = jnp.asarray(ice_free)

    def extra(pred: jax.Array, days: jax.Array) -> jax.Array:
        excess = _water_created(data, pred, precip[days], free[days], jnp)
        return weights.bounds * jnp.mean(bounds_penalty(pred, lo, hi)) + weights.water * jnp.mean(excess**2)

    return extra
