"""Water on the canopy: interception of rain and snow, drip and throughfall, evaporation, dew, sublimation,
frost, and melting/freezing of the intercepted water (Noah-MP ``CanopyWaterIntercept`` and
``CanopyHydrology``).

In a Noah-MP step :func:`canopy_water_intercept` runs before the energy balance (it uses the canopy
temperature of the previous step and gives the wetted fraction the energy balance sees) and
:func:`canopy_hydrology` runs after it, at the start of ``WaterMain``, with the canopy latent heat fluxes
and the new canopy temperature.

Units: water amounts in mm (kg m-2), rates in mm s-1 (kg m-2 s-1), temperatures in K. Every function is
elementwise over any leading batch shape.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div, safe_divide, safe_where
from .constants import (
    DENSITY_ICE,
    DENSITY_WATER,
    HEAT_CAPACITY_ICE,
    HEAT_CAPACITY_WATER,
    LATENT_HEAT_FUSION,
    LATENT_HEAT_SUBLIMATION,
    LATENT_HEAT_VAPORIZATION,
    TFRZ,
)

# Constants of Noah-MP v5.2 (ConstantDefineMod and the literals of the two routines), float64 literals.
SNOW_HOLD_COEFF = 6.6  # snow interception capacity: 6.6 (0.27 + 46 / rho_snowfall) per unit LAI+SAI, mm
SNOW_HOLD_OFFSET = 0.27
SNOW_HOLD_DENSITY = 46.0  # kg m-3
UNLOAD_TEMPERATURE_REF = 270.15  # K, temperature unloading starts (Roesch et al. 2001)
UNLOAD_TEMPERATURE_SCALE = 1.87e5  # K s, temperature unloading time scale
UNLOAD_WIND_SCALE = 1.56e5  # m, wind unloading length scale
MIN_CAPACITY = 1.0e-6  # floor of the capacity in the wetted fraction, mm
WET_FRACTION_EXPONENT = 0.667
MIN_WATER = 1.0e-6  # canopy liquid or ice at or below this is removed, mm


class CanopyWaterParams(eqx.Module):
    """Canopy water parameter (Noah-MP ``CanopyLiqHoldCap``, table CH2OP): ``liq_hold_cap_mm`` maximum
    intercepted liquid water per unit leaf+stem area index, mm."""

    liq_hold_cap_mm: jax.Array


class CanopyIntercept(eqx.Module):
    """State and fluxes after interception (``CanopyWaterIntercept``).

    ``liq_mm``, ``ice_mm`` intercepted liquid and ice after interception and drip, mm; ``wet_frac`` wetted
    fraction of the canopy (-), the value the energy balance uses; ``liq_max_mm``, ``ice_max_mm`` canopy
    capacities for rain and snow, mm; ``intercept_rain_mmps``, ``drip_rain_mmps``, ``throughfall_rain_mmps``,
    ``intercept_snow_mmps``, ``drip_snow_mmps`` (non-intercepted snow over the vegetated part plus unloading),
    ``throughfall_snow_mmps``, mm s-1; ``rain_ground_mmps``, ``snow_ground_mmps`` rain and snow reaching
    the ground, mm s-1; ``snow_depth_incr_mps`` snow depth increase rate from snowfall, m s-1.
    """

    liq_mm: jax.Array
    ice_mm: jax.Array
    wet_frac: jax.Array
    liq_max_mm: jax.Array
    ice_max_mm: jax.Array
    intercept_rain_mmps: jax.Array
    drip_rain_mmps: jax.Array
    throughfall_rain_mmps: jax.Array
    intercept_snow_mmps: jax.Array
    drip_snow_mmps: jax.Array
    throughfall_snow_mmps: jax.Array
    rain_ground_mmps: jax.Array
    snow_ground_mmps: jax.Array
    snow_depth_incr_mps: jax.Array


class CanopyHydrologyOut(eqx.Module):
    """State and fluxes after ``CanopyHydrology``.

    ``liq_mm``, ``ice_mm`` canopy liquid and ice at the end of the step, mm; ``wet_frac`` wetted fraction
    (-); ``t_canopy_k`` canopy temperature after the latent heat of canopy melt/freeze, K;
    ``transpiration_mmps`` transpiration (>= 0), mm s-1; ``evap_net_mmps`` net canopy evaporation
    (evaporation + sublimation - dew - frost), mm s-1; ``evap_liq_mmps``, ``dew_liq_mmps``,
    ``sublim_ice_mmps``, ``frost_ice_mmps``, ``melt_ice_mmps``, ``freeze_liq_mmps`` the component rates,
    mm s-1; ``discarded_mm`` water removed by Noah-MP's 1e-6 mm thresholds (not a flux of the model; kept so
    that the canopy balance closes exactly), mm per step.
    """

    liq_mm: jax.Array
    ice_mm: jax.Array
    wet_frac: jax.Array
    t_canopy_k: jax.Array
    transpiration_mmps: jax.Array
    evap_net_mmps: jax.Array
    evap_liq_mmps: jax.Array
    dew_liq_mmps: jax.Array
    sublim_ice_mmps: jax.Array
    frost_ice_mmps: jax.Array
    melt_ice_mmps: jax.Array
    freeze_liq_mmps: jax.Array
    discarded_mm: jax.Array


def _liq_capacity(veg_frac, vai, params: CanopyWaterParams):
    return veg_frac * params.liq_hold_cap_mm * vai


def _ice_capacity(veg_frac, vai, snowfall_density):
    return veg_frac * SNOW_HOLD_COEFF * (SNOW_HOLD_OFFSET + div(SNOW_HOLD_DENSITY, snowfall_density)) * vai


def _wet_fraction(storage_mm: jax.Array, capacity_mm: jax.Array) -> jax.Array:
    """min(storage / max(capacity, 1e-6), 1) ** 0.667 with a finite derivative at zero storage."""
    ratio = jnp.minimum(div(jnp.maximum(0.0, storage_mm), jnp.maximum(capacity_mm, MIN_CAPACITY)), 1.0)
    wet = ratio > 0.0
    return jnp.where(wet, jnp.power(safe_where(wet, ratio, 1.0), WET_FRACTION_EXPONENT), 0.0)


def _loading(rate, area_frac, veg_frac, storage, capacity, dt):
    """Interception (loading) rate: the vegetated share of the precipitation over the raining area, limited by
    the room left on the canopy and an exponential filling law, mm s-1."""
    potential = veg_frac * rate * area_frac
    fill = 1.0 - jnp.exp(-safe_divide(rate * dt, capacity))
    return jnp.maximum(jnp.minimum(potential, div(capacity - storage, dt) * fill), 0.0)


def canopy_water_intercept(
    liq_mm: jax.Array,
    ice_mm: jax.Array,
    rain_mmps: jax.Array,
    snow_mmps: jax.Array,
    precip_area_frac: jax.Array,
    snowfall_density: jax.Array,
    lai_eff: jax.Array,
    sai_eff: jax.Array,
    veg_frac: jax.Array,
    t_canopy_k: jax.Array,
    wind_u_ms: jax.Array,
    wind_v_ms: jax.Array,
    params: CanopyWaterParams,
    dt_s: float,
) -> CanopyIntercept:
    """Interception of rain and snow by the canopy, drip, unloading and throughfall (Noah-MP
    ``CanopyWaterIntercept``, land points).

    Parameters
    ----------
    liq_mm, ice_mm : canopy liquid and ice at the start of the step, mm.
    rain_mmps, snow_mmps : rain and snowfall at the reference height, mm s-1.
    precip_area_frac : fraction of the grid cell receiving precipitation (-).
    snowfall_density : bulk density of the falling snow, kg m-3.
    lai_eff, sai_eff : leaf and stem area index after burial by snow, m2 m-2.
    veg_frac : vegetation fraction (-).
    t_canopy_k : canopy temperature at the start of the step, K (drives unloading).
    wind_u_ms, wind_v_ms : wind components at the reference height, m s-1.
    dt_s : time step, s.
    """
    vai = lai_eff + sai_eff
    veg = vai > 0.0
    dt = dt_s

    # Rain: the capacity fills exponentially; the rest of the vegetated share drips; a buried canopy drops all.
    liq_max = _liq_capacity(veg_frac, vai, params)
    int_rain = _loading(rain_mmps, precip_area_frac, veg_frac, liq_mm, liq_max, dt)
    drip_rain_veg = veg_frac * rain_mmps - int_rain
    drip_rain_buried = jnp.where(liq_mm > 0.0, div(liq_mm, dt), 0.0)
    int_rain = jnp.where(veg, int_rain, 0.0)
    drip_rain = jnp.where(veg, drip_rain_veg, drip_rain_buried)
    through_rain = jnp.where(veg, (1.0 - veg_frac) * rain_mmps, rain_mmps)
    liq = jnp.where(veg, jnp.maximum(0.0, liq_mm + int_rain * dt), jnp.where(liq_mm > 0.0, 0.0, liq_mm))

    # Snow: same loading law, plus unloading by warmth and wind (limited to what the canopy holds).
    ice_max = _ice_capacity(veg_frac, vai, snowfall_density)
    int_snow = _loading(snow_mmps, precip_area_frac, veg_frac, ice_mm, ice_max, dt)
    unload_t = jnp.maximum(0.0, div(t_canopy_k - UNLOAD_TEMPERATURE_REF, UNLOAD_TEMPERATURE_SCALE))
    wind2 = wind_u_ms * wind_u_ms + wind_v_ms * wind_v_ms
    windy = wind2 > 0.0
    wind = jnp.where(windy, jnp.sqrt(safe_where(windy, wind2, 1.0)), 0.0)
    unload_w = div(wind, UNLOAD_WIND_SCALE)
    unload = jnp.maximum(0.0, ice_mm) * (unload_w + unload_t)
    unload = jnp.minimum(div(ice_mm, dt) + int_snow, unload)
    drip_snow_veg = (veg_frac * snow_mmps - int_snow) + unload
    drip_snow_buried = jnp.where(ice_mm > 0.0, div(ice_mm, dt), 0.0)
    int_snow = jnp.where(veg, int_snow, 0.0)
    drip_snow = jnp.where(veg, drip_snow_veg, drip_snow_buried)
    through_snow = jnp.where(veg, (1.0 - veg_frac) * snow_mmps, snow_mmps)
    ice = jnp.where(veg, jnp.maximum(0.0, ice_mm + (int_snow - unload) * dt), jnp.where(ice_mm > 0.0, 0.0, ice_mm))

    wet_frac = jnp.where(ice > 0.0, _wet_fraction(ice, ice_max), _wet_fraction(liq, liq_max))
    rain_ground = drip_rain + through_rain
    snow_ground = drip_snow + through_snow
    return CanopyIntercept(
        liq_mm=liq,
        ice_mm=ice,
        wet_frac=wet_frac,
        liq_max_mm=liq_max,
        ice_max_mm=ice_max,
        intercept_rain_mmps=int_rain,
        drip_rain_mmps=drip_rain,
        throughfall_rain_mmps=through_rain,
        intercept_snow_mmps=int_snow,
        drip_snow_mmps=drip_snow,
        throughfall_snow_mmps=through_snow,
        rain_ground_mmps=rain_ground,
        snow_ground_mmps=snow_ground,
        snow_depth_incr_mps=div(snow_ground, snowfall_density),
    )


def canopy_hydrology(
    liq_mm: jax.Array,
    ice_mm: jax.Array,
    latent_heat_canopy_wm2: jax.Array,
    latent_heat_transp_wm2: jax.Array,
    frozen_canopy: jax.Array,
    t_canopy_k: jax.Array,
    lai_eff: jax.Array,
    sai_eff: jax.Array,
    veg_frac: jax.Array,
    snowfall_density: jax.Array,
    params: CanopyWaterParams,
    dt_s: float,
) -> CanopyHydrologyOut:
    """Canopy evaporation, dew, sublimation and frost limited by the water held, then melting or freezing of
    the canopy water with the canopy temperature (Noah-MP ``CanopyHydrology``).

    Parameters
    ----------
    liq_mm, ice_mm : canopy liquid and ice after interception (:func:`canopy_water_intercept`), mm.
    latent_heat_canopy_wm2 : canopy evaporation latent heat flux, + up, W m-2 (HeatLatentCanopy).
    latent_heat_transp_wm2 : transpiration latent heat flux, + up, W m-2 (HeatLatentTransp).
    frozen_canopy : True (or 1) where the canopy was at or below freezing when the energy balance chose the
        latent heat (Noah-MP ``PsychrometricVariable``: canopy temperature at the start of the step
        <= 273.16 K); the fluxes are then sublimation/frost at the latent heat of sublimation.
    t_canopy_k : canopy temperature from the energy balance of this step, K.
    lai_eff, sai_eff, veg_frac, snowfall_density : as in :func:`canopy_water_intercept`.
    """
    dt = dt_s
    frozen = jnp.asarray(frozen_canopy) > 0
    vai = lai_eff + sai_eff
    latent = jnp.where(frozen, LATENT_HEAT_SUBLIMATION, LATENT_HEAT_VAPORIZATION)
    transp = jnp.maximum(div(latent_heat_transp_wm2, latent), 0.0)
    canopy_flux = div(latent_heat_canopy_wm2, latent)
    evap_liq = jnp.where(frozen, 0.0, jnp.maximum(canopy_flux, 0.0))
    dew_liq = jnp.where(frozen, 0.0, jnp.abs(jnp.minimum(canopy_flux, 0.0)))
    sublim_ice = jnp.where(frozen, jnp.maximum(canopy_flux, 0.0), 0.0)
    frost_ice = jnp.where(frozen, jnp.abs(jnp.minimum(canopy_flux, 0.0)), 0.0)

    liq_max = _liq_capacity(veg_frac, vai, params)
    evap_liq = jnp.minimum(div(liq_mm, dt), evap_liq)
    liq = jnp.maximum(0.0, liq_mm + (dew_liq - evap_liq) * dt)
    small_liq = liq <= MIN_WATER
    discarded = jnp.where(small_liq, liq, 0.0)
    liq = jnp.where(small_liq, 0.0, liq)

    ice_max = _ice_capacity(veg_frac, vai, snowfall_density)
    sublim_ice = jnp.minimum(div(ice_mm, dt), sublim_ice)
    ice = jnp.maximum(0.0, ice_mm + (frost_ice - sublim_ice) * dt)
    small_ice = ice <= MIN_WATER
    discarded = discarded + jnp.where(small_ice, ice, 0.0)
    ice = jnp.where(small_ice, 0.0, ice)

    ice_wet = (ice > 0.0) & (ice >= liq)
    wet_frac = jnp.where(ice_wet, _wet_fraction(ice, ice_max), _wet_fraction(liq, liq_max))
    total = liq + ice

    # Melting: the sensible heat above freezing of the intercepted ice (as ice heat capacity) melts it.
    melting = (ice > MIN_WATER) & (t_canopy_k > TFRZ)
    melt_energy = div(div((t_canopy_k - TFRZ) * HEAT_CAPACITY_ICE * ice, DENSITY_ICE), dt * LATENT_HEAT_FUSION)
    melt = jnp.where(melting, jnp.minimum(div(ice, dt), melt_energy), 0.0)
    ice = jnp.where(melting, jnp.maximum(0.0, ice - melt * dt), ice)
    liq = jnp.where(melting, jnp.maximum(0.0, total - ice), liq)
    t_canopy = jnp.where(melting, wet_frac * TFRZ + (1.0 - wet_frac) * t_canopy_k, t_canopy_k)

    # Freezing, with the canopy temperature after any melt.
    freezing = (liq > MIN_WATER) & (t_canopy < TFRZ)
    freeze_energy = div(div((TFRZ - t_canopy) * HEAT_CAPACITY_WATER * liq, DENSITY_WATER), dt * LATENT_HEAT_FUSION)
    freeze = jnp.where(freezing, jnp.minimum(div(liq, dt), freeze_energy), 0.0)
    liq = jnp.where(freezing, jnp.maximum(0.0, liq - freeze * dt), liq)
    ice = jnp.where(freezing, jnp.maximum(0.0, total - liq), ice)
    t_canopy = jnp.where(freezing, wet_frac * TFRZ + (1.0 - wet_frac) * t_canopy, t_canopy)

    evap_net = evap_liq + sublim_ice - dew_liq - frost_ice
    return CanopyHydrologyOut(
        liq_mm=liq,
        ice_mm=ice,
        wet_frac=wet_frac,
        t_canopy_k=t_canopy,
        transpiration_mmps=transp,
        evap_net_mmps=evap_net,
        evap_liq_mmps=evap_liq,
        dew_liq_mmps=dew_liq,
        sublim_ice_mmps=sublim_ice,
        frost_ice_mmps=frost_ice,
        melt_ice_mmps=melt,
        freeze_liq_mmps=freeze,
        discarded_mm=discarded,
    )
