"""Soil hydraulic conductivity and diffusivity, Campbell/Clapp-Hornberger (Noah-MP
``SoilDiffusivityConductivityOpt1/Opt2``), and the frozen-soil impermeable fraction."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._safe import div, pow_libm, power
from .constants import Constants
from .types import SoilParams


def _powers(moisture: jax.Array, params: SoilParams, const: Constants) -> tuple[jax.Array, jax.Array]:
    """s^(b+2) and s^(2b+3) with s = max(0.01, moisture / smcmax)."""
    s = jnp.maximum(const.min_saturation, div(moisture, params.smcmax))
    fast = const.exp_log_pow
    return power(s, params.bexp + 2.0, fast), power(s, 2.0 * params.bexp + 3.0, fast)


def hydraulics_total_moisture(
    smc: jax.Array, impermeable_frac: jax.Array, params: SoilParams, const: Constants
) -> tuple[jax.Array, jax.Array]:
    """OPT_INF=1: diffusivity (m2 s-1) and conductivity (m s-1) from TOTAL moisture, times (1 - FCR)."""
    pow_d, pow_k = _powers(smc, params, const)
    diffusivity = params.dwsat * pow_d * (1.0 - impermeable_frac)
    conductivity = params.dksat * pow_k * (1.0 - impermeable_frac)
    return diffusivity, conductivity


def hydraulics_liquid_moisture(
    sh2o: jax.Array, ice_max: jax.Array, params: SoilParams, const: Constants
) -> tuple[jax.Array, jax.Array]:
    """OPT_INF=2: diffusivity (m2 s-1) and conductivity (m s-1) from LIQUID moisture; the diffusivity is
    blended towards that of a dry soil by the column-maximum ice content ``ice_max`` (..., m3 m-3)."""
    s2 = jnp.maximum(const.min_saturation, div(sh2o, params.smcmax))
    s1 = jnp.minimum(div(const.opt2_moisture, params.smcmax), s2)
    pow_d, pow_k = _powers(sh2o, params, const)
    diffusivity = params.dwsat * pow_d
    ice_max = ice_max[..., None]
    weight = div(1.0, 1.0 + pow_libm(500.0 * ice_max, 3.0))
    dry = params.dwsat * power(s1, params.bexp + 2.0, const.exp_log_pow)
    blended = weight * diffusivity + (1.0 - weight) * dry
    diffusivity = jnp.where(ice_max > 0.0, blended, diffusivity)
    conductivity = params.dksat * pow_k
    return diffusivity, conductivity


def conductivity_liquid_top(sh2o_1: jax.Array, params: SoilParams, const: Constants) -> jax.Array:
    """Layer-1 conductivity of OPT_INF=2 (m s-1), used by the Schaake infiltration whatever OPT_INF is."""
    s = jnp.maximum(const.min_saturation, div(sh2o_1, params.smcmax[..., 0]))
    return params.dksat[..., 0] * power(s, 2.0 * params.bexp[..., 0] + 3.0, const.exp_log_pow)


def impermeable_fraction(ice: jax.Array, params: SoilParams, const: Constants) -> jax.Array:
    """Frozen-soil impermeable fraction FCR (..., N), from ice content (m3 m-3)."""
    c = const
    ice_frac = jnp.minimum(1.0, div(ice, params.smcmax))
    num = jnp.maximum(0.0, jnp.exp(-c.soil_imp_para * (1.0 - ice_frac)) - c.exp_m_soil_imp)
    return div(num, 1.0 - c.exp_m_soil_imp)
