"""Division of thick snow layers (Noah-MP ``SnowLayerDivide``): the top layer is at most 5 cm and the second
at most 20 cm thick; what exceeds them moves into the layer below (a new second layer when the pack has one
layer thicker than 5 cm, a new third layer when the second exceeds 20 cm), with enthalpy-conserving
temperatures (:func:`dam.physics.snow_layer_combine.snow_layer_water_combo`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._safe import div, safe_where
from .constants import Constants
from .snow_layer_combine import snow_layer_water_combo
from .snow_types import N_SNOW_LAYERS, SnowState

MAX_TOP_M = 0.05  # thickest top layer
MAX_SECOND_M = 0.20  # thickest second layer


def _from_top(values: jax.Array, n: jax.Array) -> list:
    """Layers listed from the top (position i = slot 3 - n + i), zeros below the last layer."""
    position = jnp.arange(N_SNOW_LAYERS)
    index = jnp.clip(N_SNOW_LAYERS - jnp.asarray(n)[..., None] + position, 0, N_SNOW_LAYERS - 1)
    ordered = jnp.where(position < jnp.asarray(n)[..., None], jnp.take_along_axis(values, index, axis=-1), 0.0)
    return list(jnp.moveaxis(ordered, -1, 0))


def _to_slots(values: list, n: jax.Array) -> jax.Array:
    """Inverse of :func:`_from_top`: slot s holds position s - (3 - n); slots above the top hold zeros."""
    slots = jnp.arange(N_SNOW_LAYERS)
    position = slots - (N_SNOW_LAYERS - jnp.asarray(n)[..., None])
    ordered = jnp.stack(values, axis=-1)
    out = jnp.take_along_axis(ordered, jnp.clip(position, 0, N_SNOW_LAYERS - 1), axis=-1)
    return jnp.where(position >= 0, out, 0.0)


def _halve(layers: tuple[list, ...], k: int, split: jax.Array) -> None:
    """Where ``split``: layer ``k`` gives half of its thickness, ice and liquid to the (empty) layer below."""
    for arr in layers:
        half = arr[k] / 2.0
        arr[k] = jnp.where(split, half, arr[k])
        arr[k + 1] = jnp.where(split, half, arr[k + 1])


def _trim(dz: list, ice: list, liq: list, t: list, k: int, max_m: float, trim: jax.Array, c: Constants) -> None:
    """Where ``trim``: layer ``k`` keeps ``max_m`` of thickness (and that share of its water); the rest joins layer
    ``k + 1`` at the temperature of layer ``k``."""
    dz_k = safe_where(trim, dz[k], 1.0)
    extra_dz = dz[k] - max_m
    frac = div(extra_dz, dz_k)
    extra_ice, extra_liq = frac * ice[k], frac * liq[k]
    keep = div(max_m, dz_k)
    ice[k] = jnp.where(trim, keep * ice[k], ice[k])
    liq[k] = jnp.where(trim, keep * liq[k], liq[k])
    dz[k] = jnp.where(trim, max_m, dz[k])
    below = (dz[k + 1], liq[k + 1], ice[k + 1], t[k + 1])
    merged = snow_layer_water_combo(*below, extra_dz, extra_liq, extra_ice, t[k], c)
    dz[k + 1], liq[k + 1], ice[k + 1], t[k + 1] = (
        jnp.where(trim, new, old) for new, old in zip(merged, below, strict=True)
    )


def snow_layer_divide(snow: SnowState, const: Constants) -> SnowState:
    """Divide thick snow layers as Noah-MP ``SnowLayerDivide`` (a pack without layers passes unchanged)."""
    c = const
    n = jnp.asarray(snow.n_layers).astype(jnp.int32)
    dz, ice, liq, t = (_from_top(a, n) for a in (snow.dz_m, snow.ice_mm, snow.liq_mm, snow.t_k))
    m = n

    # One layer thicker than 5 cm: split in two equal halves.
    split = (m == 1) & (dz[0] > MAX_TOP_M)
    _halve((dz, ice, liq), 0, split)
    t[1] = jnp.where(split, t[0], t[1])
    m = jnp.where(split, 2, m)

    # The top layer keeps 5 cm; the rest joins the second layer.
    trim = (m > 1) & (dz[0] > MAX_TOP_M)
    _trim(dz, ice, liq, t, 0, MAX_TOP_M, trim, c)

    # A second layer thicker than 20 cm in a two-layer pack: split it, with a linear temperature profile.
    split = trim & (m <= 2) & (dz[1] > MAX_SECOND_M)
    grad = div(t[0] - t[1], safe_where(split, (dz[0] + dz[1]) / 2.0, 1.0))
    _halve((dz, ice, liq), 1, split)
    t_third = t[1] - grad * dz[1] / 2.0
    warm = t_third >= c.tfrz
    t[2] = jnp.where(split, jnp.where(warm, t[1], t_third), t[2])
    t[1] = jnp.where(split & ~warm, t[1] + grad * dz[1] / 2.0, t[1])
    m = jnp.where(split, 3, m)

    # The second layer keeps 20 cm; the rest joins the third.
    _trim(dz, ice, liq, t, 1, MAX_SECOND_M, (m > 2) & (dz[1] > MAX_SECOND_M), c)

    return SnowState(
        swe_mm=snow.swe_mm, depth_m=snow.depth_m, age=snow.age, swe_prev_mm=snow.swe_prev_mm,
        n_layers=m.astype(jnp.asarray(snow.n_layers).dtype),
        t_k=_to_slots(t, m), ice_mm=_to_slots(ice, m), liq_mm=_to_slots(liq, m), dz_m=_to_slots(dz, m),
    )  # fmt: skip
