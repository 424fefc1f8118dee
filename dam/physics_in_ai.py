"""Physics in AI at a site: builds the observation target of :mod:`dam.coupling.constraints` (bounds at the
sensors, precipitation, ice-free days, top layer) from a site's data, and the constraint loss of the experiment's
networks from it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .coupling.constraints import SensorTarget, constraint_penalty, widened_bounds
from .experiment_config import ConstraintConfig
from .experiment_data import FEATURES, SiteData

ICE_FREE = 1e-3  # m3 m-3: the physics model's ice below which a layer counts as unfrozen


def sensor_target(data: SiteData, precip_mm: np.ndarray, ice_free: np.ndarray) -> SensorTarget:
    """The constraint target at the site's sensors: half the wilting point to the porosity of the model soil at
    each sensor's layer, widened to every value observed on the training days; daily ``precip_mm`` (D,) and
    ``ice_free`` (D,) days; the thickness of the top sensor's layer."""
    p = data.setup.params.soil
    n = len(data.setup.layer_bottoms_m)
    smcmax = np.broadcast_to(np.asarray(p.smcmax), (n,))
    smcdry = np.broadcast_to(np.asarray(p.smcwlt), (n,)) * 0.5
    lo, hi = widened_bounds(data.at_sensors(smcdry), data.at_sensors(smcmax), data.observed[data.fit_days])
    top_layer_m = float(np.diff(np.r_[0.0, data.setup.layer_bottoms_m])[data.sensor_layers[0]])
    return SensorTarget(lo, hi, precip_mm, ice_free, top_layer_m)


def ice_free_days(data: SiteData, total: np.ndarray | None, liquid: np.ndarray | None) -> np.ndarray:
    """(D,) days on which the physics run (daily ``total`` and ``liquid`` moisture at the sensors, (D, S)) holds no
    ice at the top sensor; every day where that sensor sees total water (a thaw then moves no water into the
    measured quantity); no day where it sees liquid water and no physics run is given (the water balance is then
    not checked rather than checked wrongly)."""
    if not data.sensor_liquid[0]:
        return np.ones(len(data.days), bool)
    if total is None or liquid is None:
        return np.zeros(len(data.days), bool)
    return (total[:, 0] - liquid[:, 0]) < ICE_FREE


def physics_constraint(data: SiteData, weights: ConstraintConfig, ice_free: np.ndarray):
    """Physics-in-AI loss terms ``extra(pred, days)`` on a predicted window (W, S) of days ``days`` (W,):
    physical bounds and the water balance of the top sensor's layer (no day gains more water than falls as
    precipitation; on ``ice_free`` days), weighted by ``weights``
    (:func:`dam.coupling.constraints.constraint_penalty`)."""
    t = sensor_target(data, data.forcing[:, FEATURES.index("precip")], ice_free)
    target = SensorTarget(*(jnp.asarray(a) for a in t[:4]), t.top_layer_m)

    def extra(pred: jax.Array, days: jax.Array) -> jax.Array:
        return constraint_penalty(pred, days, target, weights.bounds, weights.water)

    return extra
