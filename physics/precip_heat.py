"""Heat advected by precipitation to the canopy and the ground (Noah-MP ``PrecipitationHeatAdvect``).

Rain and snow arrive at the air temperature and leave the canopy at the canopy temperature; the heat they
carry is a source for the canopy and the ground energy balances. Each term is limited to +-20 W m-2.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div, safe_divide
from .constants import HEAT_CAPACITY_ICE, HEAT_CAPACITY_WATER

HEAT_CAPACITY_WATER_MASS = HEAT_CAPACITY_WATER / 1000.0  # J kg-1 K-1 (folded as the Fortran does)
HEAT_CAPACITY_ICE_MASS = HEAT_CAPACITY_ICE / 1000.0  # J kg-1 K-1 (ConstHeatCapacIce / 1000)
ADVECTED_HEAT_LIMIT = 20.0  # W m-2, bound on each term


class PrecipHeat(eqx.Module):
    """Heat advected by precipitation, W m-2 (positive = gained by the receiving surface).

    ``canopy_wm2`` net gain of the canopy (air-to-canopy minus canopy-to-ground) [HeatPrecipAdvCanopy];
    ``veg_ground_wm2`` gain of the ground under the canopy per unit vegetated area [HeatPrecipAdvVegGrd];
    ``bare_ground_wm2`` gain of the bare ground per unit bare area [HeatPrecipAdvBareGrd]. The grid total is
    ``veg_frac * veg_ground_wm2 + (1 - veg_frac) * bare_ground_wm2 + canopy_wm2`` (:meth:`total_wm2`).
    """

    canopy_wm2: jax.Array
    veg_ground_wm2: jax.Array
    bare_ground_wm2: jax.Array

    def total_wm2(self, veg_frac: jax.Array) -> jax.Array:
        """Grid-mean advected heat as in ``EnergyMain`` for a vegetated point [HeatPrecipAdvSfc], W m-2."""
        return veg_frac * self.veg_ground_wm2 + (1.0 - veg_frac) * self.bare_ground_wm2 + self.canopy_wm2


def precipitation_heat_advect(
    t_air_k: jax.Array,
    t_canopy_k: jax.Array,
    t_ground_k: jax.Array,
    veg_frac: jax.Array,
    rain_mmps: jax.Array,
    snow_mmps: jax.Array,
    drip_rain_mmps: jax.Array,
    throughfall_rain_mmps: jax.Array,
    drip_snow_mmps: jax.Array,
    throughfall_snow_mmps: jax.Array,
) -> PrecipHeat:
    """Heat advected by rain and snow (Noah-MP ``PrecipitationHeatAdvect``).

    Parameters
    ----------
    t_air_k : air temperature at the reference height, K.
    t_canopy_k, t_ground_k : canopy and ground temperatures at the start of the step, K.
    veg_frac : vegetation fraction (-).
    rain_mmps, snow_mmps : rain and snowfall at the reference height, mm s-1.
    drip_rain_mmps, throughfall_rain_mmps, drip_snow_mmps, throughfall_snow_mmps : from
        :func:`dam.physics.canopy_hydrology.canopy_water_intercept`, mm s-1.
    """
    cw, ci = HEAT_CAPACITY_WATER_MASS, HEAT_CAPACITY_ICE_MASS
    air_to_canopy = veg_frac * rain_mmps * cw * (t_air_k - t_canopy_k)
    canopy_to_ground = drip_rain_mmps * cw * (t_canopy_k - t_ground_k)
    air_to_ground = throughfall_rain_mmps * cw * (t_air_k - t_ground_k)
    air_to_canopy = air_to_canopy + veg_frac * snow_mmps * ci * (t_air_k - t_canopy_k)
    canopy_to_ground = canopy_to_ground + drip_snow_mmps * ci * (t_canopy_k - t_ground_k)
    air_to_ground = air_to_ground + throughfall_snow_mmps * ci * (t_air_k - t_ground_k)

    # Per unit area of each tile (multiplied by the fractions later); a buried canopy passes all to the ground.
    partial = (veg_frac > 0.0) & (veg_frac < 1.0)
    none = veg_frac <= 0.0
    canopy = jnp.where(none, 0.0, air_to_canopy - canopy_to_ground)
    veg_ground = jnp.where(partial, safe_divide(canopy_to_ground, veg_frac), jnp.where(none, 0.0, canopy_to_ground))
    bare_ground = jnp.where(
        partial,
        div(air_to_ground, jnp.where(partial, 1.0 - veg_frac, 1.0)),
        jnp.where(none, canopy_to_ground + air_to_ground, 0.0),
    )

    def clip(x):
        return jnp.minimum(jnp.maximum(x, -ADVECTED_HEAT_LIMIT), ADVECTED_HEAT_LIMIT)

    return PrecipHeat(canopy_wm2=clip(canopy), veg_ground_wm2=clip(veg_ground), bare_ground_wm2=clip(bare_ground))
