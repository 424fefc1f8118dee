"""Stomatal resistance and leaf photosynthesis: Noah-MP ``ResistanceCanopyStomataBallBerry`` (CRS=1,
Ball-Berry conductance with Farquhar/Collatz photosynthesis), for the sunlit and the shaded leaves.

This is a seam of the vegetated energy balance: any callable with the signature of
:func:`ball_berry_canopy` (``(StomataInputs, StomataParams) -> CanopyStomata``) can replace it, e.g. a
learned model or :class:`PrescribedStomata` (observed or reference resistances).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .constants import TFRZ

R_GAS = 8.314  # universal gas constant as Noah-MP writes it, J mol-1 K-1
MPE = 1.0e-6
MIN_VEG_FRAC = 1.0e-6
PPF_PER_WM2 = 4.6  # umol photons per J of PAR
N_CI_ITERATIONS = 3  # Noah-MP's fixed intercellular-CO2 iterations
CI_FIRST_C3 = 0.7  # first guess ci / ca for C3 and C4 plants
CI_FIRST_C4 = 0.4
CEA_MIN_C3 = 0.25  # lower bound of canopy-air vapour pressure / esat for C3 and C4
CEA_MIN_C4 = 0.40
CS_RESISTANCE_FAC = 1.37  # leaf boundary layer: CO2 vs water vapour diffusivity ratio
CI_STOMATA_FAC = 1.65  # stomata: CO2 vs water vapour diffusivity ratio
O2_FRACTION_CP = 0.21  # factor of the CO2 compensation point
C4_EXPORT_FAC = 4000.0
# High-temperature inhibition of Vcmax (statement function F2).
INHIB_A = -2.2e05
INHIB_B = 710.0


class StomataParams(eqx.Module):
    """Ball-Berry parameters (Noah-MP table names in brackets).

    ``vcmax25`` maximum carboxylation rate at 25 C, umol CO2 m-2 s-1 [VCMX25]; ``vcmax_q10`` its Q10 [AVCMX];
    ``quantum_eff`` quantum efficiency at 25 C, umol CO2 / umol photon [QE25]; ``c3`` 1 for C3, 0 for C4
    [C3PSN]; ``slope`` Ball-Berry slope m (-) [MP]; ``g_min`` minimum leaf conductance, umol m-2 s-1 [BP];
    ``kc25`` / ``ko25`` CO2 / O2 Michaelis-Menten constants at 25 C, Pa [KC25, KO25]; ``kc_q10`` / ``ko_q10``
    their Q10 [AKC, AKO]; ``foliage_n_max`` foliage nitrogen at which f(N) = 1, % [FOLNMX]; ``co2_ratio`` /
    ``o2_ratio`` CO2 and O2 mole fractions of the air (mol mol-1) [CO2, O2]; the partial pressures are these
    times the reference-height pressure.
    """

    vcmax25: jax.Array
    vcmax_q10: jax.Array
    quantum_eff: jax.Array
    c3: jax.Array
    slope: jax.Array
    g_min: jax.Array
    kc25: jax.Array
    ko25: jax.Array
    kc_q10: jax.Array
    ko_q10: jax.Array
    foliage_n_max: jax.Array
    co2_ratio: jax.Array
    o2_ratio: jax.Array


class StomataInputs(eqx.Module):
    """What the stomata see at the first canopy iteration (Noah-MP evaluates them once per step).

    ``par_sunlit`` / ``par_shade`` absorbed PAR per unit sunlit / shaded leaf area, grid-mean convention of
    Noah-MP (RadPhotoActAbsSunlit/Shade, W m-2; divided by the vegetation fraction inside); ``t_veg`` canopy
    temperature, K; ``esat_veg`` saturation vapour pressure at ``t_veg``, Pa; ``e_canair`` canopy-air vapour
    pressure, Pa; ``r_leaf`` leaf boundary-layer resistance, s m-1; ``p_air`` Pa; ``t_air`` K; ``btran`` soil
    water stress factor (0-1); ``grow_season`` 1 in the growing season else 0; ``foliage_n`` foliage nitrogen,
    %; ``veg_frac`` vegetation fraction (-).
    """

    par_sunlit: jax.Array
    par_shade: jax.Array
    t_veg: jax.Array
    esat_veg: jax.Array
    e_canair: jax.Array
    r_leaf: jax.Array
    p_air: jax.Array
    t_air: jax.Array
    btran: jax.Array
    grow_season: jax.Array
    foliage_n: jax.Array
    veg_frac: jax.Array


class CanopyStomata(eqx.Module):
    """Stomatal resistance of sunlit / shaded leaves (s m-1) and their photosynthesis (umol CO2 m-2 s-1)."""

    rs_sunlit: jax.Array
    rs_shade: jax.Array
    psn_sunlit: jax.Array
    psn_shade: jax.Array


def _q10(q10: jax.Array, tc: jax.Array) -> jax.Array:
    return q10 ** ((tc - 25.0) / 10.0)


def ball_berry(par: jax.Array, inp: StomataInputs, params: StomataParams) -> tuple[jax.Array, jax.Array]:
    """Noah-MP ``ResistanceCanopyStomataBallBerry`` for one leaf class: (resistance s m-1, photosynthesis
    umol CO2 m-2 s-1). ``par`` is RadPhotoActAbsSunlit or RadPhotoActAbsShade (W m-2)."""
    p = params
    cf = inp.p_air / (R_GAS * inp.t_air) * 1.0e06  # s m2 umol-1 -> s m-1
    rs_dark = 1.0 / p.g_min * cf
    par_leaf = par / jnp.maximum(inp.veg_frac, MIN_VEG_FRAC)
    lit = par_leaf > 0.0
    par_leaf = jnp.where(lit, par_leaf, 1.0)  # keep the unselected branch finite

    co2 = p.co2_ratio * inp.p_air
    o2 = p.o2_ratio * inp.p_air
    n_fac = jnp.minimum(inp.foliage_n / jnp.maximum(MPE, p.foliage_n_max), 1.0)
    tc = inp.t_veg - TFRZ
    j = PPF_PER_WM2 * par_leaf * p.quantum_eff
    kc = p.kc25 * _q10(p.kc_q10, tc)
    ko = p.ko25 * _q10(p.ko_q10, tc)
    awc = kc * (1.0 + o2 / ko)
    cp = 0.5 * kc / ko * o2 * O2_FRACTION_CP
    inhibition = 1.0 + jnp.exp((INHIB_A + INHIB_B * (tc + TFRZ)) / (R_GAS * (tc + TFRZ)))
    vcmax = p.vcmax25 / inhibition * n_fac * inp.btran * _q10(p.vcmax_q10, tc)
    ci = CI_FIRST_C3 * co2 * p.c3 + CI_FIRST_C4 * co2 * (1.0 - p.c3)
    rlb = inp.r_leaf / cf
    esat = inp.esat_veg
    cea = jnp.maximum(CEA_MIN_C3 * esat * p.c3 + CEA_MIN_C4 * esat * (1.0 - p.c3), jnp.minimum(inp.e_canair, esat))
    psn = jnp.zeros_like(ci)
    rs = jnp.zeros_like(ci)
    for _ in range(N_CI_ITERATIONS):
        excess = jnp.maximum(ci - cp, 0.0)
        wj = excess * j / (ci + 2.0 * cp) * p.c3 + j * (1.0 - p.c3)
        wc = excess * vcmax / (ci + awc) * p.c3 + vcmax * (1.0 - p.c3)
        we = 0.5 * vcmax * p.c3 + C4_EXPORT_FAC * vcmax * ci / inp.p_air * (1.0 - p.c3)
        psn = jnp.minimum(jnp.minimum(wj, wc), we) * inp.grow_season
        cs = jnp.maximum(co2 - CS_RESISTANCE_FAC * rlb * inp.p_air * psn, MPE)
        a = p.slope * psn * inp.p_air * cea / (cs * esat) + p.g_min
        b = (p.slope * psn * inp.p_air / cs + p.g_min) * rlb - 1.0
        c = -rlb
        root = jnp.sqrt(b * b - 4.0 * a * c)  # a > 0 and c < 0: the discriminant exceeds b*b
        q = jnp.where(b >= 0.0, -0.5 * (b + root), -0.5 * (b - root))
        rs = jnp.maximum(q / a, c / q)
        ci = jnp.maximum(cs - psn * inp.p_air * CI_STOMATA_FAC * rs, 0.0)
    return jnp.where(lit, rs * cf, rs_dark), jnp.where(lit, psn, 0.0)


def ball_berry_canopy(inp: StomataInputs, params: StomataParams) -> CanopyStomata:
    """Ball-Berry for the sunlit and the shaded leaves (Noah-MP calls the routine with IndexShade 0 and 1)."""
    rs_sun, psn_sun = ball_berry(inp.par_sunlit, inp, params)
    rs_sha, psn_sha = ball_berry(inp.par_shade, inp, params)
    return CanopyStomata(rs_sunlit=rs_sun, rs_shade=rs_sha, psn_sunlit=psn_sun, psn_shade=psn_sha)


class PrescribedStomata(eqx.Module):
    """Stomatal resistances given from outside (s m-1; observations, a reference run, a learned model's
    output). Callable like :func:`ball_berry_canopy`; photosynthesis is reported as 0."""

    rs_sunlit: jax.Array
    rs_shade: jax.Array

    def __call__(self, inp: StomataInputs, params: StomataParams) -> CanopyStomata:
        shape = jnp.shape(inp.t_veg)
        rs_sun = jnp.broadcast_to(self.rs_sunlit, shape)
        rs_sha = jnp.broadcast_to(self.rs_shade, shape)
        zero = jnp.zeros_like(rs_sun)
        return CanopyStomata(rs_sunlit=rs_sun, rs_shade=rs_sha, psn_sunlit=zero, psn_shade=zero)
