"""Heat capacity and thermal conductivity of snow layers (Noah-MP ``SnowThermalProperty``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._safe import div, safe_where
from .constants import DENSITY_ICE, Constants
from .snow_types import SnowConductivity


def snow_thermal_properties(
    ice_mm: jax.Array,
    liq_mm: jax.Array,
    dz_m: jax.Array,
    active: jax.Array,
    const: Constants,
    conductivity: SnowConductivity = "stieglitz",
) -> tuple[jax.Array, jax.Array]:
    """Volumetric heat capacity (J m-3 K-1) and thermal conductivity (W m-1 K-1) of each snow layer, (..., 3).

    The ice takes its volume fraction of the layer, the liquid at most the remaining pore space; the heat
    capacity is that of the two (air neglected). Conductivity from the bulk density rho = (ice + liquid) / dz
    (kg m-3): OPT_TKSNO 1 ``"stieglitz"`` 3.2217e-6 rho^2 (Yen 1965), 2 ``"anderson76"`` 0.02 + 2.5e-6 rho^2,
    3 ``"constant"`` 0.35, 4 ``"verseghy91"`` 2.576e-6 rho^2 + 0.074, 5 ``"yen81"`` 2.22 (rho/1000)^1.88.
    Both are 0 in slots without a layer (``active`` False).
    """
    dz = safe_where(active, dz_m, 1.0)
    ice_vol = jnp.minimum(1.0, div(ice_mm, dz * DENSITY_ICE))
    porosity = 1.0 - ice_vol
    liq_vol = jnp.minimum(porosity, div(liq_mm, dz * const.rho_water))
    rho = div(ice_mm + liq_mm, dz)
    heat_capacity = const.c_ice * ice_vol + const.c_water * liq_vol
    if conductivity == "stieglitz":
        k = 3.2217e-6 * (rho * rho)
    elif conductivity == "anderson76":
        k = 2e-2 + 2.5e-6 * rho * rho
    elif conductivity == "constant":
        k = jnp.full_like(rho, 0.35)
    elif conductivity == "verseghy91":
        k = 2.576e-6 * (rho * rho) + 0.074
    else:
        k = 2.22 * jnp.power(jnp.maximum(div(rho, 1000.0), 1e-30), 1.88)
    return jnp.where(active, heat_capacity, 0.0), jnp.where(active, k, 0.0)
