"""Soil heat capacity, thermal conductivity and phase-change factor (Noah-MP ``SoilThermalProperty`` and
``GroundThermalProperty``): Johansen/Peters-Lidard conductivity with quartz, volumetric heat capacity."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._safe import div, power, safe_where
from .constants import Constants
from .types import SoilGrid, SoilParams, SoilState


def soil_heat_capacity_conductivity(
    state: SoilState, params: SoilParams, const: Constants
) -> tuple[jax.Array, jax.Array]:
    """Volumetric heat capacity (J m-3 K-1) and thermal conductivity (W m-1 K-1) of the soil layers, (..., N),
    before any snow blend (Noah-MP ``SoilThermalProperty``)."""
    c = const
    smc, sh2o, smcmax = state.smc, state.sh2o, params.smcmax
    ice = smc - sh2o
    heat_capacity = sh2o * c.c_water + (1.0 - smcmax) * params.csoil[..., None] + (smcmax - smc) * c.c_air
    heat_capacity = heat_capacity + ice * c.c_ice

    sat = div(smc, smcmax)
    fast = c.exp_log_pow
    k_solids = power(c.k_quartz, params.quartz, fast) * power(c.k_other, 1.0 - params.quartz, fast)
    wet = smc > 0.0
    liquid_frac = jnp.where(wet, div(sh2o, safe_where(wet, smc, 1.0)), 1.0)
    xu = liquid_frac * smcmax
    k_sat = power(k_solids, 1.0 - smcmax, fast) * power(c.k_ice, smcmax - xu, fast) * power(c.k_water, xu, fast)
    gamma_dry = (1.0 - smcmax) * c.rho_solid
    k_dry = div(c.kdry_a * gamma_dry + c.kdry_b, c.rho_solid - c.kdry_c * gamma_dry)
    frozen = (sh2o + c.kersten_frozen) < smc
    moist = sat > c.kersten_sr
    kersten_unfrozen = jnp.where(moist, jnp.log10(safe_where(moist, sat, 1.0)) + 1.0, 0.0)
    kersten = jnp.where(frozen, sat, kersten_unfrozen)
    return heat_capacity, kersten * (k_sat - k_dry) + k_dry


def snow_blend(
    k1: jax.Array, dz1: jax.Array | float, k_snow: jax.Array | float, h_snow: jax.Array | float
) -> jax.Array:
    """Soil layer 1's conductivity blended with the snow above it, ``(k1 dz1 + k_snow h) / (h + dz1)``
    (Noah-MP ``GroundThermalProperty``): with snow layers the bottom layer's conductivity and thickness, without
    them 0.35 W m-1 K-1 and the snow depth (also without snow, h = 0, which is not an exact identity)."""
    return div(k1 * dz1 + k_snow * h_snow, h_snow + dz1)


def soil_thermal_properties(
    state: SoilState,
    params: SoilParams,
    grid: SoilGrid,
    const: Constants,
    dt_s: float,
    snow_depth_m: jax.Array | float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Heat capacity (J m-3 K-1), conductivity (W m-1 K-1) and phase-change factor (K m2 W-1), (..., N).

    All from the start-of-step state. The phase-change factor is dt / (C dz) with the MAIN step.
    Layer 1's conductivity goes through Noah-MP's blend (:func:`snow_blend`) with a snowpack without snow
    layers of depth ``snow_depth_m`` (..., ) in m.
    """
    heat_capacity, conductivity = soil_heat_capacity_conductivity(state, params, const)
    dz = grid.dz
    k1 = snow_blend(conductivity[..., 0], dz[0], const.k_snow_blend, snow_depth_m)
    conductivity = conductivity.at[..., 0].set(k1)
    phase_factor = div(dt_s, heat_capacity * dz)
    return heat_capacity, conductivity, phase_factor
