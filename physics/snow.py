"""A bulk snowpack on the ground and the water boundary of the soil column (Noah-MP ``SnowWaterMain`` on its
no-snow-layer path, ``SnowfallAfterCanopyIntercept``, ``SnowpackHydrology`` and the surface bookkeeping of
``WaterMain``).

Simplification (decided for the first version): every snowpack stays BULK. Noah-MP keeps a snowpack
without layers (``NumSnowLayerNeg == 0``) only while it is thinner than 2.5 cm and otherwise builds up to
three snow layers with their own temperature, liquid water, compaction and combination/division; here the
no-layer path is used at any depth (``GroundWater.layer_would_form`` flags the steps where Noah-MP would
have created a layer: 111 of the 17,472 Bondville steps have layers). On that path

- snowfall adds its water and its depth (new-snow density) to the pack;
- sublimation takes at most the whole pack and frost adds to it; the depth follows the water at constant
  density, bounded to densities of 50..500 kg m-3;
- melt is computed by the phase change of soil layer 1 (``dam.physics.phase_change``, thin-snow branch)
  and reaches the soil surface as ponding in this step;
- rain falls through the pack to the soil surface (a pack without layers holds no liquid water);
- a pack below 1e-6 mm (or 1e-8 m) disappears (Noah-MP's thresholds; ``discarded_mm`` reports the water).

Not ported: snow layers, snowpack compaction, glacier excess flow (SWE > 5000 mm), lake points.
Units: mm (kg m-2) for water amounts, mm s-1 for rates, m s-1 for the soil-column boundary fluxes.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div, safe_divide
from .transpiration import transpiration_water_loss
from .types import SoilForcing, ThinSnow

LATENT_HEAT_VAPORIZATION = 2.5104e6  # J kg-1
LATENT_HEAT_SUBLIMATION = 2.8440e6  # J kg-1
MM_TO_M = 0.001
LAYER_DEPTH = 0.025  # m, depth at which Noah-MP creates the first snow layer (not done here)
MIN_DENSITY_FOR_DEPTH = 50.0  # kg m-3: depth <= SWE / 50 after sublimation/frost
MAX_DENSITY_FOR_DEPTH = 500.0  # kg m-3: depth >= SWE / 500
MIN_SWE = 1.0e-6  # mm, smaller packs are removed
MIN_DEPTH_HYDRO = 1.0e-8  # m, depth threshold of SnowpackHydrology
MIN_DEPTH_MAIN = 1.0e-6  # m, depth threshold at the end of SnowWaterMain


class BulkSnowStep(eqx.Module):
    """Result of :func:`snowpack_bulk`: ``swe_mm`` snow water equivalent, mm; ``depth_m`` snow depth, m;
    ``soil_ice_change_mm`` change of soil layer-1 ice when sublimation overdraws the pack (Noah-MP puts the
    deficit there; at most a rounding error of the SWE), mm per step; ``discarded_mm`` water removed by the
    1e-6 mm / depth thresholds, mm per step; ``layer_would_form`` True where Noah-MP would create a snow
    layer this step (depth after snowfall >= 2.5 cm)."""

    swe_mm: jax.Array
    depth_m: jax.Array
    soil_ice_change_mm: jax.Array
    discarded_mm: jax.Array
    layer_would_form: jax.Array


def _drop_small(swe, depth, depth_min):
    drop = (depth <= depth_min) | (swe <= MIN_SWE)
    return jnp.where(drop, 0.0, swe), jnp.where(drop, 0.0, depth), jnp.where(drop, swe, 0.0)


def snowpack_bulk(
    swe_mm: jax.Array,
    depth_m: jax.Array,
    snow_ground_mmps: jax.Array,
    snow_depth_incr_mps: jax.Array,
    sublim_mmps: jax.Array,
    frost_mmps: jax.Array,
    dt_s: float,
) -> BulkSnowStep:
    """Snowfall, sublimation and frost of a snowpack without layers (Noah-MP ``SnowfallAfterCanopyIntercept``
    and ``SnowpackHydrology`` with ``NumSnowLayerNeg == 0``, then the thresholds of ``SnowWaterMain``).

    Parameters
    ----------
    swe_mm, depth_m : pack after this step's melt, mm and m.
    snow_ground_mmps : snowfall reaching the ground, mm s-1.
    snow_depth_incr_mps : depth increase rate of that snowfall (snowfall / new-snow density), m s-1.
    sublim_mmps, frost_mmps : sublimation from and frost onto the pack, mm s-1.
    dt_s : time step, s.
    """
    dt = dt_s
    falling = snow_ground_mmps > 0.0
    depth = jnp.where(falling, depth_m + snow_depth_incr_mps * dt, depth_m)
    swe = jnp.where(falling, swe_mm + snow_ground_mmps * dt, swe_mm)
    layer_would_form = depth >= LAYER_DEPTH

    has_snow = swe > 0.0
    swe_new = swe - sublim_mmps * dt + frost_mmps * dt
    ratio = safe_divide(swe_new, swe)
    depth_new = jnp.maximum(0.0, ratio * depth)
    depth_new = jnp.minimum(
        jnp.maximum(depth_new, div(swe_new, MAX_DENSITY_FOR_DEPTH)), div(swe_new, MIN_DENSITY_FOR_DEPTH)
    )
    overdrawn = has_snow & (swe_new < 0.0)
    soil_ice_change = jnp.where(overdrawn, swe_new, 0.0)
    swe = jnp.where(has_snow, jnp.where(overdrawn, 0.0, swe_new), swe)
    depth = jnp.where(has_snow, jnp.where(overdrawn, 0.0, depth_new), depth)

    swe, depth, dropped_hydro = _drop_small(swe, depth, MIN_DEPTH_HYDRO)
    swe, depth, dropped_main = _drop_small(swe, depth, MIN_DEPTH_MAIN)
    return BulkSnowStep(
        swe_mm=swe,
        depth_m=depth,
        soil_ice_change_mm=soil_ice_change,
        discarded_mm=dropped_hydro + dropped_main,
        layer_would_form=layer_would_form,
    )


class GroundWater(eqx.Module):
    """Result of :func:`ground_water`.

    ``forcing`` the soil-column boundary of the step (:class:`dam.physics.SoilForcing`, m s-1 and mm s-1 as
    documented there); ``snow`` the pack at the end of the step (``melt_mm`` as given); ``vaporize_mmps``,
    ``condense_mmps`` positive and negative parts of the ground latent heat flux as water, mm s-1
    [VaporizeGrd, CondenseVapGrd]; ``evap_ground_net_mmps`` their difference [EvapGroundNet];
    ``sublim_snow_mmps``, ``frost_snow_mmps`` sublimation from and frost onto the pack, mm s-1;
    ``evap_soil_mmps``, ``dew_soil_mmps`` soil surface evaporation and dew before the frozen-ground transfer,
    mm s-1; ``soil_ice_change_mm``, ``discarded_mm``, ``layer_would_form`` as in :class:`BulkSnowStep`.
    """

    forcing: SoilForcing
    snow: ThinSnow
    vaporize_mmps: jax.Array
    condense_mmps: jax.Array
    evap_ground_net_mmps: jax.Array
    sublim_snow_mmps: jax.Array
    frost_snow_mmps: jax.Array
    evap_soil_mmps: jax.Array
    dew_soil_mmps: jax.Array
    soil_ice_change_mm: jax.Array
    discarded_mm: jax.Array
    layer_would_form: jax.Array


def ground_water(
    snow: ThinSnow,
    latent_heat_ground_wm2: jax.Array,
    frozen_ground: jax.Array,
    rain_ground_mmps: jax.Array,
    snow_ground_mmps: jax.Array,
    snow_depth_incr_mps: jax.Array,
    transpiration_mmps: jax.Array,
    root_fac: jax.Array,
    ghf_wm2: jax.Array,
    dt_s: float,
) -> GroundWater:
    """Ground evaporation split, bulk snowpack and the soil-column water boundary of one step (Noah-MP
    ``WaterMain`` after ``CanopyHydrology``, with ``SnowWaterMain`` on the no-layer path).

    Parameters
    ----------
    snow : the pack after this step's phase change (``melt_mm`` = Noah-MP ``PondSfcThinSnwMelt``, mm per
        step; 0 when the phase change had no snow).
    latent_heat_ground_wm2 : ground latent heat flux, + up, W m-2 [HeatLatentGrd].
    frozen_ground : True (or 1) where the ground temperature at the start of the step is <= 273.16 K
        [FlagFrozenGround of ``PsychrometricVariable``]; selects the latent heat of sublimation and sends dew
        minus evaporation to soil layer-1 ice.
    rain_ground_mmps, snow_ground_mmps, snow_depth_incr_mps : from
        :func:`dam.physics.canopy_hydrology.canopy_water_intercept`.
    transpiration_mmps : transpiration, mm s-1 (from :func:`dam.physics.canopy_hydrology.canopy_hydrology`).
    root_fac : (..., N) layer factors from :func:`dam.physics.transpiration.soil_water_transpiration`.
    ghf_wm2 : ground heat flux into the soil top, + down, W m-2 (passed through to the forcing).
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

    pack = snowpack_bulk(snow.swe_mm, snow.depth_m, snow_ground_mmps, snow_depth_incr_mps, sublim, frost, dt)

    # Frozen ground: dew and evaporation change layer-1 ice instead of the liquid water.
    frz_flux = jnp.where(frozen, dew_soil - evap_soil, 0.0)
    dew_liq = jnp.where(frozen, 0.0, dew_soil)
    evap_liq = jnp.where(frozen, 0.0, evap_soil)

    melt_mm = jnp.asarray(snow.melt_mm, dtype=pack.swe_mm.dtype)
    inflow = div(melt_mm, dt) * MM_TO_M + (dew_liq + rain_ground_mmps) * MM_TO_M
    forcing = SoilForcing(
        ghf_wm2=jnp.asarray(ghf_wm2, dtype=inflow.dtype),
        qinsurf_mps=inflow,
        evap_mps=evap_liq * MM_TO_M,
        etran_mps=transpiration_water_loss(transpiration_mmps, root_fac),
        frozen_ground=frozen.astype(inflow.dtype),
        frz_top_ice_flux_mmps=frz_flux,
    )
    return GroundWater(
        forcing=forcing,
        snow=ThinSnow(swe_mm=pack.swe_mm, depth_m=pack.depth_m, melt_mm=melt_mm),
        vaporize_mmps=vaporize,
        condense_mmps=condense,
        evap_ground_net_mmps=vaporize - condense,
        sublim_snow_mmps=sublim,
        frost_snow_mmps=frost,
        evap_soil_mmps=evap_soil,
        dew_soil_mmps=dew_soil,
        soil_ice_change_mm=pack.soil_ice_change_mm,
        discarded_mm=pack.discarded_mm,
        layer_would_form=pack.layer_would_form,
    )
