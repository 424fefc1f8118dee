"""Physics-in-AI constraints on soil moisture predicted at sensors: physical bounds and the water balance of the
top sensor's layer, as loss terms for training (:func:`constraint_penalty`) and as plausibility counts for
scoring (:func:`plausibility`).

The inputs are arrays in a small observation-target type, :class:`SensorTarget`: daily moisture at the sensors
is ``(D, S)`` (m3 m-3), series over days ``(D,)``. The driver that builds the target from a site is
:mod:`dam.physics_in_ai`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .losses import WATER_DENSITY_MM_PER_M, bounds_penalty

__all__ = ["SensorTarget", "constraint_penalty", "plausibility", "water_created", "widened_bounds"]


class SensorTarget(NamedTuple):
    """What the constraints check predictions at the sensors against.

    lower, upper : (S,) plausible moisture range at each sensor (m3 m-3), e.g. from :func:`widened_bounds`.
    precip_mm : (D,) precipitation of each day (mm).
    ice_free : (D,) bool, days without ice at the top sensor (a thaw turns ice into liquid water without rain,
        so water-balance checks count only days that are ice free with the day before).
    top_layer_m : thickness of the top sensor's model layer (m), a Python float.
    """

    lower: np.ndarray | jax.Array
    upper: np.ndarray | jax.Array
    precip_mm: np.ndarray | jax.Array
    ice_free: np.ndarray | jax.Array
    top_layer_m: float


def widened_bounds(lower: np.ndarray, upper: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (S,) widened to every value ``observed`` (D, S) (NaN skipped: a sensor without data keeps its
    bounds). A reading outside table bounds says the site's soil differs from its class, not that it is
    impossible."""
    lo = np.fmin(lower, np.fmin.reduce(observed, axis=0))
    hi = np.fmax(upper, np.fmax.reduce(observed, axis=0))
    return lo, hi


def water_created(pred, precip_mm, ice_free, top_layer_m: float, xp=np):
    """Water gained by the top sensor's layer beyond the day's precipitation (mm), (D-1,), from the daily
    moisture ``pred`` (D, S), precipitation ``precip_mm`` (D,) and the ``ice_free`` (D,) days; ``xp`` is numpy
    or jax.numpy."""
    excess = xp.maximum(xp.diff(pred[:, 0]) * top_layer_m * WATER_DENSITY_MM_PER_M - precip_mm[1:], 0.0)
    return xp.where(ice_free[1:] & ice_free[:-1], excess, 0.0)


def constraint_penalty(
    pred: jax.Array, days: jax.Array, target: SensorTarget, bounds_weight: float, water_weight: float
) -> jax.Array:
    """Loss terms on a predicted window ``pred`` (W, S) of days ``days`` (W,, indices into the target's series):
    ``bounds_weight`` times the mean squared excursion outside the bounds plus ``water_weight`` times the mean
    square of :func:`water_created` (mm)."""
    excess = water_created(pred, target.precip_mm[days], target.ice_free[days], target.top_layer_m, jnp)
    return bounds_weight * jnp.mean(bounds_penalty(pred, target.lower, target.upper)) + water_weight * jnp.mean(
        excess**2
    )


def plausibility(daily: np.ndarray, target: SensorTarget) -> dict:
    """Bound violations (sensor-days outside the bounds) and water created in the top layer (mm, summed) of daily
    moisture ``daily`` (D, S) over the days of ``target``."""
    return {
        "bound_violations": int(np.sum((daily < target.lower) | (daily > target.upper))),
        "water_created_mm": float(np.sum(water_created(daily, target.precip_mm, target.ice_free, target.top_layer_m))),
    }
