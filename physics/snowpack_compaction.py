"""Compaction of snow layers by destructive metamorphism, overburden and melt (Noah-MP
``SnowpackCompaction``, Anderson 1976, and ``SnowpackCompactionAR24``, its update by Abolafia-Rosenzweig et
al. 2024 with an air-temperature dependent overburden parameter)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._safe import div, safe_where
from .constants import DENSITY_ICE, DENSITY_WATER, TFRZ
from .snow_types import SLOTS, SnowpackOptions, SnowpackParams, SnowState, layer_mask

MIN_VOID = 0.001  # layers with less pore space, or 0.1 mm of ice or less, do not compact
MIN_ICE_MM = 0.1
DENSE_DECAY = 46.0e-3  # m3 kg-1, metamorphism slows above the density aging_density_max
WET_LIQUID = 0.01  # liquid (mm) above this times the thickness (m) speeds metamorphism
BURDEN_T_COEFF = 0.08  # K-1
MAX_SHRINK = -0.5  # fractional thickness change per step is at least this
MIN_DENSITY, MAX_DENSITY = 50.0, 500.0  # kg m-3
PRESSURE_HIGH_PA, PRESSURE_MID_PA = 85000.0, 80000.0


def ar24_burden_factor(t_air_k: jax.Array, p_air_pa: jax.Array, params: SnowpackParams) -> jax.Array:
    """Overburden compaction parameter of AR24, m3 kg-1: linear in air temperature, bounded below by a value
    of the surface-pressure bin and above by ``ar24_cap``."""
    p = params
    f = p.ar24_slope * t_air_k + p.ar24_intercept
    floor = jnp.where(p_air_pa >= PRESSURE_HIGH_PA, p.ar24_floor_high,
                      jnp.where(p_air_pa >= PRESSURE_MID_PA, p.ar24_floor_mid, p.ar24_floor_low))  # fmt: skip
    return jnp.minimum(jnp.maximum(f, floor), p.ar24_cap)


def snowpack_compaction(
    snow: SnowState,
    melting: jax.Array,
    ice_frac_prev: jax.Array,
    t_air_k: jax.Array,
    p_air_pa: jax.Array,
    params: SnowpackParams,
    options: SnowpackOptions,
    dt_s: float,
) -> SnowState:
    """Shrink each snow layer by the rates of destructive metamorphism, overburden (the snow above plus half
    the layer's own) and melt, limited to halving per step and to densities of 50..500 kg m-3.

    ``melting`` (..., 3) layers flagged for melting by this step's phase change; ``ice_frac_prev`` (..., 3)
    ice fraction of the layers' water at the start of the step (0 for new layers); ``t_air_k`` air
    temperature, K, and ``p_air_pa`` pressure, Pa, at the reference height (AR24).
    """
    p, dt = params, dt_s
    active = layer_mask(snow.n_layers)
    if options.compaction == "ar24":
        burden_fac = ar24_burden_factor(t_air_k, p_air_pa, p)
    else:
        burden_fac = p.burden_fac
    burden = jnp.zeros_like(snow.swe_mm)
    dzs = []
    for s in SLOTS:
        on = active[..., s]
        ice, liq, t = snow.ice_mm[..., s], snow.liq_mm[..., s], snow.t_k[..., s]
        dz = safe_where(on, snow.dz_m[..., s], 1.0)
        total = ice + liq
        ice_frac = div(ice, safe_where(on & (total != 0.0), total, 1.0))
        void = 1.0 - div(div(ice, DENSITY_ICE) + div(liq, DENSITY_WATER), dz)
        compact = on & (void > MIN_VOID) & (ice > MIN_ICE_MM)
        rho_ice = div(ice, dz)
        t_diff = jnp.maximum(0.0, TFRZ - t)
        aging = -p.aging_fac1 * jnp.exp(-p.aging_fac2 * t_diff)
        dense = rho_ice > p.aging_density_max
        aging = jnp.where(dense, aging * jnp.exp(-DENSE_DECAY * jnp.where(dense, rho_ice - p.aging_density_max, 0.0)),
                          aging)  # fmt: skip
        aging = jnp.where(liq > WET_LIQUID * dz, aging * p.aging_fac3, aging)
        overburden = div(
            -(burden + 0.5 * total) * jnp.exp(-BURDEN_T_COEFF * t_diff - burden_fac * rho_ice), p.viscosity
        )
        prev = ice_frac_prev[..., s]
        melt = jnp.maximum(0.0, div(prev - ice_frac, jnp.maximum(1.0e-6, prev)))
        melt = jnp.where(melting[..., s], div(-melt, dt), 0.0)
        rate = jnp.maximum(MAX_SHRINK, (aging + overburden + melt) * dt)
        new = dz * (1.0 + rate)
        new = jnp.maximum(new, div(ice, DENSITY_ICE) + div(liq, DENSITY_WATER))
        new = jnp.minimum(jnp.maximum(new, div(total, MAX_DENSITY)), div(total, MIN_DENSITY))
        dzs.append(jnp.where(compact, new, snow.dz_m[..., s]))
        burden = burden + jnp.where(on, total, 0.0)
    return SnowState(
        swe_mm=snow.swe_mm, depth_m=snow.depth_m, age=snow.age, swe_prev_mm=snow.swe_prev_mm,
        n_layers=snow.n_layers, t_k=snow.t_k, ice_mm=snow.ice_mm, liq_mm=snow.liq_mm, dz_m=jnp.stack(dzs, axis=-1),
    )  # fmt: skip
