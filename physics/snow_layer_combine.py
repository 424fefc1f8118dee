"""Combination of snow layers (Noah-MP ``SnowLayerCombine`` and ``SnowLayerWaterCombo``).

Layers with 0.1 mm of ice or less merge into the layer below (the bottom one into the layer above, or the
pack loses its last layer); a pack thinner than 2.5 cm gives up its layers (its ice stays as a pack without
layers, its liquid ponds on the soil); layers thinner than 2.5 / 2.5 / 10 cm (by position from the top)
merge with a neighbour. Noah-MP's loops over the layer index, with their shifts and early exits, are
unrolled over the three slots with per-column selects.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div, safe_where
from .constants import DENSITY_WATER, Constants
from .snow_types import SLOTS, SnowState, barrier

MIN_ICE_MM = 0.1  # layers with less ice merge into a neighbour
MIN_DEPTH_M = 0.025  # thinner packs lose their layers
MIN_THICKNESS_M = (0.025, 0.025, 0.1)  # by position from the top


def snow_layer_water_combo(dz1, liq1, ice1, t1, dz2, liq2, ice2, t2, const: Constants):
    """Two snow layers combined into one (Noah-MP ``SnowLayerWaterCombo``): thickness (m), liquid and ice
    (mm) add up; the temperature (K) follows the summed enthalpy H (sensible heat relative to TFRZ plus the
    latent heat of the liquid): TFRZ + H / C below zero, TFRZ while the liquid's latent heat covers H, above
    that TFRZ + (H - Lf liq) / C. Below zero the combined liquid stays liquid (the next phase change refreezes
    it), so H is conserved for dry or warm layers only. Noah-MP multiplies masses (mm) by volumetric heat
    capacities; only their ratio enters the temperature, and the port keeps it."""
    c = const
    dz, liq, ice = dz1 + dz2, liq1 + liq2, ice1 + ice2
    h1 = (c.c_ice * ice1 + c.c_water * liq1) * (t1 - c.tfrz) + c.lf * liq1
    h2 = (c.c_ice * ice2 + c.c_water * liq2) * (t2 - c.tfrz) + c.lf * liq2
    h = h1 + h2
    cap = c.c_ice * ice + c.c_water * liq
    cap = safe_where(cap != 0.0, cap, 1.0)
    latent = c.lf * liq
    t = jnp.where(h < 0.0, c.tfrz + div(h, cap), jnp.where(h <= latent, c.tfrz, c.tfrz + div(h - latent, cap)))
    return dz, liq, ice, t


class CombinedSnow(eqx.Module):
    """Result of :func:`snow_layer_combine`: ``snow`` the pack; ``soil_ice1`` / ``soil_liq1`` soil layer 1's ice
    and liquid water, m3 m-3 (an over-sublimated last layer takes its deficit from them); ``pond_comb_mm``
    liquid of a last layer removed for lack of ice (PondSfcThinSnwComb), ``pond_trans_mm`` liquid of a pack
    that lost its layers for lack of depth (PondSfcThinSnwTrans), mm, both to the soil surface."""

    snow: SnowState
    soil_ice1: jax.Array
    soil_liq1: jax.Array
    pond_comb_mm: jax.Array
    pond_trans_mm: jax.Array


def _shift_down(arrays: list[list], upto: int, keep_above: jax.Array, do: jax.Array) -> None:
    """Move the layers above slot ``upto`` one slot down (slot k takes k - 1 for k = upto..keep_above + 1)."""
    for k in range(upto, 0, -1):
        move = do & (k >= keep_above + 1)
        for arr in arrays:
            arr[k] = jnp.where(move, arr[k - 1], arr[k])


def snow_layer_combine(
    snow: SnowState,
    soil_ice1: jax.Array,
    soil_liq1: jax.Array,
    soil_dz1: jax.Array,
    const: Constants,
    pond_comb_mm: jax.Array | float = 0.0,
    pond_trans_mm: jax.Array | float = 0.0,
) -> CombinedSnow:
    """Combine snow layers as Noah-MP ``SnowLayerCombine`` (run where the pack has layers; a pack without
    layers passes unchanged). ``soil_dz1`` thickness of soil layer 1, m; ``pond_*_mm`` the ponding values so
    far in this step (kept where this call sets none)."""
    n0 = snow.n_layers
    n = n0
    t, ice, liq, dz = (list(jnp.moveaxis(a, -1, 0)) for a in (snow.t_k, snow.ice_mm, snow.liq_mm, snow.dz_m))
    swe, depth = snow.swe_mm, snow.depth_m
    pond_comb = jnp.broadcast_to(jnp.asarray(pond_comb_mm, swe.dtype), swe.shape)
    pond_trans = jnp.broadcast_to(jnp.asarray(pond_trans_mm, swe.dtype), swe.shape)
    bottom = SLOTS[-1]

    # 1. Layers with too little ice merge into a neighbour (Noah-MP loops over the original indices).
    for s in SLOTS:
        small = (s >= len(SLOTS) - n0) & (ice[s] <= MIN_ICE_MM)
        if s < bottom:
            into = s + 1
            for arr in (liq, ice, dz):
                arr[into] = jnp.where(small, arr[into] + arr[s], arr[into])
        else:
            multi = small & (n > 1)
            for arr in (liq, ice, dz):
                arr[s - 1] = jnp.where(multi, arr[s - 1] + arr[s], arr[s - 1])
            last = small & (n == 1)
            positive = ice[s] >= 0.0
            pond = jnp.where(positive, liq[s], liq[s] + ice[s])
            to_soil = last & ~positive & (pond < 0.0)
            soil_ice1 = jnp.where(to_soil, soil_ice1 + div(pond, soil_dz1 * DENSITY_WATER), soil_ice1)
            pond_comb = jnp.where(last, jnp.where(to_soil, 0.0, pond), pond_comb)
            swe = jnp.where(last, jnp.where(positive, ice[s], 0.0), swe)
            depth = jnp.where(last, jnp.where(positive, dz[s], 0.0), depth)
            for arr in (liq, ice, dz):
                arr[s] = jnp.where(last, 0.0, arr[s])
        top = len(SLOTS) - n
        _shift_down([t, liq, ice, dz], s, top, small & (s > top) & (n > 1))
        n = jnp.where(small, n - 1, n)
        t, liq, ice, dz, n, swe, depth, soil_ice1, pond_comb = barrier(
            t, liq, ice, dz, n, swe, depth, soil_ice1, pond_comb
        )
    overdrawn = soil_ice1 < 0.0
    soil_liq1 = jnp.where(overdrawn, soil_liq1 + soil_ice1, soil_liq1)
    soil_ice1 = jnp.where(overdrawn, 0.0, soil_ice1)

    # 2. Totals; a pack thinner than 2.5 cm loses its layers.
    layered = n > 0
    top = len(SLOTS) - n
    swe_sum = depth_sum = ice_sum = liq_sum = jnp.zeros_like(swe)
    for s in SLOTS:
        on = s >= top
        swe_sum = jnp.where(on, swe_sum + ice[s] + liq[s], swe_sum)
        depth_sum = jnp.where(on, depth_sum + dz[s], depth_sum)
        ice_sum = jnp.where(on, ice_sum + ice[s], ice_sum)
        liq_sum = jnp.where(on, liq_sum + liq[s], liq_sum)
    swe = jnp.where(layered, swe_sum, swe)
    depth = jnp.where(layered, depth_sum, depth)
    shallow = layered & (depth_sum < MIN_DEPTH_M)
    swe = jnp.where(shallow, ice_sum, swe)
    pond_trans = jnp.where(shallow, liq_sum, pond_trans)
    depth = jnp.where(shallow & (ice_sum <= 0.0), 0.0, depth)
    n = jnp.where(shallow, 0, n)

    # 3. Layers thinner than their minimum merge with the thinner-combining neighbour.
    n_start = n
    position = jnp.ones_like(n)  # Noah-MP IndLayer: position from the top of the next layer tested
    done = n <= 1
    for s in SLOTS:
        run = ~done & (s >= len(SLOTS) - n_start)
        limit = jnp.where(position == 1, MIN_THICKNESS_M[0], jnp.where(position == 2, MIN_THICKNESS_M[1],
                                                                            MIN_THICKNESS_M[2]))  # fmt: skip
        thin = run & (dz[s] < limit)
        top = len(SLOTS) - n
        # The neighbour is the layer below (the combined layer is stored in the lower of the two) unless this
        # is the bottom layer, or a middle one whose upper pair is thinner.
        if s == 0:
            below = jnp.ones_like(thin)
        elif s == bottom:
            below = jnp.zeros_like(thin)
        else:
            below = (s == top) | ((dz[s - 1] + dz[s]) >= (dz[s + 1] + dz[s]))
        j_lo, j_hi = s, min(s + 1, bottom)  # the lower slot of the pair: s + 1 (below) or s (above)
        l_lo, l_hi = max(s - 1, 0), s
        sel = lambda arr, hi, lo, below=below: jnp.where(below, arr[hi], arr[lo])  # noqa: E731
        combo = snow_layer_water_combo(
            sel(dz, j_hi, j_lo), sel(liq, j_hi, j_lo), sel(ice, j_hi, j_lo), sel(t, j_hi, j_lo),
            sel(dz, l_hi, l_lo), sel(liq, l_hi, l_lo), sel(ice, l_hi, l_lo), sel(t, l_hi, l_lo), const,
        )  # fmt: skip
        for arr, value in zip((dz, liq, ice, t), combo, strict=True):
            arr[j_hi] = jnp.where(thin & below, value, arr[j_hi])
            arr[j_lo] = jnp.where(thin & ~below, value, arr[j_lo])
        j = jnp.where(below, j_hi, j_lo)
        for k in range(bottom, 0, -1):  # layers above the combined one move down
            move = thin & (k <= j - 1) & (k >= top + 1)
            for arr in (t, ice, liq, dz):
                arr[k] = jnp.where(move, arr[k - 1], arr[k])
        n = jnp.where(thin, n - 1, n)
        done = done | (thin & (n <= 1))
        position = jnp.where(run & ~thin, position + 1, position)
        t, liq, ice, dz, n, done, position = barrier(t, liq, ice, dz, n, done, position)

    stack = lambda xs: jnp.stack(xs, axis=-1)  # noqa: E731
    new = SnowState(
        swe_mm=swe, depth_m=depth, age=snow.age, swe_prev_mm=snow.swe_prev_mm, n_layers=n.astype(n0.dtype),
        t_k=stack(t), ice_mm=stack(ice), liq_mm=stack(liq), dz_m=stack(dz),
    )  # fmt: skip
    return CombinedSnow(snow=new, soil_ice1=soil_ice1, soil_liq1=soil_liq1, pond_comb_mm=pond_comb,
                        pond_trans_mm=pond_trans)  # fmt: skip
