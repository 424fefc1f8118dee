"""Surface-layer turbulence and ground-air humidity of Noah-MP v5.2: ``GroundRoughnessProperty``,
``PsychrometricVariable``, ``VaporPressureSaturation``, ``HumiditySaturation``,
``ResistanceGroundEvaporation`` (RSF 1-4), ``ResistanceAboveCanopyMOST`` / ``ResistanceBareGroundMOST``
(Monin-Obukhov, SFC=1; one function for both tiles) and ``ResistanceLeafToGround``.

All functions are elementwise over any leading batch shape; units are SI (resistances s m-1, conductances
m s-1, pressures Pa, temperatures K).
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import safe_where
from .constants import (
    CP_AIR,
    EPS_Q,
    GRAV,
    LATENT_HEAT_SUBLIMATION,
    LATENT_HEAT_VAPORIZATION,
    R_VAPOR,
    TFRZ,
    VON_KARMAN,
    ZERO_CELSIUS,
)

# Noah-MP ConstantDefineMod (float64 literals, as the reference build uses them).
# Numerical guards and fixed coefficients of the Noah-MP routines.
MPE = 1.0e-6  # guard against division by zero
HALF_PI_NOAHMP = 1.5707963  # pi/2 as written in the MOST routines
DISPLACEMENT_FRACTION = 0.65  # zero-plane displacement / canopy top height
MIN_RESISTANCE = 1.0  # lower bound of the aerodynamic resistances, s m-1
T_CELSIUS_LIMIT = 50.0  # |T - TFRZ| limit of the saturation polynomials, K
# ResistanceGroundEvaporation (Sakaguchi & Zeng 2009; Noah-MP writes e as 2.71828).
E_NOAHMP = 2.71828
VAPOR_DIFFUSIVITY = 2.2e-5  # m2 s-1
MIN_RSURF = 0.001  # s m-1
DRY_SURFACE_RSURF = 1.0e6  # s m-1, surface layer (almost) dry and no snow
DRY_SURFACE_SH2O = 0.01  # m3 m-3
MIN_SH2O_PSI = 0.01  # m3 m-3
# Flesch-type saturation vapour pressure polynomials (hPa, T in deg C), VaporPressureSaturationMod.
_ESAT_WATER = (6.107799961, 4.436518521e-01, 1.428945805e-02, 2.650648471e-04, 3.031240396e-06, 2.034080948e-08,
               6.136820929e-11)  # fmt: skip
_ESAT_ICE = (6.109177956, 5.034698970e-01, 1.886013408e-02, 4.176223716e-04, 5.824720280e-06, 4.838803174e-08,
             1.838826904e-10)  # fmt: skip
_DESAT_WATER = (4.438099984e-01, 2.857002636e-02, 7.938054040e-04, 1.215215065e-05, 1.036561403e-07,
                3.532421810e-10, -7.090244804e-13)  # fmt: skip
_DESAT_ICE = (5.030305237e-01, 3.773255020e-02, 1.267995369e-03, 2.477563108e-05, 3.005693132e-07, 2.158542548e-09,
              7.131097725e-12)  # fmt: skip

GroundResistance = Literal["sz09", "sellers92", "sellers92_modified", "sz09_snow"]


class SaturationVapor(eqx.Module):
    """Saturation vapour pressure over water/ice (Pa) and its temperature derivative (Pa K-1)."""

    esat_water: jax.Array
    esat_ice: jax.Array
    desat_water: jax.Array
    desat_ice: jax.Array


def _horner(c: tuple[float, ...], t: jax.Array) -> jax.Array:
    return 100.0 * (c[0] + t * (c[1] + t * (c[2] + t * (c[3] + t * (c[4] + t * (c[5] + t * c[6]))))))


def vapor_pressure_saturation(t_celsius: jax.Array) -> SaturationVapor:
    """Noah-MP ``VaporPressureSaturation``: 6th-order polynomials in ``t_celsius`` (deg C)."""
    return SaturationVapor(
        esat_water=_horner(_ESAT_WATER, t_celsius),
        esat_ice=_horner(_ESAT_ICE, t_celsius),
        desat_water=_horner(_DESAT_WATER, t_celsius),
        desat_ice=_horner(_DESAT_ICE, t_celsius),
    )


def esat_and_slope(t_k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Saturation vapour pressure (Pa) and slope (Pa K-1) at ``t_k`` as the flux routines select them:
    over water above TFRZ, over ice otherwise, with T - TFRZ clipped to +-50 K."""
    tc = jnp.minimum(T_CELSIUS_LIMIT, jnp.maximum(-T_CELSIUS_LIMIT, t_k - TFRZ))
    sv = vapor_pressure_saturation(tc)
    warm = tc > 0.0
    return jnp.where(warm, sv.esat_water, sv.esat_ice), jnp.where(warm, sv.desat_water, sv.desat_ice)


class HumiditySat(eqx.Module):
    """Saturation mixing ratio (kg kg-1) and its derivative with temperature as Noah-MP returns it."""

    q_sat: jax.Array
    dq_sat_dt: jax.Array


def humidity_saturation(t_air: jax.Array, p_air: jax.Array) -> HumiditySat:
    """Noah-MP ``HumiditySaturation`` (Clausius-Clapeyron form; used by the glacier/urban paths)."""
    t0, lv, rv, e0 = ZERO_CELSIUS, 2.501e6, 461.0, 0.611  # the routine's own coefficients
    c3 = 17.67 * (t0 - 29.65)
    esat = e0 * jnp.exp(lv / rv * (1.0 / t0 - 1.0 / t_air))
    q = EPS_Q * esat / (p_air * 1.0e-3 - esat) * 1.0e3
    dq = (q / (1 + q)) * c3 / (t_air - 29.65) ** 2
    return HumiditySat(q_sat=q / 1.0e3, dq_sat_dt=dq)


class Psychrometric(eqx.Module):
    """Noah-MP ``PsychrometricVariable``: latent heat (J kg-1) and psychrometric constant (Pa K-1) of the
    canopy and the ground, and the frozen flags (1.0 frozen, 0.0 not) that select sublimation."""

    latent_heat_canopy: jax.Array
    gamma_canopy: jax.Array
    frozen_canopy: jax.Array
    latent_heat_ground: jax.Array
    gamma_ground: jax.Array
    frozen_ground: jax.Array


def psychrometric(t_veg: jax.Array, t_grd: jax.Array, p_air: jax.Array) -> Psychrometric:
    """Latent heats and psychrometric constants from the start-of-step canopy and ground temperatures."""
    warm_c = t_veg > TFRZ
    warm_g = t_grd > TFRZ
    lc = jnp.where(warm_c, LATENT_HEAT_VAPORIZATION, LATENT_HEAT_SUBLIMATION)
    lg = jnp.where(warm_g, LATENT_HEAT_VAPORIZATION, LATENT_HEAT_SUBLIMATION)
    return Psychrometric(
        latent_heat_canopy=lc,
        gamma_canopy=CP_AIR * p_air / (EPS_Q * lc),
        frozen_canopy=jnp.where(warm_c, 0.0, 1.0),
        latent_heat_ground=lg,
        gamma_ground=CP_AIR * p_air / (EPS_Q * lg),
        frozen_ground=jnp.where(warm_g, 0.0, 1.0),
    )


class Roughness(eqx.Module):
    """Noah-MP ``GroundRoughnessProperty`` (soil surface type): ``z0m_grd``/``d_grd`` ground momentum
    roughness and displacement (m; the displacement is the snow depth), ``z0m_sfc``/``d_sfc`` those of the
    surface (canopy when vegetated), ``z_ref`` reference height above the ground, m."""

    z0m_grd: jax.Array
    d_grd: jax.Array
    z0m_sfc: jax.Array
    d_sfc: jax.Array
    z_ref: jax.Array


def ground_roughness(
    snow_cover_frac: jax.Array,
    snow_depth: jax.Array,
    vegetated: jax.Array,
    z0m_soil: jax.Array,
    z0m_snow: jax.Array,
    z0m_veg: jax.Array,
    canopy_top_height: jax.Array,
    ref_height: jax.Array,
) -> Roughness:
    """Roughness lengths and heights (m); ``vegetated`` is Noah-MP's FlagVegSfc (LAI+SAI effective > 0)."""
    z0m_grd = z0m_soil * (1.0 - snow_cover_frac) + snow_cover_frac * z0m_snow
    d_grd = snow_depth
    d_veg = DISPLACEMENT_FRACTION * canopy_top_height
    d_veg = jnp.where(snow_depth > d_veg, snow_depth, d_veg)
    z0m_sfc = jnp.where(vegetated, z0m_veg, z0m_grd)
    d_sfc = jnp.where(vegetated, d_veg, d_grd)
    z_ref = d_sfc + ref_height
    z_ref = jnp.where(d_grd >= z_ref, d_grd + ref_height, z_ref)
    return Roughness(z0m_grd=z0m_grd, d_grd=d_grd, z0m_sfc=z0m_sfc, d_sfc=d_sfc, z_ref=z_ref)


class GroundEvaporation(eqx.Module):
    """``rsurf`` soil/snow surface resistance to evaporation, s m-1; ``rh_grd`` relative humidity of the
    air in the surface soil/snow pores (-)."""

    rsurf: jax.Array
    rh_grd: jax.Array


def ground_evaporation_resistance(
    sh2o_1: jax.Array,
    smcmax_1: jax.Array,
    smcwlt_1: jax.Array,
    bexp_1: jax.Array,
    psisat_1: jax.Array,
    dz_1: jax.Array,
    snow_cover_frac: jax.Array,
    snow_depth: jax.Array,
    t_grd: jax.Array,
    rsurf_exp: jax.Array,
    rsurf_snow: jax.Array,
    option: GroundResistance = "sz09_snow",
) -> GroundEvaporation:
    """Noah-MP ``ResistanceGroundEvaporation`` for a soil point.

    ``option``: ``"sz09"`` (RSF=1, Sakaguchi & Zeng 2009), ``"sellers92"`` (2), ``"sellers92_modified"`` (3),
    ``"sz09_snow"`` (4: SZ09 in parallel with the snow surface resistance ``rsurf_snow``). ``dz_1`` is the
    thickness of soil layer 1 (m), ``psisat_1`` the saturated matric potential magnitude (m), ``t_grd`` the
    start-of-step ground temperature (K).
    """
    ratio = sh2o_1 / smcmax_1
    if option in ("sz09", "sz09_snow"):
        base = 1.0 - jnp.minimum(1.0, ratio)
        pos = base > 0.0
        powered = jnp.where(pos, jnp.power(safe_where(pos, base, 1.0), rsurf_exp), 0.0)
        dry_thickness = dz_1 * (jnp.exp(powered) - 1.0) / (E_NOAHMP - 1.0)
        diffusivity = VAPOR_DIFFUSIVITY * smcmax_1 * smcmax_1 * (1.0 - smcwlt_1 / smcmax_1) ** (2.0 + 3.0 / bexp_1)
        rsurf = dry_thickness / diffusivity
    else:
        evap_fac = jnp.maximum(0.0, ratio)
        slope = 4.225 if option == "sellers92" else 6.0
        rsurf = snow_cover_frac * 1.0 + (1.0 - snow_cover_frac) * jnp.exp(8.25 - slope * evap_fac)
    if option == "sz09_snow":
        rsurf = 1.0 / (
            snow_cover_frac * (1.0 / rsurf_snow) + (1.0 - snow_cover_frac) * (1.0 / jnp.maximum(rsurf, MIN_RSURF))
        )
    rsurf = jnp.where((sh2o_1 < DRY_SURFACE_SH2O) & (snow_depth == 0.0), DRY_SURFACE_RSURF, rsurf)
    psi = -psisat_1 * (jnp.maximum(MIN_SH2O_PSI, sh2o_1) / smcmax_1) ** (-bexp_1)
    rh = snow_cover_frac + (1.0 - snow_cover_frac) * jnp.exp(psi * GRAV / (R_VAPOR * t_grd))
    return GroundEvaporation(rsurf=rsurf, rh_grd=rh)


class MostState(eqx.Module):
    """Iteration state of the Monin-Obukhov exchange: friction velocity ``fric_vel`` (m s-1), stability
    parameter ``zeta`` (z/L) and ``zeta2m``, number of sign changes ``n_flips``, and the (averaged)
    stability corrections ``psi_m``, ``psi_h``, ``psi_m2``, ``psi_h2`` of the full and the 2 m layer."""

    fric_vel: jax.Array
    zeta: jax.Array
    zeta2m: jax.Array
    n_flips: jax.Array
    psi_m: jax.Array
    psi_h: jax.Array
    psi_m2: jax.Array
    psi_h2: jax.Array

    @staticmethod
    def initial(like: jax.Array) -> MostState:
        z = jnp.zeros_like(like)
        return MostState(z, z, z, z, z, z, z, z)


class MostExchange(eqx.Module):
    """Result of one Monin-Obukhov evaluation: the new ``state``; ``cm`` drag coefficient for momentum
    (dimensionless, Noah-MP's ExchCoeffMom*), ``ch`` exchange coefficient for heat (dimensionless; the
    conductance is ch * wind), ``r_mom``/``r_heat`` aerodynamic resistances (s m-1, >= 1; vapour uses
    ``r_heat``)."""

    state: MostState
    cm: jax.Array
    ch: jax.Array
    r_mom: jax.Array
    r_heat: jax.Array


def _psi_unstable(zeta: jax.Array) -> tuple[jax.Array, jax.Array]:
    unstable = zeta < 0.0
    x = (1.0 - 16.0 * safe_where(unstable, zeta, 0.0)) ** 0.25
    t2 = jnp.log((1.0 + x * x) / 2.0)
    t3 = jnp.log((1.0 + x) / 2.0)
    fm = 2.0 * t3 + t2 - 2.0 * jnp.arctan(x) + HALF_PI_NOAHMP
    fh = 2 * t2
    stable = -5.0 * zeta
    return jnp.where(unstable, fm, stable), jnp.where(unstable, fh, stable)


def _clamp_mpe(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.abs(x) <= MPE, MPE, x)


def most_exchange(
    first: bool,
    sensible_heat: jax.Array,
    state: MostState,
    z_ref: jax.Array,
    d: jax.Array,
    z0m: jax.Array,
    z0h: jax.Array,
    wind: jax.Array,
    t_air: jax.Array,
    q_air: jax.Array,
    rho_air: jax.Array,
) -> MostExchange:
    """Noah-MP ``ResistanceAboveCanopyMOST`` (canopy tile: d, z0 of the surface) and
    ``ResistanceBareGroundMOST`` (bare tile: d = snow depth, z0 of the ground): one stability iteration.

    ``first`` (static) is Noah-MP's ``IterationInd == 1`` (neutral start); ``sensible_heat`` the sensible heat
    flux of the previous iteration (W m-2, + up) that sets the Obukhov length.
    """
    tmp_cm = jnp.log((z_ref - d) / z0m)
    tmp_ch = jnp.log((z_ref - d) / z0h)
    tmp_cm2 = jnp.log((2.0 + z0m) / z0m)
    tmp_ch2 = jnp.log((2.0 + z0h) / z0h)
    zeta_old = state.zeta
    if first:
        zeta = jnp.zeros_like(zeta_old)
        zeta2m = jnp.zeros_like(zeta_old)
    else:
        t_virtual = (1.0 + 0.61 * q_air) * t_air
        tmp1 = _clamp_mpe(VON_KARMAN * (GRAV / t_virtual) * sensible_heat / (rho_air * CP_AIR))
        length = -1.0 * state.fric_vel**3 / tmp1
        ok = length != 0.0  # u* > 0 after the first iteration; the guard only keeps gradients finite
        safe_length = safe_where(ok, length, 1.0)
        zeta = jnp.where(ok, jnp.minimum((z_ref - d) / safe_length, 1.0), 0.0)
        zeta2m = jnp.where(ok, jnp.minimum((2.0 + z0h) / safe_length, 1.0), 0.0)
    n_flips = state.n_flips + jnp.where(zeta_old * zeta < 0.0, 1.0, 0.0)
    reset = n_flips >= 2.0
    zeta = jnp.where(reset, 0.0, zeta)
    zeta2m = jnp.where(reset, 0.0, zeta2m)
    psi_m, psi_h = state.psi_m, state.psi_h
    psi_m2, psi_h2 = state.psi_m2, state.psi_h2
    psi_m, psi_h, psi_m2, psi_h2 = (jnp.where(reset, 0.0, x) for x in (psi_m, psi_h, psi_m2, psi_h2))

    fm_new, fh_new = _psi_unstable(zeta)
    fm2_new, fh2_new = _psi_unstable(zeta2m)
    if first:
        psi_m, psi_h, psi_m2, psi_h2 = fm_new, fh_new, fm2_new, fh2_new
    else:
        # average with the previous iteration to damp flip-flops
        psi_m = 0.5 * (psi_m + fm_new)
        psi_h = 0.5 * (psi_h + fh_new)
        psi_m2 = 0.5 * (psi_m2 + fm2_new)
        psi_h2 = 0.5 * (psi_h2 + fh2_new)
    psi_h = jnp.minimum(psi_h, 0.9 * tmp_ch)
    psi_m = jnp.minimum(psi_m, 0.9 * tmp_cm)
    psi_h2 = jnp.minimum(psi_h2, 0.9 * tmp_ch2)
    psi_m2 = jnp.minimum(psi_m2, 0.9 * tmp_cm2)
    cmfm = _clamp_mpe(tmp_cm - psi_m)
    chfh = _clamp_mpe(tmp_ch - psi_h)
    cm = VON_KARMAN * VON_KARMAN / (cmfm * cmfm)
    ch = VON_KARMAN * VON_KARMAN / (cmfm * chfh)
    fric_vel = wind * jnp.sqrt(cm)
    r_mom = jnp.maximum(MIN_RESISTANCE, 1.0 / (cm * wind))
    r_heat = jnp.maximum(MIN_RESISTANCE, 1.0 / (ch * wind))
    new_state = MostState(
        fric_vel=fric_vel,
        zeta=zeta,
        zeta2m=zeta2m,
        n_flips=n_flips,
        psi_m=psi_m,
        psi_h=psi_h,
        psi_m2=psi_m2,
        psi_h2=psi_h2,
    )
    return MostExchange(state=new_state, cm=cm, ch=ch, r_mom=r_mom, r_heat=r_heat)


class LeafToGround(eqx.Module):
    """Noah-MP ``ResistanceLeafToGround``: ``psi_h_under`` (averaged) below-canopy stability factor (-),
    ``r_heat_under`` ground-to-canopy-air resistance for heat and vapour (s m-1), ``r_leaf`` bulk leaf
    boundary-layer resistance (s m-1, 5-50), ``wind_ext`` canopy wind extinction coefficient (-)."""

    psi_h_under: jax.Array
    r_heat_under: jax.Array
    r_leaf: jax.Array
    wind_ext: jax.Array


def leaf_to_ground(
    first: bool,
    sensible_heat_ground: jax.Array,
    psi_h_under: jax.Array,
    t_canair: jax.Array,
    fric_vel: jax.Array,
    vai: jax.Array,
    canopy_height: jax.Array,
    d_sfc: jax.Array,
    z0m_grd: jax.Array,
    z0h_canopy: jax.Array,
    z0h_ground: jax.Array,
    wind_canopy_top: jax.Array,
    rho_air: jax.Array,
    canopy_wind_ext: jax.Array,
    leaf_dimension: jax.Array,
) -> LeafToGround:
    """Below-canopy aerodynamic and leaf boundary-layer resistances of one canopy iteration.

    ``sensible_heat_ground`` (W m-2) and ``t_canair`` (K) are from the previous iteration (unused when
    ``first``); ``vai`` is LAI+SAI effective capped at 6; ``canopy_wind_ext`` CWPVT (-); ``leaf_dimension``
    DLEAF (m).
    """
    if first:
        zeta = jnp.zeros_like(fric_vel)
    else:
        tmp1 = _clamp_mpe(VON_KARMAN * (GRAV / t_canair) * sensible_heat_ground / (rho_air * CP_AIR))
        length = -1.0 * fric_vel**3 / tmp1
        ok = length != 0.0
        zeta = jnp.where(ok, jnp.minimum((d_sfc - z0m_grd) / safe_where(ok, length, 1.0), 1.0), 0.0)
    unstable = zeta < 0.0
    fhg_new = jnp.where(unstable, (1.0 - 15.0 * safe_where(unstable, zeta, 0.0)) ** (-0.25), 1.0 + 4.7 * zeta)
    fhg = fhg_new if first else 0.5 * (psi_h_under + fhg_new)

    wind_ext = (canopy_wind_ext * vai * canopy_height * fhg) ** 0.5
    tmp1 = jnp.exp(-wind_ext * z0h_ground / canopy_height)
    tmp2 = jnp.exp(-wind_ext * (z0h_canopy + d_sfc) / canopy_height)
    tmp_rah2 = canopy_height * jnp.exp(wind_ext) / wind_ext * (tmp1 - tmp2)
    kh = jnp.maximum(VON_KARMAN * fric_vel * (canopy_height - d_sfc), MPE)
    r_under = tmp_rah2 / kh
    tmp_rb = wind_ext * 50.0 / (1.0 - jnp.exp(-wind_ext / 2.0))
    r_leaf = tmp_rb * jnp.sqrt(leaf_dimension / wind_canopy_top)
    r_leaf = jnp.minimum(jnp.maximum(r_leaf, 5.0), 50.0)
    return LeafToGround(psi_h_under=fhg, r_heat_under=r_under, r_leaf=r_leaf, wind_ext=wind_ext)
