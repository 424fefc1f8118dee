"""Snowpack water: sublimation and frost at the snow surface, rain into the top layer, and liquid water
percolating down through the layers to the soil (Noah-MP ``SnowpackHydrology``).

Each layer holds liquid up to ``liq_hold_cap`` of its pore space (and at most ``liq_frac_max`` of its
mass); the excess flows into the layer below. The bottom layer releases its excess over a time scale
(``liq_release_fac_ps``) unless the liquid exceeds the whole pore space. A pack without layers only gains
frost and loses sublimation (its depth follows at constant density, within 50..500 kg m-3); sublimation
beyond the pack is taken from soil layer 1's ice (then its liquid).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div, safe_divide, safe_where
from .constants import DENSITY_ICE, DENSITY_WATER, Constants
from .snow_layer_combine import snow_layer_combine
from .snow_types import SLOTS, SnowpackParams, SnowState, layer_mask, pick, put

MIN_SWE_MM = 1.0e-6  # smaller packs (and thinner than MIN_DEPTH_M) are removed
MIN_DEPTH_M = 1.0e-8
MIN_TOP_ICE_MM = 1.0e-6  # a top layer sublimated below this is combined away
MIN_DENSITY, MAX_DENSITY = 50.0, 500.0  # kg m-3


def _expand(mask: jax.Array, like: jax.Array) -> jax.Array:
    return jnp.reshape(mask, mask.shape + (1,) * (jnp.ndim(like) - mask.ndim))


class SnowHydrology(eqx.Module):
    """Result of :func:`snowpack_hydrology`: ``snow`` the pack; ``soil_ice1`` / ``soil_liq1`` soil layer 1's
    ice and liquid water, m3 m-3; ``outflow_mmps`` liquid water leaving the bottom of the pack (Noah-MP
    SnowBotOutflow), mm s-1; ``pond_comb_mm`` / ``pond_trans_mm`` as in
    :class:`dam.physics.snow_layer_combine.CombinedSnow`; ``discarded_mm`` water removed by the thresholds of
    a pack without layers (or created by the non-negative liquid of the top layer, negative), mm."""

    snow: SnowState
    soil_ice1: jax.Array
    soil_liq1: jax.Array
    outflow_mmps: jax.Array
    pond_comb_mm: jax.Array
    pond_trans_mm: jax.Array
    discarded_mm: jax.Array


def snowpack_hydrology(
    snow: SnowState,
    soil_ice1: jax.Array,
    soil_liq1: jax.Array,
    soil_dz1: jax.Array,
    sublim_mmps: jax.Array,
    frost_mmps: jax.Array,
    rain_mmps: jax.Array,
    params: SnowpackParams,
    const: Constants,
    dt_s: float,
    pond_comb_mm: jax.Array | float = 0.0,
    pond_trans_mm: jax.Array | float = 0.0,
) -> SnowHydrology:
    """Noah-MP ``SnowpackHydrology`` for one step.

    ``soil_ice1`` / ``soil_liq1`` m3 m-3 and ``soil_dz1`` m describe soil layer 1; ``sublim_mmps`` /
    ``frost_mmps`` sublimation from and frost onto the snow surface, ``rain_mmps`` rain reaching the ground,
    mm s-1; ``pond_*_mm`` ponding of earlier combinations in this step.
    """
    p, dt = params, dt_s
    n = snow.n_layers
    swe, depth = snow.swe_mm, snow.depth_m
    pond_comb = jnp.broadcast_to(jnp.asarray(pond_comb_mm, swe.dtype), swe.shape)
    pond_trans = jnp.broadcast_to(jnp.asarray(pond_trans_mm, swe.dtype), swe.shape)
    to_soil = soil_dz1 * DENSITY_WATER

    # A pack that combination emptied: frost and sublimation act on soil layer 1's ice.
    gone = swe == 0.0
    soil_ice1 = jnp.where(gone, soil_ice1 + div((frost_mmps - sublim_mmps) * dt, to_soil), soil_ice1)
    overdrawn = gone & (soil_ice1 < 0.0)
    soil_liq1 = jnp.where(overdrawn, soil_liq1 + soil_ice1, soil_liq1)
    soil_ice1 = jnp.where(overdrawn, 0.0, soil_ice1)

    # A pack without layers: sublimation and frost change its water, its depth follows.
    thin = (n == 0) & (swe > 0.0)
    swe_new = swe - sublim_mmps * dt + frost_mmps * dt
    ratio = safe_divide(swe_new, swe)
    depth_new = jnp.maximum(0.0, ratio * depth)
    depth_new = jnp.minimum(jnp.maximum(depth_new, div(swe_new, MAX_DENSITY)), div(swe_new, MIN_DENSITY))
    negative = swe_new < 0.0
    soil_ice1 = jnp.where(thin & negative, soil_ice1 + div(swe_new, to_soil), soil_ice1)
    swe = jnp.where(thin, jnp.where(negative, 0.0, swe_new), swe)
    depth = jnp.where(thin, jnp.where(negative, 0.0, depth_new), depth)
    overdrawn = thin & (soil_ice1 < 0.0)
    soil_liq1 = jnp.where(overdrawn, soil_liq1 + soil_ice1, soil_liq1)
    soil_ice1 = jnp.where(overdrawn, 0.0, soil_ice1)
    small = (depth <= MIN_DEPTH_M) | (swe <= MIN_SWE_MM)
    discarded = jnp.where(small & (n == 0), swe, 0.0)
    swe = jnp.where(small, 0.0, swe)
    depth = jnp.where(small, 0.0, depth)
    snow = eqx.tree_at(lambda s: (s.swe_mm, s.depth_m), snow, (swe, depth))

    # Layers: sublimation and frost change the top layer's ice (a top layer left without ice is combined
    # away); its thickness follows at constant density; rain joins its liquid.
    layered = n > 0
    top = len(SLOTS) - n
    ice_top, liq_top = pick(snow.ice_mm, top), pick(snow.liq_mm, top)
    water_top = ice_top + liq_top
    ice_new = ice_top - sublim_mmps * dt + frost_mmps * dt
    snow = eqx.tree_at(lambda s: s.ice_mm, snow, put(snow.ice_mm, top, ice_new, layered))
    comb = snow_layer_combine(snow, soil_ice1, soil_liq1, soil_dz1, const, pond_comb, pond_trans)
    recombine = layered & (ice_new < MIN_TOP_ICE_MM)
    snow = jax.tree.map(lambda x, y: jnp.where(_expand(recombine, x), x, y), comb.snow, snow)
    soil_ice1 = jnp.where(recombine, comb.soil_ice1, soil_ice1)
    soil_liq1 = jnp.where(recombine, comb.soil_liq1, soil_liq1)
    pond_comb = jnp.where(recombine, comb.pond_comb_mm, pond_comb)
    pond_trans = jnp.where(recombine, comb.pond_trans_mm, pond_trans)
    n = snow.n_layers
    top = len(SLOTS) - n
    layered = n > 0
    keep = layered & ~recombine
    dz_top = pick(snow.dz_m, top)
    water_new = pick(snow.ice_mm, top) + pick(snow.liq_mm, top)
    dz_top = div(dz_top * water_new, safe_where(keep, water_top, 1.0))
    dz = put(snow.dz_m, top, dz_top, keep)
    liq_rain = jnp.maximum(0.0, pick(snow.liq_mm, top) + rain_mmps * dt)
    created = jnp.where(layered, liq_rain - (pick(snow.liq_mm, top) + rain_mmps * dt), 0.0)
    liq = put(snow.liq_mm, top, liq_rain, layered)

    # Percolation, top to bottom.
    active = layer_mask(n)
    inflow = jnp.zeros_like(swe)
    liqs, dzs = [], []
    bottom = SLOTS[-1]
    for s in SLOTS:
        on = active[..., s]
        ice_s, dz_s = snow.ice_mm[..., s], safe_where(on, dz[..., s], 1.0)
        porosity = 1.0 - jnp.minimum(1.0, div(ice_s, dz_s * DENSITY_ICE))
        liq_s = liq[..., s] + inflow
        liq_vol = div(liq_s, dz_s * DENSITY_WATER)
        out = jnp.maximum(0.0, (liq_vol - p.liq_hold_cap * porosity) * dz_s)
        if s == bottom:
            out = jnp.maximum((liq_vol - porosity) * dz_s, p.liq_release_fac_ps * dt * out)
        out = out * DENSITY_WATER
        liq_s = liq_s - out
        total = ice_s + liq_s
        too_wet = div(liq_s, safe_where(total != 0.0, total, 1.0)) > p.liq_frac_max
        held = div(p.liq_frac_max, 1.0 - p.liq_frac_max) * ice_s
        out = jnp.where(too_wet, out + (liq_s - held), out)
        liq_s = jnp.where(too_wet, held, liq_s)
        liq_s = jnp.where(on, liq_s, liq[..., s])
        inflow = jnp.where(on, out, 0.0)
        thick = jnp.maximum(dz_s, div(liq_s, DENSITY_WATER) + div(ice_s, DENSITY_ICE))
        liqs.append(liq_s)
        dzs.append(jnp.where(on, thick, dz[..., s]))
    snow = eqx.tree_at(lambda s: (s.liq_mm, s.dz_m), snow, (jnp.stack(liqs, axis=-1), jnp.stack(dzs, axis=-1)))
    return SnowHydrology(
        snow=snow, soil_ice1=soil_ice1, soil_liq1=soil_liq1, outflow_mmps=div(inflow, dt), pond_comb_mm=pond_comb,
        pond_trans_mm=pond_trans, discarded_mm=discarded - created,
    )  # fmt: skip
