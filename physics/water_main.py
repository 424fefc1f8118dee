"""The ground part of Noah-MP ``WaterMain``: the ground latent heat as evaporation, sublimation, dew and
frost; the snowpack's water step (:func:`dam.physics.snow_water_main.snow_water_main`); and the water
boundary of the soil column (surface inflow of rain, melt and snowpack outflow, soil evaporation,
transpiration per layer, frozen-ground treatment).

Units: mm (kg m-2) for water amounts, mm s-1 for rates, m s-1 for the soil-column boundary fluxes.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div
from .constants import LATENT_HEAT_SUBLIMATION, LATENT_HEAT_VAPORIZATION, Constants
from .snow_types import SnowpackOptions, SnowpackParams, SnowState
from .snow_water_main import snow_water_main
from .transpiration import transpiration_water_loss
from .types import SoilForcing, SoilState

MM_TO_M = 0.001


class GroundWater(eqx.Module):
    """Result of :func:`ground_water`.

    ``forcing`` the soil-column boundary of the step (:class:`dam.physics.SoilForcing`, m s-1 and mm s-1 as
    documented there); ``soil`` the soil state handed to the soil water step (layer 1 after the snowpack took
    any over-sublimation from it); ``snow`` the pack at the end of the step; ``vaporize_mmps``,
    ``condense_mmps`` positive and negative parts of the ground latent heat flux as water, mm s-1
    [VaporizeGrd, CondenseVapGrd]; ``evap_ground_net_mmps`` their difference [EvapGroundNet];
    ``sublim_snow_mmps``, ``frost_snow_mmps`` sublimation from and frost onto the pack, mm s-1;
    ``evap_soil_mmps``, ``dew_soil_mmps`` soil surface evaporation and dew before the frozen-ground transfer,
    mm s-1; ``snow_outflow_mmps`` liquid water out of the bottom of the pack, mm s-1 [SnowBotOutflow];
    ``pond_mm`` melt of a pack without layers and liquid of layers given up, ponding on the soil, mm per step
    [PondSfcThinSnwMelt + PondSfcThinSnwComb + PondSfcThinSnwTrans]; ``glacier_excess_mm`` SWE beyond the
    largest allowed, joining the subsurface runoff, mm per step; ``discarded_mm`` water removed by the
    snowpack's thresholds, mm per step.
    """

    forcing: SoilForcing
    soil: SoilState
    snow: SnowState
    vaporize_mmps: jax.Array
    condense_mmps: jax.Array
    evap_ground_net_mmps: jax.Array
    sublim_snow_mmps: jax.Array
    frost_snow_mmps: jax.Array
    evap_soil_mmps: jax.Array
    dew_soil_mmps: jax.Array
    snow_outflow_mmps: jax.Array
    pond_mm: jax.Array
    glacier_excess_mm: jax.Array
    discarded_mm: jax.Array


def ground_water(
    snow: SnowState,
    thin_snow_melt_mm: jax.Array,
    melting: jax.Array,
    ice_frac_prev: jax.Array,
    soil: SoilState,
    soil_dz1: jax.Array,
    latent_heat_ground_wm2: jax.Array,
    frozen_ground: jax.Array,
    rain_ground_mmps: jax.Array,
    snow_ground_mmps: jax.Array,
    snow_depth_incr_mps: jax.Array,
    transpiration_mmps: jax.Array,
    root_fac: jax.Array,
    ghf_wm2: jax.Array,
    t_air_k: jax.Array,
    p_air_pa: jax.Array,
    params: SnowpackParams,
    options: SnowpackOptions,
    const: Constants,
    dt_s: float,
) -> GroundWater:
    """Ground evaporation split, the snowpack's water step and the soil-column water boundary of one step
    (Noah-MP ``WaterMain`` after ``CanopyHydrology``, before ``SoilWaterMain``).

    Parameters
    ----------
    snow : the pack after this step's phase change (:func:`dam.physics.ground_heat.ground_heat`).
    thin_snow_melt_mm : melt of a pack without layers in this step, mm [PondSfcThinSnwMelt].
    melting, ice_frac_prev : (..., 3) snow layers flagged for melting, and their ice fraction at the start of
        the step (compaction).
    soil : the soil state after the phase change; ``soil_dz1`` thickness of layer 1, m.
    latent_heat_ground_wm2 : ground latent heat flux, + up, W m-2 [HeatLatentGrd].
    frozen_ground : True (or 1) where the ground temperature at the start of the step is <= 273.16 K
        [FlagFrozenGround of ``PsychrometricVariable``]; selects the latent heat of sublimation and sends dew
        minus evaporation to soil layer-1 ice.
    rain_ground_mmps, snow_ground_mmps, snow_depth_incr_mps : from
        :func:`dam.physics.canopy_hydrology.canopy_water_intercept`.
    transpiration_mmps : transpiration, mm s-1 (from :func:`dam.physics.canopy_hydrology.canopy_hydrology`).
    root_fac : (..., N) layer factors from :func:`dam.physics.transpiration.soil_water_transpiration`.
    ghf_wm2 : ground heat flux into the soil top, + down, W m-2 (passed through to the forcing).
    t_air_k, p_air_pa : air temperature (K) and pressure (Pa) at the reference height (snow compaction).
    dt_s : time step, s.
    """
    dt = dt_s
    frozen = jnp.asarray(frozen_ground) > 0
    latent = jnp.where(frozen, LATENT_HEAT_SUBLIMATION, LATENT_HEAT_VAPORIZATION)
    flux = div(latent_heat_ground_wm2, latent)
    vaporize = jnp.maximum(flux, 0.0)
    condense = jnp.abs(jnp.minimum(flux, 0.0))

    # Sublimation and frost act on the pack when there is one; the rest is soil evaporation and dew.
    has_snow = snow.swe_mm > 0.0
    sublim = jnp.where(has_snow, jnp.minimum(vaporize, div(snow.swe_mm, dt)), 0.0)
    evap_soil = vaporize - sublim
    frost = jnp.where(has_snow, condense, 0.0)
    dew_soil = condense - frost

    ice = jnp.maximum(0.0, soil.smc - soil.sh2o)
    sw = snow_water_main(
        snow, melting, ice_frac_prev, snow_ground_mmps, snow_depth_incr_mps, rain_ground_mmps, sublim, frost,
        t_air_k, p_air_pa, ice[..., 0], soil.sh2o[..., 0], soil_dz1, params, options, const, dt,
    )  # fmt: skip
    # Layer 1 changes only where the snowpack took water from it (elsewhere bit-identical).
    changed = (sw.soil_ice1 != ice[..., 0]) | (sw.soil_liq1 != soil.sh2o[..., 0])
    sh2o1 = jnp.where(changed, sw.soil_liq1, soil.sh2o[..., 0])
    smc1 = jnp.where(changed, sw.soil_liq1 + sw.soil_ice1, soil.smc[..., 0])
    soil = SoilState(t=soil.t, smc=soil.smc.at[..., 0].set(smc1), sh2o=soil.sh2o.at[..., 0].set(sh2o1))

    # Frozen ground: dew and evaporation change layer-1 ice instead of the liquid water.
    frz_flux = jnp.where(frozen, dew_soil - evap_soil, 0.0)
    dew_liq = jnp.where(frozen, 0.0, dew_soil)
    evap_liq = jnp.where(frozen, 0.0, evap_soil)

    pond = jnp.asarray(thin_snow_melt_mm, dtype=vaporize.dtype) + sw.pond_mm
    rain_soil = jnp.where(sw.snow.n_layers == 0, rain_ground_mmps, 0.0)
    inflow = div(pond, dt) * MM_TO_M + (sw.outflow_mmps + dew_liq + rain_soil) * MM_TO_M
    forcing = SoilForcing(
        ghf_wm2=jnp.asarray(ghf_wm2, dtype=inflow.dtype),
        qinsurf_mps=inflow,
        evap_mps=evap_liq * MM_TO_M,
        etran_mps=transpiration_water_loss(transpiration_mmps, root_fac),
        frozen_ground=frozen.astype(inflow.dtype),
        frz_top_ice_flux_mmps=frz_flux,
    )
    return GroundWater(
        forcing=forcing, soil=soil, snow=sw.snow, vaporize_mmps=vaporize, condense_mmps=condense,
        evap_ground_net_mmps=vaporize - condense, sublim_snow_mmps=sublim, frost_snow_mmps=frost,
        evap_soil_mmps=evap_soil, dew_soil_mmps=dew_soil, snow_outflow_mmps=sw.outflow_mmps, pond_mm=pond,
        glacier_excess_mm=sw.glacier_excess_mm, discarded_mm=sw.discarded_mm,
    )  # fmt: skip
