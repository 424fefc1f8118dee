"""Snowfall on the ground: a pack without layers grows, builds its first snow layer at 2.5 cm, and snow on a
layered pack goes into its top layer (Noah-MP ``SnowfallAfterCanopyIntercept``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .constants import TFRZ
from .snow_types import N_SNOW_LAYERS, SnowState, pick, put

NEW_LAYER_DEPTH_M = 0.025  # a pack without layers this deep becomes one snow layer


def snowfall_after_canopy_intercept(
    snow: SnowState,
    snowfall_mmps: jax.Array,
    depth_incr_mps: jax.Array,
    t_air_k: jax.Array,
    dt_s: float,
    new_layers: bool = True,
) -> SnowState:
    """Add the step's snowfall on the ground (``snowfall_mmps`` mm s-1, depth increase ``depth_incr_mps``
    m s-1) to the pack, creating the first snow layer (temperature min(TFRZ, ``t_air_k``), all ice, the whole
    pack) when a pack without layers reaches 2.5 cm (its ``depth_m`` then reads 0 until the layers are
    summed up again, as in Noah-MP); with ``new_layers=False`` (``SnowpackOptions.layers="none"``) the pack
    never builds one."""
    dt = dt_s
    n = snow.n_layers
    falling = snowfall_mmps > 0.0
    thin = n == 0
    depth = jnp.where(thin & falling, snow.depth_m + depth_incr_mps * dt, snow.depth_m)
    swe = jnp.where(thin & falling, snow.swe_mm + snowfall_mmps * dt, snow.swe_mm)
    new = thin & (depth >= NEW_LAYER_DEPTH_M) & new_layers
    bottom = N_SNOW_LAYERS - 1
    dz = put(snow.dz_m, bottom, depth, new)
    t = put(snow.t_k, bottom, jnp.minimum(TFRZ, t_air_k), new)
    ice = put(snow.ice_mm, bottom, swe, new)
    liq = put(snow.liq_mm, bottom, 0.0, new)
    depth = jnp.where(new, 0.0, depth)
    n_new = jnp.where(new, 1, n).astype(n.dtype)

    onto_layers = ~thin & falling
    top = N_SNOW_LAYERS - n
    ice = put(ice, top, pick(ice, top) + snowfall_mmps * dt, onto_layers)
    dz = put(dz, top, pick(dz, top) + depth_incr_mps * dt, onto_layers)
    return SnowState(
        swe_mm=swe, depth_m=depth, age=snow.age, swe_prev_mm=snow.swe_prev_mm, n_layers=n_new, t_k=t, ice_mm=ice,
        liq_mm=liq, dz_m=dz,
    )  # fmt: skip
