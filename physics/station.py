"""The station model: Noah-MP's surface energy and water balance over the soil column, one pure step.

Order within a step, as in Noah-MP ``NoahmpMain``: atmospheric forcing, phenology, canopy interception,
precipitation heat advection, then ``EnergyMain`` (snow cover, thermal properties, albedo and radiation,
emissivity, soil-water stress, the vegetated and bare tile energy balances, soil heat conduction and phase
change of snow layers and soil) and ``WaterMain`` (canopy hydrology, the snowpack's water step with its
layers, the soil-column water boundary, soil water). The snowpack is Noah-MP's: up to three snow layers
(:mod:`dam.physics.snow_types`), a pack without layers below 2.5 cm.

Two seams for learned components: ``transport`` moves the soil water within each water sub-step (an
:class:`~dam.physics.soil_water.AbstractTransport`, default Noah-MP's Richards solver) and ``stomata`` replaces the
stomatal resistance model (signature of :func:`dam.physics.stomata.ball_berry_canopy`). Everything else stays
physical.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div
from .albedo import RadiationOptions, RadiationParams, SnowCoverParams, snow_cover_fraction
from .atmos_forcing import AtmosOptions, AtmosParams, atmos_forcing
from .canopy_hydrology import CanopyWaterParams, canopy_hydrology, canopy_water_intercept
from .column import keep_all, scan_checkpointed
from .energy_balance import (
    SurfaceEnergyFluxes,
    SurfaceEnergyOptions,
    SurfaceEnergyState,
    SurfaceInputs,
    SurfaceParams,
    surface_energy,
)
from .ground_heat import ground_heat, ground_thermal_properties
from .guards import guard_station, step_numbers
from .phenology import PhenologyParams, phenology
from .precip_heat import precipitation_heat_advect
from .radiation import emissivity, surface_radiation
from .shapes import PerColumn
from .snow_types import SnowpackOptions, SnowpackParams, SnowState, layer_mask
from .soil_water import RICHARDS, AbstractTransport, soil_water
from .stomata import ball_berry_canopy
from .tangents import step_with_twin
from .transpiration import RootParams, TranspirationOptions, soil_water_transpiration
from .types import SoilGrid, SoilOptions, SoilParams, SoilState
from .water_main import ground_water

Observer = Callable[["StationState", "StationFluxes"], Any]


class StationForcing(eqx.Module):
    """Meteorology of one step (held constant over the step; leading time axis in a series).

    ``t_air_k`` air temperature at the reference height, K; ``q_air_kgkg`` specific humidity, kg kg-1;
    ``p_sfc_pa`` surface pressure, Pa; ``u_ms`` / ``v_ms`` eastward / northward wind, m s-1 (a wind speed goes
    in ``u_ms`` with ``v_ms`` = 0); ``sw_down_wm2`` / ``lw_down_wm2`` downward shortwave / longwave, W m-2;
    ``precip_mmps`` total precipitation, mm s-1 (kg m-2 s-1); ``cos_zenith`` cosine of the solar zenith angle
    (-, <= 0 at night); ``julian_day`` day of year - 1 + fraction of the day (phenology).
    """

    t_air_k: PerColumn
    q_air_kgkg: PerColumn
    p_sfc_pa: PerColumn
    u_ms: PerColumn
    v_ms: PerColumn
    sw_down_wm2: PerColumn
    lw_down_wm2: PerColumn
    precip_mmps: PerColumn
    cos_zenith: PerColumn
    julian_day: PerColumn


class CanopyWater(eqx.Module):
    """Intercepted water: ``liq_mm`` liquid and ``ice_mm`` frozen, mm."""

    liq_mm: jax.Array
    ice_mm: jax.Array


class StationState(eqx.Module):
    """Prognostic state: soil column, surface energy (TV, TG, TAH, EAH, CM, CH), canopy water, snowpack
    (:class:`dam.physics.snow_types.SnowState`, with its layers)."""

    soil: SoilState
    energy: SurfaceEnergyState
    canopy: CanopyWater
    snow: SnowState


class StationParams(eqx.Module):
    """Parameters by process (see each Module for names and units)."""

    soil: SoilParams
    phenology: PhenologyParams
    snow_cover: SnowCoverParams
    radiation: RadiationParams
    canopy: CanopyWaterParams
    surface: SurfaceParams
    atmos: AtmosParams
    snowpack: SnowpackParams
    roots: RootParams


class StationOptions(eqx.Module):
    """Static configuration: the process options of each part. The time step is the soil's, ``soil.dt_s``."""

    soil: SoilOptions = SoilOptions()
    radiation: RadiationOptions = RadiationOptions()
    surface: SurfaceEnergyOptions = SurfaceEnergyOptions()
    atmos: AtmosOptions = AtmosOptions()
    transpiration: TranspirationOptions = TranspirationOptions()
    snow: SnowpackOptions = SnowpackOptions()
    days_in_year: float = eqx.field(static=True, default=365.0)

    @property
    def dt_s(self) -> float:
        """The time step, s (its one home is :attr:`SoilOptions.dt_s`)."""
        return self.soil.dt_s

    @property
    def derivative_options(self) -> StationOptions | None:
        """The options of the step whose derivatives stand for this one's (:attr:`SoilOptions.derivative_options`),
        or None where the step is differentiated itself."""
        twin = self.soil.derivative_options
        return None if twin is None else dataclasses.replace(self, soil=twin)


class StationFluxes(eqx.Module):
    """Diagnostics of one step (grid means; W m-2 with SH, LH, net LW + up and G + down; water in mm s-1
    unless named per step).

    ``energy`` all surface-energy results (:class:`SurfaceEnergyFluxes`); ``sw_abs_wm2`` / ``sw_refl_wm2``
    absorbed / reflected shortwave; ``albedo`` (-, 0 without sun); ``snow_cover_frac`` (-); ``lai_eff`` /
    ``sai_eff`` (m2 m-2); ``btran`` (-); ``rain_mmps`` / ``snowfall_mmps`` at the reference height;
    ``evap_canopy_mmps`` net canopy evaporation, ``transpiration_mmps``, ``evap_ground_mmps`` net ground
    evaporation (+ up); ``runoff_surface_mm`` / ``runoff_subsurface_mm`` mm per step (the subsurface runoff
    includes SWE beyond the largest allowed); ``snowmelt_mm`` melt of the snowpack (layers and a pack without
    layers), mm per step; ``snow_outflow_mm`` liquid water out of the bottom of the snow layers, mm per step;
    ``soil_inflow_mps`` water reaching the soil surface, m s-1; ``heat_bottom_wm2`` heat flux into the column
    through its bottom (+ up); ``latent_heat_soil_wm2`` phase-change energy of soil and snow (+ melting);
    ``discarded_mm`` water Noah-MP's small-value thresholds removed, mm per step.
    """

    energy: SurfaceEnergyFluxes
    sw_abs_wm2: jax.Array
    sw_refl_wm2: jax.Array
    albedo: jax.Array
    snow_cover_frac: jax.Array
    lai_eff: jax.Array
    sai_eff: jax.Array
    btran: jax.Array
    rain_mmps: jax.Array
    snowfall_mmps: jax.Array
    evap_canopy_mmps: jax.Array
    transpiration_mmps: jax.Array
    evap_ground_mmps: jax.Array
    runoff_surface_mm: jax.Array
    runoff_subsurface_mm: jax.Array
    snowmelt_mm: jax.Array
    snow_outflow_mm: jax.Array
    soil_inflow_mps: jax.Array
    heat_bottom_wm2: jax.Array
    latent_heat_soil_wm2: jax.Array
    discarded_mm: jax.Array


def station_step(
    state: StationState,
    forcing: StationForcing,
    params: StationParams,
    grid: SoilGrid,
    options: StationOptions,
    *,
    transport: AbstractTransport = RICHARDS,
    stomata: Callable = ball_berry_canopy,
) -> tuple[StationState, StationFluxes]:
    """Advance the station column(s) by one step of ``options.dt_s`` seconds (any leading batch shape).

    With ``options.soil.derivative_pow="exp_log"`` its derivatives are those of its ``exp(y log x)`` twin
    (:mod:`dam.physics.tangents`; :func:`run_station` decides ``"auto"``)."""
    return step_with_twin(_station_step, options, state, forcing, params, grid, transport, stomata)


def _station_step(
    state: StationState,
    forcing: StationForcing,
    params: StationParams,
    grid: SoilGrid,
    transport: AbstractTransport,
    stomata: Callable,
    *,
    options: StationOptions,
) -> tuple[StationState, StationFluxes]:
    dt = options.dt_s
    grid = grid.astype(state.soil.t.dtype)
    tfrz = options.soil.const.tfrz
    prev = state.energy
    f = forcing
    zero = jnp.zeros_like(f.precip_mmps)

    air = atmos_forcing(
        f.t_air_k, f.q_air_kgkg, f.p_sfc_pa, f.u_ms, f.v_ms, f.lw_down_wm2, f.sw_down_wm2, f.cos_zenith,
        zero, f.precip_mmps, zero, params.atmos, options.atmos,
    )  # fmt: skip
    veg = phenology(f.julian_day, state.snow.depth_m, prev.t_veg, params.phenology, options.days_in_year)
    icp = canopy_water_intercept(
        state.canopy.liq_mm, state.canopy.ice_mm, air.rain, air.snow, air.precip_area_frac, air.snowfall_density,
        veg.lai_eff, veg.sai_eff, veg.veg_frac, prev.t_veg, f.u_ms, f.v_ms, params.canopy, dt,
    )  # fmt: skip
    adv = precipitation_heat_advect(
        f.t_air_k, prev.t_veg, prev.t_grd, veg.veg_frac, air.rain, air.snow, icp.drip_rain_mmps,
        icp.throughfall_rain_mmps, icp.drip_snow_mmps, icp.throughfall_snow_mmps,
    )  # fmt: skip

    fsno = snow_cover_fraction(state.snow.depth_m, state.snow.swe_mm, params.snow_cover)
    thermal = ground_thermal_properties(state.soil, state.snow, params.soil, grid, options.soil, options.snow)
    rad = surface_radiation(
        cos_zenith=f.cos_zenith, sw_down_wm2=f.sw_down_wm2, lai_eff=veg.lai_eff, sai_eff=veg.sai_eff,
        veg_frac=veg.veg_frac, snow_cover_frac=fsno, swe_mm=state.snow.swe_mm, swe_prev_mm=state.snow.swe_prev_mm,
        snow_age=state.snow.age, t_grd_k=prev.t_grd, t_canopy_k=prev.t_veg, canopy_wet_frac=icp.wet_frac,
        smc_top=state.soil.smc[..., 0], params=params.radiation, options=options.radiation, dt_s=dt,
    )  # fmt: skip
    emis = emissivity(veg.lai_eff, veg.sai_eff, veg.veg_frac, fsno, params.radiation)
    roots = soil_water_transpiration(state.soil.sh2o, params.soil, grid, params.roots, options.transpiration)
    inputs = SurfaceInputs(
        sw_abs_veg=rad.sav_wm2, sw_abs_grd=rad.sag_wm2, par_sunlit=rad.par_sunlit_wm2, par_shade=rad.par_shade_wm2,
        lai_sunlit=rad.lai_sunlit, lai_shade=rad.lai_shade, emissivity_veg=emis.canopy, emissivity_grd=emis.ground,
        lai_eff=veg.lai_eff, sai_eff=veg.sai_eff, veg_frac=veg.veg_frac, grow_season=veg.growing_season,
        btran=roots.btran, snow_cover_frac=fsno, snow_depth=state.snow.depth_m, t_top=thermal.t_top,
        k_top=thermal.k_top, dz_top=thermal.dz_top, sh2o_1=state.soil.sh2o[..., 0], canopy_liq=icp.liq_mm,
        canopy_ice=icp.ice_mm, canopy_wet_frac=icp.wet_frac, adv_canopy=adv.canopy_wm2,
        adv_veg_grd=adv.veg_ground_wm2, adv_bare_grd=adv.bare_ground_wm2,
    )  # fmt: skip
    en = surface_energy(
        air, inputs, prev, params.surface, params.soil, grid.dz[0], options.surface, dt_s=dt, stomata=stomata
    )

    can = canopy_hydrology(
        icp.liq_mm, icp.ice_mm, en.lh_canopy_evap, en.lh_transp, prev.t_veg <= tfrz, en.state.t_veg,
        veg.lai_eff, veg.sai_eff, veg.veg_frac, air.snowfall_density, params.canopy, dt,
    )  # fmt: skip
    soil, melted, heat = ground_heat(state.soil, state.snow, thermal, en.g, params.soil, grid, options.soil)
    # The water step works on the layer thicknesses of this step; it needs the start-of-step ice fractions.
    melted = eqx.tree_at(lambda s: s.dz_m, melted, thermal.snow_dz)
    water_start = state.snow.ice_mm + state.snow.liq_mm
    has_water = layer_mask(state.snow.n_layers) & (water_start > 0.0)
    ice_frac_prev = jnp.where(has_water, div(state.snow.ice_mm, jnp.where(has_water, water_start, 1.0)), 0.0)
    gw = ground_water(
        melted, heat.thin_snow_melt_mm, heat.melting, ice_frac_prev, soil, thermal.soil_dz[..., 0], en.lh_grd,
        prev.t_grd <= tfrz, icp.rain_ground_mmps, icp.snow_ground_mmps, icp.snow_depth_incr_mps,
        can.transpiration_mmps, roots.root_fac, en.g, air.t_air, air.p_air, params.snowpack, options.snow,
        options.soil.const, dt,
    )  # fmt: skip
    smc, sh2o, wf = soil_water(gw.soil.smc, gw.soil.sh2o, gw.forcing, params.soil, grid, options.soil, transport)

    new = StationState(
        soil=SoilState(t=soil.t, smc=smc, sh2o=sh2o),
        energy=eqx.tree_at(lambda s: s.t_veg, en.state, can.t_canopy_k),
        canopy=CanopyWater(liq_mm=can.liq_mm, ice_mm=can.ice_mm),
        snow=eqx.tree_at(lambda s: (s.age, s.swe_prev_mm), gw.snow, (rad.snow_age, melted.swe_mm)),
    )
    fluxes = StationFluxes(
        energy=en,
        sw_abs_wm2=rad.fsa_wm2,
        sw_refl_wm2=rad.fsr_wm2,
        albedo=rad.albedo,
        snow_cover_frac=fsno,
        lai_eff=veg.lai_eff,
        sai_eff=veg.sai_eff,
        btran=roots.btran,
        rain_mmps=air.rain,
        snowfall_mmps=air.snow,
        evap_canopy_mmps=can.evap_net_mmps,
        transpiration_mmps=can.transpiration_mmps,
        evap_ground_mmps=gw.evap_ground_net_mmps,
        runoff_surface_mm=wf.runoff_surface_mm,
        runoff_subsurface_mm=wf.runoff_subsurface_mm + gw.glacier_excess_mm,
        snowmelt_mm=heat.snow_melt_mm,
        snow_outflow_mm=gw.snow_outflow_mmps * dt,
        soil_inflow_mps=gw.forcing.qinsurf_mps,
        heat_bottom_wm2=heat.heat_bottom_wm2,
        latent_heat_soil_wm2=heat.latent_heat_wm2,
        discarded_mm=can.discarded_mm + gw.discarded_mm,
    )
    return new, fluxes


def check_finite_state(state: StationState) -> StationState:
    """Raise (also under ``jit``) when any state variable is NaN or infinite."""
    bad = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(state)]))
    return eqx.error_if(state, bad, "station state became non-finite (NaN or inf): check forcing and parameters")


def run_station(
    state0: StationState,
    forcing: StationForcing,
    params: StationParams,
    grid: SoilGrid,
    options: StationOptions,
    *,
    transport: AbstractTransport = RICHARDS,
    stomata: Callable = ball_berry_canopy,
    observe: Observer | None = keep_all,
    checkpoint_every: int | None = None,
    finite_check: bool = True,
) -> tuple[StationState, Any]:
    """Run the station over a forcing series (leading time axis) with ``lax.scan``.

    ``observe(state, fluxes)`` picks what to keep per step (default :func:`~dam.physics.column.keep_all`: the state
    and all fluxes; ``None``: nothing, the outputs are None);
    ``checkpoint_every`` rematerialises segments of that many steps in the backward pass (memory
    ~ T / checkpoint_every + checkpoint_every steps); ``finite_check`` stops the run when the state leaves
    physical bounds or becomes non-finite (:mod:`dam.physics.guards`).
    """
    observe = observe or (lambda s, fl: None)
    soil = options.soil.for_run(math.prod(state0.soil.t.shape[:-1]), checkpoint_every)
    options = dataclasses.replace(options, soil=soil)

    def step(state, xs):
        frc, i = xs
        new, fluxes = station_step(state, frc, params, grid, options, transport=transport, stomata=stomata)
        if finite_check:
            new = guard_station(new, params, i)
        return new, observe(new, fluxes)

    keep = options.derivative_options is None
    return scan_checkpointed(step, state0, (forcing, step_numbers(forcing)), checkpoint_every, keep)
