"""The snowpack's water step (Noah-MP ``SnowWaterMain``): snowfall (and the first snow layer), compaction,
combination and division of layers, snowpack hydrology, excess over the largest SWE, and the totals.

Units: mm (kg m-2) for water, mm s-1 for rates, m for thicknesses.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div, safe_where
from .constants import Constants
from .snow_layer_combine import snow_layer_combine
from .snow_layer_divide import snow_layer_divide
from .snow_types import SLOTS, SnowpackOptions, SnowpackParams, SnowState, barrier, layer_mask
from .snowfall_below_canopy import snowfall_after_canopy_intercept
from .snowpack_compaction import snowpack_compaction
from .snowpack_hydrology import snowpack_hydrology

MIN_SWE_MM = 1.0e-6  # a pack with less water, or thinner than MIN_DEPTH_M, is removed
MIN_DEPTH_M = 1.0e-6


class SnowWater(eqx.Module):
    """Result of :func:`snow_water_main`.

    ``snow`` the pack at the end of the step; ``soil_ice1`` / ``soil_liq1`` soil layer 1's ice and liquid
    water after the snowpack took any over-sublimation from them, m3 m-3; ``outflow_mmps`` liquid water out
    of the bottom of the pack, mm s-1 (SnowBotOutflow); ``pond_mm`` liquid of layers given up by combination,
    mm per step (PondSfcThinSnwComb + PondSfcThinSnwTrans); ``glacier_excess_mm`` SWE beyond the largest
    allowed, which joins the subsurface runoff, mm per step (GlacierExcessFlow x dt); ``discarded_mm`` water
    removed by Noah-MP's thresholds of a pack without layers, mm per step.
    """

    snow: SnowState
    soil_ice1: jax.Array
    soil_liq1: jax.Array
    outflow_mmps: jax.Array
    pond_mm: jax.Array
    glacier_excess_mm: jax.Array
    discarded_mm: jax.Array


def snow_water_main(
    snow: SnowState,
    melting: jax.Array,
    ice_frac_prev: jax.Array,
    snowfall_mmps: jax.Array,
    depth_incr_mps: jax.Array,
    rain_mmps: jax.Array,
    sublim_mmps: jax.Array,
    frost_mmps: jax.Array,
    t_air_k: jax.Array,
    p_air_pa: jax.Array,
    soil_ice1: jax.Array,
    soil_liq1: jax.Array,
    soil_dz1: jax.Array,
    params: SnowpackParams,
    options: SnowpackOptions,
    const: Constants,
    dt_s: float,
) -> SnowWater:
    """Noah-MP ``SnowWaterMain`` for one step.

    Parameters
    ----------
    snow : the pack after this step's phase change (layer thicknesses as used in the step).
    melting, ice_frac_prev : (..., 3) layers flagged for melting by the phase change, and their ice fraction
        at the start of the step (compaction by melt).
    snowfall_mmps, depth_incr_mps, rain_mmps : snow (mm s-1, m s-1 of depth) and rain (mm s-1) reaching the
        ground.
    sublim_mmps, frost_mmps : sublimation from and frost onto the snow surface, mm s-1.
    t_air_k, p_air_pa : air temperature (K) and pressure (Pa) at the reference height.
    soil_ice1, soil_liq1 : soil layer 1's ice and liquid water, m3 m-3; ``soil_dz1`` its thickness, m.
    """
    c, dt = const, dt_s
    snow = snowfall_after_canopy_intercept(
        snow, snowfall_mmps, depth_incr_mps, t_air_k, dt, new_layers=options.layers == "noahmp"
    )
    layered = snow.n_layers > 0
    compacted = snowpack_compaction(snow, melting, ice_frac_prev, t_air_k, p_air_pa, params, options, dt)
    snow = eqx.tree_at(lambda s: s.dz_m, snow, jnp.where(layered[..., None], compacted.dz_m, snow.dz_m))
    (snow,) = barrier(snow)
    comb = barrier(snow_layer_combine(snow, soil_ice1, soil_liq1, soil_dz1, c))[0]
    (snow,) = barrier(snow_layer_divide(comb.snow, c))
    hyd = snowpack_hydrology(
        snow, comb.soil_ice1, comb.soil_liq1, soil_dz1, sublim_mmps, frost_mmps, rain_mmps, params, c, dt,
        comb.pond_comb_mm, comb.pond_trans_mm,
    )  # fmt: skip
    (hyd,) = barrier(hyd)
    snow = hyd.snow

    # Totals: clear the slots without a layer, move SWE beyond the largest allowed out of the bottom layer.
    n = snow.n_layers
    layered = n > 0
    active = layer_mask(n)
    t, ice, liq, dz = (jnp.where(active, a, 0.0) for a in (snow.t_k, snow.ice_mm, snow.liq_mm, snow.dz_m))
    excess = jnp.where(layered & (snow.swe_mm > params.swe_max_mm), snow.swe_mm - params.swe_max_mm, 0.0)
    ice0, dz0 = ice[..., -1], dz[..., -1]
    density = div(ice0, safe_where(layered, dz0, 1.0))
    glacier = excess > 0.0
    ice = ice.at[..., -1].set(jnp.where(glacier, ice0 - excess, ice0))
    dz = dz.at[..., -1].set(jnp.where(glacier, dz0 - div(excess, safe_where(glacier, density, 1.0)), dz0))
    swe_sum = depth_sum = jnp.zeros_like(snow.swe_mm)
    for s in SLOTS:
        swe_sum = jnp.where(active[..., s], swe_sum + ice[..., s] + liq[..., s], swe_sum)
        depth_sum = jnp.where(active[..., s], depth_sum + dz[..., s], depth_sum)
    swe = jnp.where(layered, swe_sum, snow.swe_mm)
    depth = jnp.where(layered, depth_sum, snow.depth_m)
    small = (depth <= MIN_DEPTH_M) | (swe <= MIN_SWE_MM)
    discarded = hyd.discarded_mm + jnp.where(small & ~layered, swe, 0.0)
    swe = jnp.where(small, 0.0, swe)
    depth = jnp.where(small, 0.0, depth)
    snow = SnowState(
        swe_mm=swe, depth_m=depth, age=snow.age, swe_prev_mm=snow.swe_prev_mm, n_layers=n, t_k=t, ice_mm=ice,
        liq_mm=liq, dz_m=dz,
    )  # fmt: skip
    return SnowWater(
        snow=snow, soil_ice1=hyd.soil_ice1, soil_liq1=hyd.soil_liq1, outflow_mmps=hyd.outflow_mmps,
        pond_mm=hyd.pond_comb_mm + hyd.pond_trans_mm, glacier_excess_mm=excess, discarded_mm=discarded,
    )  # fmt: skip
