"""Surface energy balance of Noah-MP v5.2 for a soil point: ``SurfaceEnergyFluxVegetated`` (canopy and
below-canopy ground), ``SurfaceEnergyFluxBareGround`` and the tile combination of ``EnergyMain``.

Sign conventions as Noah-MP: sensible, latent and net longwave fluxes are positive upward (to the
atmosphere), the ground heat flux is positive downward (into the soil/snow). Canopy fluxes (``*_canopy``,
``lh_canopy_evap``, ``lh_transp``, ``canopy_storage``) are already multiplied by the vegetation fraction, as
in Noah-MP; below-canopy and bare-ground fluxes are per unit area of their tile.

Iterations follow Noah-MP: up to 20 canopy-temperature iterations (stopping one iteration after the change
drops to 0.01 K from the 5th on; here a fixed 20-pass loop whose passes after the stop leave the state
unchanged), 5 below-canopy ground iterations and 5 bare-ground iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from ._safe import safe_where
from .atmos_forcing import AtmosState
from .constants import (
    CP_AIR,
    DENSITY_ICE,
    DENSITY_WATER,
    EPS_Q,
    HEAT_CAPACITY_ICE,
    HEAT_CAPACITY_WATER,
    LATENT_HEAT_SUBLIMATION,
    LATENT_HEAT_VAPORIZATION,
    ONE_MINUS_EPS,
    STEFAN_BOLTZMANN,
    TFRZ,
    VON_KARMAN,
)
from .stomata import CanopyStomata, StomataInputs, StomataParams, ball_berry_canopy
from .surface_layer import (
    GroundEvaporation,
    GroundResistance,
    MostState,
    Psychrometric,
    Roughness,
    esat_and_slope,
    ground_evaporation_resistance,
    ground_roughness,
    leaf_to_ground,
    most_exchange,
    psychrometric,
)
from .types import SoilParams

MAX_AREA_INDEX = 6.0  # cap of LAI, SAI and LAI+SAI in the canopy fluxes, m2 m-2
N_CANOPY_ITERATIONS = 20
MIN_CANOPY_ITERATIONS = 5
CANOPY_CONVERGENCE = 0.01  # K
N_GROUND_ITERATIONS = 5
N_BARE_ITERATIONS = 5
SNOW_CLAMP_DEPTH = 0.05  # m: deeper snow keeps the ground at (or towards) the freezing point
MIN_CH2M = 1.0e-5  # m s-1: below it the 2 m diagnostics take the surface values
Z_2M = 2.0  # m

GroundSnowClamp = Literal["fsno_weighted", "freezing_point", "none"]

STAND_IN_CANOPY_M = 1.0  # canopy height and roughness of the vegetated tile where there is none (results discarded)
STAND_IN_Z0M_M = 0.1


class SurfaceEnergyOptions(eqx.Module):
    """Static choices: ``ground_resistance`` Noah-MP OPT_RSF (``"sz09"`` 1,
    ``"sellers92"`` 2, ``"sellers92_modified"`` 3, ``"sz09_snow"`` 4); ``ground_snow_clamp`` the ground
    temperature treatment under snow deeper than 5 cm from OPT_STC (``"fsno_weighted"`` 3: T -> (1-fsno) T +
    fsno TFRZ; ``"freezing_point"`` 1: T -> TFRZ; ``"none"`` 2: done after the soil solve in EnergyMain, not
    here). Surface drag is Monin-Obukhov (SFC=1) and stomata Ball-Berry (CRS=1) or a replacement callable."""

    ground_resistance: GroundResistance = eqx.field(static=True, default="sz09_snow")
    ground_snow_clamp: GroundSnowClamp = eqx.field(static=True, default="fsno_weighted")

    def __check_init__(self) -> None:
        if self.ground_resistance not in get_args(GroundResistance):
            raise ValueError(f"option ground_resistance={self.ground_resistance!r} is not one of "
                             f"{get_args(GroundResistance)}")  # fmt: skip
        if self.ground_snow_clamp not in get_args(GroundSnowClamp):
            raise ValueError(f"option ground_snow_clamp={self.ground_snow_clamp!r} is not one of "
                             f"{get_args(GroundSnowClamp)}")  # fmt: skip


class SurfaceParams(eqx.Module):
    """Surface parameters (Noah-MP table names in brackets; SI units).

    ``canopy_top_height`` m [HVT]; ``z0m_veg`` canopy momentum roughness, m [Z0MVT]; ``z0m_soil`` / ``z0m_snow``
    m [Z0SOIL, Z0SNO]; ``leaf_dimension`` m [DLEAF]; ``canopy_wind_ext`` canopy wind extinction parameter (-)
    [CWPVT]; ``canopy_heat_capacity_factor`` canopy biomass heat capacity parameter, m [CBIOM]; ``rsurf_exp``
    exponent of the dry-layer thickness (-) [RSURF_EXP]; ``rsurf_snow`` snow surface resistance, s m-1
    [RSURF_SNOW]; ``ref_height`` height of the forcing above the surface (or displacement), m [ZLVL];
    ``stomata`` Ball-Berry parameters.
    """

    canopy_top_height: jax.Array
    z0m_veg: jax.Array
    z0m_soil: jax.Array
    z0m_snow: jax.Array
    leaf_dimension: jax.Array
    canopy_wind_ext: jax.Array
    canopy_heat_capacity_factor: jax.Array
    rsurf_exp: jax.Array
    rsurf_snow: jax.Array
    ref_height: jax.Array
    stomata: StomataParams


class SurfaceInputs(eqx.Module):
    """Inputs of one step from the other processes (all (...,)).

    Radiation: ``sw_abs_veg`` / ``sw_abs_grd`` SW absorbed by canopy / ground (SAV, SAG; grid-mean W m-2);
    ``par_sunlit`` / ``par_shade`` PAR absorbed per sunlit / shaded leaf (W m-2, Noah-MP convention);
    ``lai_sunlit`` / ``lai_shade`` m2 m-2; ``emissivity_veg`` / ``emissivity_grd`` (-).
    Vegetation: ``lai_eff`` / ``sai_eff`` after burial by snow (m2 m-2); ``veg_frac`` (-); ``grow_season``
    (1/0); ``foliage_n`` (%); ``btran`` soil water stress factor (-).
    Snow and ground: ``snow_cover_frac`` (-); ``snow_depth`` m; ``t_top`` temperature of the top snow/soil
    layer, K; ``k_top`` its thermal conductivity (W m-1 K-1, after Noah-MP's snow blend in soil layer 1);
    ``dz_top`` its thickness, m; ``sh2o_1`` liquid water of soil layer 1, m3 m-3.
    Canopy water (after interception of this step): ``canopy_liq`` / ``canopy_ice`` mm; ``canopy_wet_frac`` (-).
    Precipitation heat advection (PrecipitationHeatAdvect; W m-2, + into the surface): ``adv_canopy`` grid
    mean, ``adv_veg_grd`` / ``adv_bare_grd`` per tile area.
    """

    sw_abs_veg: jax.Array
    sw_abs_grd: jax.Array
    par_sunlit: jax.Array
    par_shade: jax.Array
    lai_sunlit: jax.Array
    lai_shade: jax.Array
    emissivity_veg: jax.Array
    emissivity_grd: jax.Array
    lai_eff: jax.Array
    sai_eff: jax.Array
    veg_frac: jax.Array
    grow_season: jax.Array
    btran: jax.Array
    snow_cover_frac: jax.Array
    snow_depth: jax.Array
    t_top: jax.Array
    k_top: jax.Array
    dz_top: jax.Array
    sh2o_1: jax.Array
    canopy_liq: jax.Array
    canopy_ice: jax.Array
    canopy_wet_frac: jax.Array
    foliage_n: jax.Array | float = 1.0
    adv_canopy: jax.Array | float = 0.0
    adv_veg_grd: jax.Array | float = 0.0
    adv_bare_grd: jax.Array | float = 0.0


class SurfaceEnergyState(eqx.Module):
    """State carried from step to step (Noah-MP TV, TG, TAH, EAH, CM, CH).

    ``t_veg`` canopy temperature, K; ``t_grd`` grid-mean ground temperature, K; ``t_canair`` canopy air
    temperature, K; ``e_canair`` canopy air vapour pressure, Pa; ``cm`` / ``ch`` grid-mean exchange
    coefficients (``cm`` the momentum drag coefficient, dimensionless; ``ch`` the heat conductance, m s-1).
    With Monin-Obukhov drag (SFC=1) ``t_canair``, ``cm`` and ``ch`` are recomputed from scratch each step
    (their previous values do not enter the fluxes); they are carried for output and for other drag options.
    """

    t_veg: jax.Array
    t_grd: jax.Array
    t_canair: jax.Array
    e_canair: jax.Array
    cm: jax.Array
    ch: jax.Array


class VegetatedFluxes(eqx.Module):
    """Noah-MP ``SurfaceEnergyFluxVegetated`` outputs (W m-2 unless stated).

    Canopy (grid-mean, i.e. times the vegetation fraction): ``lw_net_canopy``, ``sh_canopy``,
    ``lh_canopy_evap``, ``lh_transp``, ``canopy_storage`` (HeatCanStorageChg). Below-canopy ground (per
    vegetated area): ``lw_net_grd``, ``sh_grd``, ``lh_grd``, ``g_grd`` (+ into soil). State: ``t_veg``,
    ``t_grd``, ``t_canair`` (K), ``e_canair`` (Pa), ``q_sfc`` canopy-air specific humidity (kg kg-1).
    Exchange: ``cm`` drag coefficient (-), ``ch`` above-canopy heat conductance (m s-1), ``ch_leaf`` leaf
    to canopy air (m s-1), ``ch_under`` ground to canopy air (m s-1), ``r_leaf`` (s m-1), ``fric_vel``
    (m s-1). Stomata: ``rs_sunlit`` / ``rs_shade`` (s m-1), ``psn_sunlit`` / ``psn_shade`` (umol CO2 m-2
    s-1). 2 m: ``t2m`` K, ``q2m`` kg kg-1. ``n_iterations`` canopy iterations done, ``dt_veg_last`` last
    canopy temperature change (K).
    """

    lw_net_canopy: jax.Array
    sh_canopy: jax.Array
    lh_canopy_evap: jax.Array
    lh_transp: jax.Array
    canopy_storage: jax.Array
    lw_net_grd: jax.Array
    sh_grd: jax.Array
    lh_grd: jax.Array
    g_grd: jax.Array
    t_veg: jax.Array
    t_grd: jax.Array
    t_canair: jax.Array
    e_canair: jax.Array
    q_sfc: jax.Array
    cm: jax.Array
    ch: jax.Array
    ch_leaf: jax.Array
    ch_under: jax.Array
    r_leaf: jax.Array
    fric_vel: jax.Array
    rs_sunlit: jax.Array
    rs_shade: jax.Array
    psn_sunlit: jax.Array
    psn_shade: jax.Array
    t2m: jax.Array
    q2m: jax.Array
    n_iterations: jax.Array
    dt_veg_last: jax.Array


class BareFluxes(eqx.Module):
    """Noah-MP ``SurfaceEnergyFluxBareGround`` outputs (per bare area; W m-2 unless stated): ``lw_net``,
    ``sh``, ``lh``, ``g`` (+ into soil); ``t_grd`` K; ``q_sfc`` kg kg-1; ``cm`` drag coefficient (-);
    ``ch`` heat conductance (m s-1); ``fric_vel`` m s-1; ``t2m`` K; ``q2m`` kg kg-1."""

    lw_net: jax.Array
    sh: jax.Array
    lh: jax.Array
    g: jax.Array
    t_grd: jax.Array
    q_sfc: jax.Array
    cm: jax.Array
    ch: jax.Array
    fric_vel: jax.Array
    t2m: jax.Array
    q2m: jax.Array


class SurfaceEnergyFluxes(eqx.Module):
    """Grid-mean results of ``EnergyMain``'s flux part, plus the tiles.

    Fluxes (W m-2; SH, LH, LW + up; G + down): ``sh``, ``lh`` (= ``lh_grd + lh_canopy_evap + lh_transp``),
    ``lh_grd``, ``lh_canopy_evap``, ``lh_transp``, ``g``, ``lw_net``, ``lw_emit``, ``canopy_storage``,
    ``precip_adv`` (HeatPrecipAdvSfc). Temperatures (K): ``t_grd`` (FVEG mean), ``t_sfc``, ``t_rad``, ``t2m``.
    ``q_sfc`` / ``q2m`` kg kg-1; ``emissivity`` surface emissivity (-); ``cm`` (-) / ``ch`` (m s-1) grid-mean
    exchange coefficients. Water fluxes (mm s-1 = kg m-2 s-1, + to the atmosphere), as Noah-MP's
    CanopyHydrology / WaterMain compute them from the latent heats: ``transpiration`` (ETRAN),
    ``evap_canopy_net`` (ECAN: evaporation + sublimation - dew - frost, evaporation/sublimation limited by
    the canopy water), ``evap_ground_net`` (EDIR). ``latent_heat_canopy`` / ``latent_heat_ground`` J kg-1;
    ``frozen_canopy`` / ``frozen_ground`` (1/0); ``rsurf`` s m-1; ``rh_grd`` (-). ``vegetated`` 1 where the
    vegetated tile was computed. Tiles: ``veg`` and ``bare``. ``state`` is the state for the next step.
    """

    sh: jax.Array
    lh: jax.Array
    lh_grd: jax.Array
    lh_canopy_evap: jax.Array
    lh_transp: jax.Array
    g: jax.Array
    lw_net: jax.Array
    lw_emit: jax.Array
    canopy_storage: jax.Array
    precip_adv: jax.Array
    t_grd: jax.Array
    t_sfc: jax.Array
    t_rad: jax.Array
    t2m: jax.Array
    q_sfc: jax.Array
    q2m: jax.Array
    emissivity: jax.Array
    cm: jax.Array
    ch: jax.Array
    transpiration: jax.Array
    evap_canopy_net: jax.Array
    evap_ground_net: jax.Array
    latent_heat_canopy: jax.Array
    latent_heat_ground: jax.Array
    frozen_canopy: jax.Array
    frozen_ground: jax.Array
    rsurf: jax.Array
    rh_grd: jax.Array
    vegetated: jax.Array
    veg: VegetatedFluxes
    bare: BareFluxes
    state: SurfaceEnergyState


DEFAULT_OPTIONS = SurfaceEnergyOptions()  # the Bondville options (RSF=4, STC=3)
StomataModel = Callable[[StomataInputs, StomataParams], CanopyStomata]


def _select(mask: jax.Array, new, old):
    return jax.tree.map(lambda n, o: jnp.where(mask, n, o), new, old)


class _CanopyCarry(eqx.Module):
    t_veg: jax.Array
    t_canair: jax.Array
    e_canair: jax.Array
    q_sfc: jax.Array
    most: MostState
    cm: jax.Array
    r_heat: jax.Array
    psi_h_under: jax.Array
    r_under: jax.Array
    r_leaf: jax.Array
    sh_canopy_tmp: jax.Array
    sh_ground_tmp: jax.Array
    lw: jax.Array
    sh: jax.Array
    lh_evap: jax.Array
    lh_tr: jax.Array
    storage: jax.Array
    ch_leaf: jax.Array
    dt_veg: jax.Array
    last: jax.Array
    done: jax.Array
    n_iter: jax.Array


def surface_flux_vegetated(
    air: AtmosState,
    inp: SurfaceInputs,
    prev: SurfaceEnergyState,
    rough: Roughness,
    psy: Psychrometric,
    gev: GroundEvaporation,
    params: SurfaceParams,
    options: SurfaceEnergyOptions = DEFAULT_OPTIONS,
    *,
    dt_s: float,
    stomata: StomataModel = ball_berry_canopy,
) -> VegetatedFluxes:
    """Noah-MP ``SurfaceEnergyFluxVegetated``: canopy, canopy-air and below-canopy ground temperatures and
    fluxes of the vegetated tile (Newton iterations on the canopy, then on the ground temperature).

    ``stomata`` is the stomatal model seam: Ball-Berry by default; any callable ``(StomataInputs,
    StomataParams) -> CanopyStomata`` (e.g. :class:`dam.physics.stomata.PrescribedStomata`) replaces it. It is
    evaluated once, in the first canopy iteration, as in Noah-MP. ``dt_s`` is the time step, s.
    """
    dt = dt_s
    fv = inp.veg_frac
    rho, cp = air.rho_air, CP_AIR
    t_air, e_air, lw_down = air.t_air, air.e_air, air.lw_down
    ev, eg = inp.emissivity_veg, inp.emissivity_grd
    vai = jnp.minimum(MAX_AREA_INDEX, inp.lai_eff + inp.sai_eff)
    lai_sun = jnp.minimum(MAX_AREA_INDEX, inp.lai_sunlit)
    lai_sha = jnp.minimum(MAX_AREA_INDEX, inp.lai_shade)
    gamma_c, lat_c = psy.gamma_canopy, psy.latent_heat_canopy
    t_grd0 = prev.t_grd
    esat_grd0, _ = esat_and_slope(t_grd0)

    hcan = params.canopy_top_height
    z0m, d = rough.z0m_sfc, rough.d_sfc
    z0h_can, z0h_grd = rough.z0m_sfc, rough.z0m_grd  # Noah-MP keeps z0h = z0m (Zilitinkevich factor off)
    wind_top = air.wind * jnp.log((hcan - d + z0m) / z0m) / jnp.log(rough.z_ref / z0m)

    lw_air = -ev * (1.0 + (1.0 - ev) * (1.0 - eg)) * lw_down - ev * eg * STEFAN_BOLTZMANN * t_grd0**4
    lw_can = (2.0 - ev * (1.0 - eg)) * ev * STEFAN_BOLTZMANN
    heat_cap = (
        params.canopy_heat_capacity_factor * vai * HEAT_CAPACITY_WATER
        + inp.canopy_liq * HEAT_CAPACITY_WATER / DENSITY_WATER
        + inp.canopy_ice * HEAT_CAPACITY_ICE / DENSITY_ICE
    )

    def iteration(c: _CanopyCarry, first: bool, rs_sun, rs_sha):
        mx = most_exchange(
            first, c.sh_canopy_tmp, c.most, rough.z_ref, d, z0m, z0h_can, air.wind, t_air, air.q_air, rho
        )
        ltg = leaf_to_ground(
            first, c.sh_ground_tmp, c.psi_h_under, c.t_canair, mx.state.fric_vel, vai, hcan, d,
            rough.z0m_grd, z0h_can, z0h_grd, wind_top, rho, params.canopy_wind_ext, params.leaf_dimension,
        )  # fmt: skip
        esat_c, desat_c = esat_and_slope(c.t_veg)
        if first:
            st = stomata(
                StomataInputs(
                    par_sunlit=inp.par_sunlit, par_shade=inp.par_shade, t_veg=c.t_veg, esat_veg=esat_c,
                    e_canair=c.e_canair, r_leaf=ltg.r_leaf, p_air=air.p_air, t_air=t_air, btran=inp.btran,
                    grow_season=inp.grow_season, foliage_n=jnp.asarray(inp.foliage_n, t_air.dtype), veg_frac=fv,
                ),
                params.stomata,
            )  # fmt: skip
            rs_sun, rs_sha = st.rs_sunlit, st.rs_shade
        else:
            st = None
        r_heat, r_leaf, r_under = mx.r_heat, ltg.r_leaf, ltg.r_heat_under
        # sensible heat conductances (m s-1)
        ch_abv = 1.0 / r_heat
        ch_leaf = 2.0 * vai / r_leaf
        ch_grd = 1.0 / r_under
        ch_tot = ch_abv + ch_leaf + ch_grd
        t_sh_gh = (t_air * ch_abv + t_grd0 * ch_grd) / ch_tot
        sh_frac = ch_leaf / ch_tot
        sh_coeff = (1.0 - sh_frac) * rho * cp * ch_leaf
        # latent heat conductances (m s-1)
        cl_abv = 1.0 / r_heat
        cl_evap = inp.canopy_wet_frac * vai / r_leaf
        cl_tr = (1.0 - inp.canopy_wet_frac) * (lai_sun / (r_leaf + rs_sun) + lai_sha / (r_leaf + rs_sha))
        cl_und = 1.0 / (r_under + gev.rsurf)
        cl_tot = cl_abv + cl_evap + cl_tr + cl_und
        e_lh_tot = (e_air * cl_abv + esat_grd0 * cl_und) / cl_tot
        et_frac = (cl_evap + cl_tr) / cl_tot
        lh_coeff = (1.0 - et_frac) * cl_evap * rho * cp / gamma_c
        tr_coeff = (1.0 - et_frac) * cl_tr * rho * cp / gamma_c

        t_veg = c.t_veg
        t_canair = t_sh_gh + sh_frac * t_veg
        e_canair = e_lh_tot + et_frac * esat_c
        lw = fv * (lw_air + lw_can * t_veg**4)
        sh = fv * rho * cp * ch_leaf * (t_veg - t_canair)
        lh_evap = fv * rho * cp * cl_evap * (esat_c - e_canair) / gamma_c
        lh_tr = fv * rho * cp * cl_tr * (esat_c - e_canair) / gamma_c
        water = jnp.where(t_veg > TFRZ, inp.canopy_liq, inp.canopy_ice)
        lh_evap = jnp.minimum(water * lat_c / dt, lh_evap)
        residual = inp.sw_abs_veg - lw - sh - lh_evap - lh_tr + inp.adv_canopy
        total = fv * (4.0 * lw_can * t_veg**3 + sh_coeff + (lh_coeff + tr_coeff) * desat_c + heat_cap / dt)
        dt_veg = residual / total
        lw = lw + fv * 4.0 * lw_can * t_veg**3 * dt_veg
        sh = sh + fv * sh_coeff * dt_veg
        lh_evap = lh_evap + fv * lh_coeff * desat_c * dt_veg
        lh_tr = lh_tr + fv * tr_coeff * desat_c * dt_veg
        storage = fv * heat_cap / dt * dt_veg
        t_veg = t_veg + dt_veg
        sh_canopy_tmp = rho * cp * (t_canair - t_air) / r_heat
        sh_ground_tmp = rho * cp * (t_grd0 - t_canair) / r_under
        q_sfc = (EPS_Q * e_canair) / (air.p_air - ONE_MINUS_EPS * e_canair)
        new = _CanopyCarry(
            t_veg=t_veg, t_canair=t_canair, e_canair=e_canair, q_sfc=q_sfc, most=mx.state, cm=mx.cm, r_heat=r_heat,
            psi_h_under=ltg.psi_h_under, r_under=r_under, r_leaf=r_leaf, sh_canopy_tmp=sh_canopy_tmp,
            sh_ground_tmp=sh_ground_tmp, lw=lw, sh=sh, lh_evap=lh_evap, lh_tr=lh_tr, storage=storage,
            ch_leaf=ch_leaf, dt_veg=dt_veg, last=c.last, done=c.done, n_iter=c.n_iter + 1.0,
        )  # fmt: skip
        return new, st

    zero = jnp.zeros_like(t_air)
    carry = _CanopyCarry(
        t_veg=prev.t_veg * 1.0, t_canair=prev.t_canair * 1.0, e_canair=prev.e_canair * 1.0, q_sfc=zero,
        most=MostState.initial(zero), cm=zero, r_heat=zero, psi_h_under=zero, r_under=zero, r_leaf=zero,
        sh_canopy_tmp=zero, sh_ground_tmp=zero, lw=zero, sh=zero, lh_evap=zero, lh_tr=zero, storage=zero,
        ch_leaf=zero, dt_veg=zero, last=zero, done=zero, n_iter=zero,
    )  # fmt: skip
    carry, st = iteration(carry, True, None, None)
    rs_sun, rs_sha = st.rs_sunlit, st.rs_shade

    def body(i, c: _CanopyCarry) -> _CanopyCarry:
        # Noah-MP: exit after this iteration if the previous one set LastIter; set LastIter from the 5th on.
        new, _ = iteration(c, False, rs_sun, rs_sha)
        index = i + 1.0  # Fortran iteration number
        last = jnp.where((index >= MIN_CANOPY_ITERATIONS) & (jnp.abs(new.dt_veg) <= CANOPY_CONVERGENCE), 1.0, c.last)
        new = eqx.tree_at(lambda x: (x.last, x.done), new, (last, c.last))
        return _select(c.done > 0.0, c, new)

    # iteration 1 can already set LastIter only when MIN_CANOPY_ITERATIONS <= 1 (not the case in Noah-MP)
    carry = lax.fori_loop(1, N_CANOPY_ITERATIONS, body, carry)

    t_veg, t_canair, e_canair = carry.t_veg, carry.t_canair, carry.e_canair
    r_under = carry.r_under

    # below-canopy ground: Newton iterations on the ground temperature
    lw_air_g = -eg * (1.0 - ev) * lw_down - eg * ev * STEFAN_BOLTZMANN * t_veg**4
    lw_can_g = eg * STEFAN_BOLTZMANN
    sh_coeff = rho * cp / r_under
    lh_coeff = rho * cp / (psy.gamma_ground * (r_under + gev.rsurf))
    g_coeff = 2.0 * inp.k_top / inp.dz_top
    rh = gev.rh_grd
    t_grd = t_grd0 * 1.0
    lw_g = sh_g = lh_g = g_g = esat_g = zero
    for _ in range(N_GROUND_ITERATIONS):
        esat_g, desat_g = esat_and_slope(t_grd)
        lw_g = lw_can_g * t_grd**4 + lw_air_g
        sh_g = sh_coeff * (t_grd - t_canair)
        lh_g = lh_coeff * (esat_g * rh - e_canair)
        g_g = g_coeff * (t_grd - inp.t_top)
        residual = inp.sw_abs_grd - lw_g - sh_g - lh_g - g_g + inp.adv_veg_grd
        total = 4.0 * lw_can_g * t_grd**3 + sh_coeff + lh_coeff * desat_g + g_coeff
        dtg = residual / total
        lw_g = lw_g + 4.0 * lw_can_g * t_grd**3 * dtg
        sh_g = sh_g + sh_coeff * dtg
        lh_g = lh_g + lh_coeff * desat_g * dtg
        g_g = g_g + g_coeff * dtg
        t_grd = t_grd + dtg

    if options.ground_snow_clamp != "none":
        clamp = (inp.snow_depth > SNOW_CLAMP_DEPTH) & (t_grd > TFRZ)
        if options.ground_snow_clamp == "fsno_weighted":
            t_c = (1.0 - inp.snow_cover_frac) * t_grd + inp.snow_cover_frac * TFRZ
        else:
            t_c = jnp.full_like(t_grd, TFRZ)
        lw_c = lw_can_g * t_c**4 - eg * (1.0 - ev) * lw_down - eg * ev * STEFAN_BOLTZMANN * t_veg**4
        sh_c = sh_coeff * (t_c - t_canair)
        lh_c = lh_coeff * (esat_g * rh - e_canair)  # Noah-MP keeps esat of the last iteration's start
        g_c = inp.sw_abs_grd + inp.adv_veg_grd - (lw_c + sh_c + lh_c)
        t_grd, lw_g, sh_g, lh_g, g_g = _select(clamp, (t_c, lw_c, sh_c, lh_c, g_c), (t_grd, lw_g, sh_g, lh_g, g_g))

    # 2 m diagnostics
    most = carry.most
    ch2 = most.fric_vel * VON_KARMAN / (jnp.log((Z_2M + z0h_can) / z0h_can) - most.psi_h2)
    small = ch2 < MIN_CH2M
    ch2 = safe_where(small, 1.0, ch2)
    fv_safe = safe_where(fv > 0.0, fv, 1.0)
    t2m = t_canair - (sh_g + carry.sh / fv_safe) / (rho * cp) * 1.0 / ch2
    q2m = carry.q_sfc - ((carry.lh_evap + carry.lh_tr) / fv_safe + lh_g) / (lat_c * rho) * 1.0 / ch2
    t2m = jnp.where(small, t_canair, t2m)
    q2m = jnp.where(small, carry.q_sfc, q2m)

    return VegetatedFluxes(
        lw_net_canopy=carry.lw, sh_canopy=carry.sh, lh_canopy_evap=carry.lh_evap, lh_transp=carry.lh_tr,
        canopy_storage=carry.storage, lw_net_grd=lw_g, sh_grd=sh_g, lh_grd=lh_g, g_grd=g_g, t_veg=t_veg,
        t_grd=t_grd, t_canair=t_canair, e_canair=e_canair, q_sfc=carry.q_sfc, cm=carry.cm, ch=1.0 / carry.r_heat,
        ch_leaf=carry.ch_leaf, ch_under=1.0 / r_under, r_leaf=carry.r_leaf, fric_vel=most.fric_vel,
        rs_sunlit=rs_sun, rs_shade=rs_sha, psn_sunlit=st.psn_sunlit, psn_shade=st.psn_shade, t2m=t2m, q2m=q2m,
        n_iterations=carry.n_iter, dt_veg_last=carry.dt_veg,
    )  # fmt: skip


def surface_flux_bare(
    air: AtmosState,
    inp: SurfaceInputs,
    prev: SurfaceEnergyState,
    rough: Roughness,
    psy: Psychrometric,
    gev: GroundEvaporation,
    options: SurfaceEnergyOptions = DEFAULT_OPTIONS,
) -> BareFluxes:
    """Noah-MP ``SurfaceEnergyFluxBareGround``: bare-ground temperature and fluxes (5 Newton iterations
    with the Monin-Obukhov exchange updated in each)."""
    rho, cp = air.rho_air, CP_AIR
    t_air, e_air, lw_down = air.t_air, air.e_air, air.lw_down
    eg = inp.emissivity_grd
    lw_coeff = eg * STEFAN_BOLTZMANN
    g_coeff = 2.0 * inp.k_top / inp.dz_top
    rh = gev.rh_grd
    z0 = rough.z0m_grd
    zero = jnp.zeros_like(t_air)
    most = MostState.initial(zero)
    t_grd = prev.t_grd * 1.0
    sh_tmp = zero
    lw = sh = lh = g = q_sfc = esat = cm = r_heat = zero
    sh_coeff = lh_coeff = zero
    for it in range(N_BARE_ITERATIONS):
        mx = most_exchange(it == 0, sh_tmp, most, rough.z_ref, rough.d_grd, z0, z0, air.wind, t_air, air.q_air, rho)
        most, cm, r_heat = mx.state, mx.cm, mx.r_heat
        esat, desat = esat_and_slope(t_grd)
        sh_coeff = rho * cp / r_heat
        lh_coeff = rho * cp / psy.gamma_ground / (gev.rsurf + r_heat)
        lw = lw_coeff * t_grd**4 - eg * lw_down
        sh = sh_coeff * (t_grd - t_air)
        lh = lh_coeff * (esat * rh - e_air)
        g = g_coeff * (t_grd - inp.t_top)
        residual = inp.sw_abs_grd - lw - sh - lh - g + inp.adv_bare_grd
        total = 4.0 * lw_coeff * t_grd**3 + sh_coeff + lh_coeff * desat + g_coeff
        dtg = residual / total
        lw = lw + 4.0 * lw_coeff * t_grd**3 * dtg
        sh = sh + sh_coeff * dtg
        lh = lh + lh_coeff * desat * dtg
        g = g + g_coeff * dtg
        t_grd = t_grd + dtg
        sh_tmp = sh_coeff * (t_grd - t_air)
        esat, _ = esat_and_slope(t_grd)
        q_sfc = EPS_Q * (esat * rh) / (air.p_air - ONE_MINUS_EPS * (esat * rh))

    if options.ground_snow_clamp != "none":
        clamp = (inp.snow_depth > SNOW_CLAMP_DEPTH) & (t_grd > TFRZ)
        if options.ground_snow_clamp == "fsno_weighted":
            t_c = (1.0 - inp.snow_cover_frac) * t_grd + inp.snow_cover_frac * TFRZ
        else:
            t_c = jnp.full_like(t_grd, TFRZ)
        lw_c = lw_coeff * t_c**4 - eg * lw_down
        sh_c = sh_coeff * (t_c - t_air)
        lh_c = lh_coeff * (esat * rh - e_air)  # esat of the unclamped temperature, as in Noah-MP
        g_c = inp.sw_abs_grd + inp.adv_bare_grd - (lw_c + sh_c + lh_c)
        t_grd, lw, sh, lh, g = _select(clamp, (t_c, lw_c, sh_c, lh_c, g_c), (t_grd, lw, sh, lh, g))

    ch2 = most.fric_vel * VON_KARMAN / (jnp.log((Z_2M + z0) / z0) - most.psi_h2)
    small = ch2 < MIN_CH2M
    ch2 = safe_where(small, 1.0, ch2)
    t2m = jnp.where(small, t_grd, t_grd - sh / (rho * cp) * 1.0 / ch2)
    q2m = jnp.where(small, q_sfc, q_sfc - lh / (psy.latent_heat_ground * rho) * (1.0 / ch2 + gev.rsurf))
    return BareFluxes(
        lw_net=lw, sh=sh, lh=lh, g=g, t_grd=t_grd, q_sfc=q_sfc, cm=cm, ch=1.0 / r_heat, fric_vel=most.fric_vel,
        t2m=t2m, q2m=q2m,
    )  # fmt: skip


def surface_emissivity(emissivity_veg: jax.Array, emissivity_grd: jax.Array, veg_frac: jax.Array) -> jax.Array:
    """Surface emissivity of Noah-MP ``SurfaceEmissivity`` from the canopy and ground emissivities (-)."""
    ev, eg, fv = emissivity_veg, emissivity_grd, veg_frac
    return fv * (eg * (1 - ev) + ev + ev * (1 - ev) * (1 - eg)) + (1 - fv) * eg


def canopy_water_fluxes(
    lh_canopy: jax.Array,
    lh_transp: jax.Array,
    frozen_canopy: jax.Array,
    canopy_liq: jax.Array,
    canopy_ice: jax.Array,
    dt_s: float,
) -> tuple[jax.Array, jax.Array]:
    """Transpiration and net canopy evaporation (mm s-1) as Noah-MP ``CanopyHydrology`` derives them from
    the canopy latent heats (W m-2): evaporation of liquid / sublimation of ice limited by the stored water
    (``canopy_liq`` / ``canopy_ice`` mm), dew / frost unlimited."""
    frozen = frozen_canopy > 0.0
    lat = jnp.where(frozen, LATENT_HEAT_SUBLIMATION, LATENT_HEAT_VAPORIZATION)
    transp = jnp.maximum(lh_transp / lat, 0.0)
    x = lh_canopy / lat
    gain = jnp.abs(jnp.minimum(x, 0.0))
    evap_liq = jnp.where(frozen, 0.0, jnp.minimum(canopy_liq / dt_s, jnp.maximum(x, 0.0)))
    sublim = jnp.where(frozen, jnp.minimum(canopy_ice / dt_s, jnp.maximum(x, 0.0)), 0.0)
    return transp, evap_liq + sublim - gain


def surface_energy(
    air: AtmosState,
    inp: SurfaceInputs,
    prev: SurfaceEnergyState,
    params: SurfaceParams,
    soil: SoilParams,
    soil_dz1: jax.Array | float,
    options: SurfaceEnergyOptions = DEFAULT_OPTIONS,
    *,
    dt_s: float,
    stomata: StomataModel = ball_berry_canopy,
) -> SurfaceEnergyFluxes:
    """The flux part of Noah-MP ``EnergyMain`` for a soil point: roughness, ground evaporation resistance,
    psychrometric variables, the vegetated and bare tiles, and their FVEG-weighted combination.

    ``soil`` gives layer-1 hydraulics (``smcmax``, ``smcwlt``, ``bexp``, ``psisat``; index 0 of the layer
    axis) and ``soil_dz1`` the thickness of soil layer 1 (m) for the ground evaporation resistance. The soil
    temperature solve, phase change and OPT_STC=2 adjustment that follow in EnergyMain are not part of this
    function: feed ``g`` (HeatGroundTot) to the soil column. ``dt_s`` is the time step, s.
    """
    fv = inp.veg_frac
    vai_eff = inp.lai_eff + inp.sai_eff
    vegetated = (vai_eff > 0.0) & (fv > 0.0)
    rough = ground_roughness(
        inp.snow_cover_frac, inp.snow_depth, vai_eff > 0.0, params.z0m_soil, params.z0m_snow, params.z0m_veg,
        params.canopy_top_height, params.ref_height,
    )  # fmt: skip
    gev = ground_evaporation_resistance(
        inp.sh2o_1, soil.smcmax[..., 0], soil.smcwlt[..., 0], soil.bexp[..., 0], soil.psisat[..., 0],
        jnp.asarray(soil_dz1), inp.snow_cover_frac, inp.snow_depth, prev.t_grd, params.rsurf_exp,
        params.rsurf_snow, options.ground_resistance,
    )  # fmt: skip
    psy = psychrometric(prev.t_veg, prev.t_grd, air.p_air)

    # the vegetated tile is evaluated everywhere with safe stand-ins where it does not exist, then selected
    safe_inp = eqx.tree_at(
        lambda x: (x.lai_eff, x.sai_eff, x.veg_frac),
        inp,
        (jnp.where(vegetated, inp.lai_eff, 0.0), jnp.where(vegetated, inp.sai_eff, 1.0), jnp.where(vegetated, fv, 1.0)),
    )
    # (and a stand-in canopy with its roughness: classes without one, e.g. barren land with HVT = Z0MVT = 0, would
    # put zero resistances and NaN into the discarded tile and, through the selection, into gradients)
    hvt = jnp.where(vegetated, params.canopy_top_height, STAND_IN_CANOPY_M)
    z0v = jnp.where(vegetated, params.z0m_veg, STAND_IN_Z0M_M)
    rough_veg = ground_roughness(
        inp.snow_cover_frac, inp.snow_depth, True, params.z0m_soil, params.z0m_snow, z0v, hvt, params.ref_height
    )
    safe_params = eqx.tree_at(lambda p: (p.canopy_top_height, p.z0m_veg), params, (hvt, z0v))
    veg = surface_flux_vegetated(
        air, safe_inp, prev, rough_veg, psy, gev, safe_params, options, dt_s=dt_s, stomata=stomata
    )
    bare = surface_flux_bare(air, inp, prev, rough, psy, gev, options)

    lw_net = jnp.where(vegetated, fv * veg.lw_net_grd + (1.0 - fv) * bare.lw_net + veg.lw_net_canopy, bare.lw_net)
    sh = jnp.where(vegetated, fv * veg.sh_grd + (1.0 - fv) * bare.sh + veg.sh_canopy, bare.sh)
    lh_grd = jnp.where(vegetated, fv * veg.lh_grd + (1.0 - fv) * bare.lh, bare.lh)
    g = jnp.where(vegetated, fv * veg.g_grd + (1.0 - fv) * bare.g, bare.g)
    lh_can = jnp.where(vegetated, veg.lh_canopy_evap, 0.0)
    lh_tr = jnp.where(vegetated, veg.lh_transp, 0.0)
    storage = jnp.where(vegetated, veg.canopy_storage, 0.0)
    adv = jnp.where(vegetated, fv * inp.adv_veg_grd + (1.0 - fv) * inp.adv_bare_grd + inp.adv_canopy, inp.adv_bare_grd)
    t_grd_veg = jnp.where(vegetated, veg.t_grd, bare.t_grd)
    t_grd = jnp.where(vegetated, fv * veg.t_grd + (1.0 - fv) * bare.t_grd, bare.t_grd)
    t_veg = jnp.where(vegetated, veg.t_veg, prev.t_veg)
    t_canair = jnp.where(vegetated, veg.t_canair, prev.t_canair)
    e_canair = jnp.where(vegetated, veg.e_canair, prev.e_canair)
    t2m = jnp.where(vegetated, fv * veg.t2m + (1.0 - fv) * bare.t2m, bare.t2m)
    q2m = jnp.where(vegetated, fv * veg.q2m + (1.0 - fv) * bare.q2m, bare.q2m)
    t_sfc = jnp.where(vegetated, fv * veg.t_veg + (1.0 - fv) * bare.t_grd, bare.t_grd)
    cm = jnp.where(vegetated, fv * veg.cm + (1.0 - fv) * bare.cm, bare.cm)
    ch = jnp.where(vegetated, fv * veg.ch + (1.0 - fv) * bare.ch, bare.ch)
    q_canair = e_canair * EPS_Q / (air.p_air - ONE_MINUS_EPS * e_canair)
    q_sfc = jnp.where(vegetated, fv * q_canair + (1.0 - fv) * bare.q_sfc, bare.q_sfc)

    emissivity = surface_emissivity(inp.emissivity_veg, inp.emissivity_grd, fv)
    lw_emit = air.lw_down + lw_net
    t_rad = ((lw_emit - (1.0 - emissivity) * air.lw_down) / (emissivity * STEFAN_BOLTZMANN)) ** 0.25

    transp, evap_can = canopy_water_fluxes(lh_can, lh_tr, psy.frozen_canopy, inp.canopy_liq, inp.canopy_ice, dt_s)
    x = lh_grd / psy.latent_heat_ground
    evap_grd = jnp.maximum(x, 0.0) - jnp.abs(jnp.minimum(x, 0.0))

    veg_out = eqx.tree_at(
        lambda v: (v.t_grd, v.rs_sunlit, v.rs_shade),
        veg,
        (t_grd_veg, jnp.where(vegetated, veg.rs_sunlit, 0.0), jnp.where(vegetated, veg.rs_shade, 0.0)),
    )
    state = SurfaceEnergyState(t_veg=t_veg, t_grd=t_grd, t_canair=t_canair, e_canair=e_canair, cm=cm, ch=ch)
    return SurfaceEnergyFluxes(
        sh=sh, lh=lh_grd + lh_can + lh_tr, lh_grd=lh_grd, lh_canopy_evap=lh_can, lh_transp=lh_tr, g=g,
        lw_net=lw_net, lw_emit=lw_emit, canopy_storage=storage, precip_adv=adv, t_grd=t_grd, t_sfc=t_sfc,
        t_rad=t_rad, t2m=t2m, q_sfc=q_sfc, q2m=q2m, emissivity=emissivity, cm=cm, ch=ch, transpiration=transp,
        evap_canopy_net=evap_can, evap_ground_net=evap_grd, latent_heat_canopy=psy.latent_heat_canopy,
        latent_heat_ground=psy.latent_heat_ground, frozen_canopy=psy.frozen_canopy,
        frozen_ground=psy.frozen_ground, rsurf=gev.rsurf, rh_grd=gev.rh_grd,
        vegetated=jnp.where(vegetated, 1.0, 0.0), veg=veg_out, bare=bare, state=state,
    )  # fmt: skip


__all__ = [
    "BareFluxes",
    "SurfaceEnergyFluxes",
    "SurfaceEnergyOptions",
    "SurfaceEnergyState",
    "SurfaceInputs",
    "SurfaceParams",
    "VegetatedFluxes",
    "canopy_water_fluxes",
    "surface_emissivity",
    "surface_energy",
    "surface_flux_bare",
    "surface_flux_vegetated",
]
