"""Freezing and thawing of soil water (with a supercooled liquid-water limit) and of snow layers (Noah-MP
``SoilSnowWaterPhaseChange``, ``SoilWaterSupercoolNiu06``, ``SoilWaterSupercoolKoren99``).

Explicit: the energy (T - TFRZ) C dz of a layer that crossed the freezing point melts or freezes water,
down to the supercooled liquid limit (none in snow); whatever energy is left warms or cools the layer. The
snow layers come first, top to bottom (:func:`snow_phase_change`); a snow layer that melts completely hands
its remaining energy to the layer below, the bottom one to soil layer 1 (:func:`phase_change`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from ._safe import div, power, safe_divide, safe_where
from .constants import Constants
from .phase_change_gradient import implicit_freezing_tangent, supercooled_slope
from .shapes import Layered, PerColumn, PerLayer
from .types import SoilOptions, SoilParams, ThinSnow


def supercooled_niu06(t: jax.Array, params: SoilParams, const: Constants) -> jax.Array:
    """Supercooled liquid water limit (m3 m-3) from the freezing-point depression (Niu & Yang 2006).

    Valid below TFRZ; returns 0 elsewhere (gradient-safe at and above TFRZ).
    """
    c = const
    below = t < c.tfrz
    ts = safe_where(below, t, c.tfrz - 1.0)
    psi_frz = div(c.lf * (c.tfrz - ts), c.grav * ts)
    limit = params.smcmax * power(div(psi_frz, params.psisat), div(-1.0, params.bexp), c.exp_log_pow)
    return jnp.where(below, limit, 0.0)


def supercooled_koren99(
    t: jax.Array, smc: jax.Array, sh2o: jax.Array, params: SoilParams, const: Constants
) -> jax.Array:
    """Supercooled liquid water limit (m3 m-3) of Koren et al. (1999): Newton iterations on the ice content.

    A fixed loop of 10 iterations in which a column stops changing after its first converged iteration,
    as Noah-MP's ``while`` loop does; Flerchinger's explicit formula where it never converges.
    """
    c = const
    bk = jnp.minimum(params.bexp, c.koren_bmax)
    ck = c.koren_ck
    freezing = t <= c.tfrz - c.koren_no_freeze
    ts = safe_where(freezing, t, c.tfrz - 1.0)
    log_t = jnp.log(div(-(ts - c.tfrz), ts))
    xmax = smc - c.koren_min_liquid

    def clip(x):
        x = jnp.where(x > xmax, xmax, x)
        return jnp.where(x < 0.0, 0.0, x)

    def body(_, carry):
        x, conv = carry
        a = 1.0 + ck * x
        liq = smc - x
        liq_ok = liq > 0.0
        liq = safe_where(liq_ok, liq, 1.0)
        suction = power(div(params.smcmax, liq), bk, c.exp_log_pow)
        df = jnp.log(div(params.psisat * c.grav, c.lf) * (a * a) * suction) - log_t
        den = div(2.0 * ck, a) + div(bk, liq)
        xn = clip(x - div(df, den))
        active = conv == 0
        conv = jnp.where(active & (jnp.abs(xn - x) <= c.koren_tol), conv + 1, conv)
        return jnp.where(active, xn, x), conv

    x0 = clip(smc - sh2o)
    x, conv = lax.fori_loop(0, c.koren_iterations, body, (x0, jnp.zeros(x0.shape, jnp.int32)))
    fk = power(div(c.lf, c.grav * (-params.psisat)) * div(ts - c.tfrz, ts), div(-1.0, bk), c.exp_log_pow)
    fk = fk * params.smcmax
    fallback = jnp.minimum(jnp.maximum(fk, c.koren_min_liquid), smc)
    limit = jnp.where(conv == 0, fallback, smc - x)
    return jnp.where(freezing, limit, smc)


def phase_change(
    t: Layered,
    smc: Layered,
    sh2o: Layered,
    phase_factor: Layered,
    params: SoilParams,
    dz: PerLayer,
    options: SoilOptions,
    snow: ThinSnow | None = None,
    heat_from_snow_wm2: jax.Array | None = None,
) -> tuple[Layered, Layered, Layered, PerColumn, ThinSnow | None]:
    """Melt and freeze soil water of every layer (Noah-MP ``SoilSnowWaterPhaseChange``, soil part).

    Parameters
    ----------
    t : (..., N) temperature after heat diffusion, K.
    smc, sh2o : (..., N) start-of-step total and liquid moisture, m3 m-3.
    phase_factor : (..., N) dt / (C dz), K m2 W-1.
    snow : a snowpack without snow layers lying on layer 1. When layer 1 is at or above freezing its excess
        energy melts this snow first, then soil ice (Noah-MP's thin-snow branch).
    heat_from_snow_wm2 : (...,) energy left by a bottom snow layer that melted completely in this step
        (:func:`snow_phase_change`), W m-2: added to layer 1's phase-change energy (used only where layer 1
        changes phase, as in Noah-MP).

    Returns
    -------
    t, smc, sh2o : updated state.
    latent_heat_wm2 : (...,) energy used by melting (negative when freezing), snow melt included, W m-2.
    snow : the snowpack after melt (``melt_mm`` = melt water of the step, mm per step), or None.
    """
    c = options.const
    dt = options.dt_s
    t_in = t
    below = t < c.tfrz
    if options.supercooled == "niu06":
        supercooled = lambda x: supercooled_niu06(x, params, c)  # noqa: E731
    else:
        supercooled = lambda x: jnp.where(x < c.tfrz, supercooled_koren99(x, smc, sh2o, params, c), 0.0)  # noqa: E731
    theta_sc = supercooled(t)
    w_liq0 = sh2o * dz * c.rho_water
    w_ice0 = (smc - sh2o) * dz * c.rho_water
    w_tot0 = w_liq0 + w_ice0
    w_sc = jnp.where(below, theta_sc * dz * c.rho_water, 0.0)

    melt = (w_ice0 > 0.0) & (t >= c.tfrz)
    freeze = (w_liq0 > w_sc) & below
    if snow is not None:
        melt = melt.at[..., 0].set(melt[..., 0] | ((snow.swe_mm > 0.0) & (t[..., 0] >= c.tfrz)))
        freeze = freeze & ~melt
    flagged = melt | freeze
    e_res = jnp.where(flagged, div(t - c.tfrz, phase_factor), 0.0)
    # Noah-MP resets the flag when the residual energy has the wrong sign (unreachable, kept for parity).
    wrong_sign = (melt & (e_res < 0.0)) | (freeze & (e_res > 0.0))
    e_res = jnp.where(wrong_sign, 0.0, e_res)
    if heat_from_snow_wm2 is not None:
        e_res = e_res.at[..., 0].add(heat_from_snow_wm2)
    w_pc = div(e_res * dt, c.lf)
    snow_latent = 0.0
    if snow is not None:
        snow, e_res1, snow_latent = _melt_thin_snow(snow, e_res[..., 0], w_pc[..., 0], c, dt)
        e_res = e_res.at[..., 0].set(e_res1)
        w_pc = w_pc.at[..., 0].set(jnp.where(snow.melt_mm > 0.0, div(e_res1 * dt, c.lf), w_pc[..., 0]))
    active = flagged & ~wrong_sign & (jnp.abs(e_res) > 0.0)

    w_ice_freeze = jnp.where(w_tot0 < w_sc, 0.0, jnp.maximum(jnp.minimum(w_tot0 - w_sc, w_ice0 - w_pc), 0.0))
    # A flagged layer exactly at TFRZ (e_res = 0) is left unchanged by Noah-MP. Taking the melt branch there
    # gives the same values (w_ice0 - 0, w_liq0 + 0, TFRZ + F*0) and the warm-side derivative instead of none.
    w_ice = jnp.where(flagged, jnp.where(w_pc >= 0.0, jnp.maximum(0.0, w_ice0 - w_pc), w_ice_freeze), w_ice0)
    e_left = e_res - div(c.lf * (w_ice0 - w_ice), dt)
    w_liq = jnp.where(active, jnp.maximum(0.0, w_tot0 - w_ice), w_liq0 + (w_ice0 - w_ice))
    t = jnp.where(flagged, c.tfrz + phase_factor * e_left, t)

    latent_heat = jnp.sum(div(c.lf * (w_ice0 - w_ice), dt), axis=-1) + snow_latent
    sh2o = div(w_liq, c.rho_water * dz)
    smc = div(w_liq + w_ice, c.rho_water * dz)
    if options.phase_change_gradient == "implicit":  # same values; a bounded derivative of freezing
        at_limit = freeze & active & (w_tot0 - w_sc <= w_ice0 - w_pc)
        slope = supercooled_slope(supercooled, t_in, at_limit)
        latent_factor = (c.lf * c.rho_water / dt) * dz
        t, sh2o, latent_heat = implicit_freezing_tangent(t_in, t, sh2o, latent_heat, slope, phase_factor, latent_factor)
    return t, smc, sh2o, latent_heat, snow


def _melt_thin_snow(
    snow: ThinSnow, e_res: jax.Array, w_pc: jax.Array, c, dt: float
) -> tuple[ThinSnow, jax.Array, jax.Array]:
    """Layer 1's excess energy ``e_res`` (W m-2, melt potential ``w_pc`` mm) melts the snow above it first.

    Returns the snowpack after melt, the energy left for soil ice (W m-2) and the latent heat used (W m-2).
    The new depth keeps the density between 50 and 500 kg m-3, as Noah-MP does.
    """
    melting = (snow.swe_mm > 0.0) & (w_pc > 0.0)
    swe = jnp.where(melting, jnp.maximum(0.0, snow.swe_mm - w_pc), snow.swe_mm)
    ratio = safe_divide(swe, snow.swe_mm, 1.0)
    depth = jnp.maximum(0.0, ratio * snow.depth_m)
    depth = jnp.where(melting, jnp.minimum(jnp.maximum(depth, swe / 500.0), swe / 50.0), snow.depth_m)
    melt_mm = jnp.where(melting, snow.swe_mm - swe, 0.0)
    left = e_res - div(c.lf * melt_mm, dt)
    e_left = jnp.where(melting, jnp.maximum(left, 0.0), e_res)
    latent = div(c.lf * jnp.maximum(melt_mm, 0.0), dt)
    return ThinSnow(swe_mm=swe, depth_m=depth, melt_mm=melt_mm), e_left, latent


class SnowPhaseChange(eqx.Module):
    """Result of :func:`snow_phase_change` (per snow slot (..., 3) unless stated).

    ``t_k`` temperature, K; ``ice_mm`` / ``liq_mm`` ice and liquid water, mm; ``melting`` True where the layer
    was flagged for melting (Noah-MP ``IndexPhaseChange`` = 1, used by compaction); ``latent_heat_wm2`` (...,)
    energy used by melting minus freezing, W m-2; ``melt_mmps`` (...,) ice melted, mm s-1 (MeltGroundSnow);
    ``heat_to_soil_wm2`` (...,) energy the bottom layer hands to soil layer 1 after melting completely, W m-2.
    """

    t_k: jax.Array
    ice_mm: jax.Array
    liq_mm: jax.Array
    melting: jax.Array
    latent_heat_wm2: jax.Array
    melt_mmps: jax.Array
    heat_to_soil_wm2: jax.Array


def snow_phase_change(
    t: jax.Array,
    ice_mm: jax.Array,
    liq_mm: jax.Array,
    phase_factor: jax.Array,
    active: jax.Array,
    const: Constants,
    dt_s: float,
) -> SnowPhaseChange:
    """Melt and refreeze the snow layers (Noah-MP ``SoilSnowWaterPhaseChange``, snow part).

    A layer at or above freezing with ice melts, one below freezing with liquid refreezes, with the energy
    (T - TFRZ) / F (``phase_factor`` F = dt / (C dz), K m2 W-1, (..., 3)); the layer is then at TFRZ unless
    all its ice or liquid is gone. Layers are done top to bottom: one that melts out passes its remaining
    energy to the next (Noah-MP drops it where that layer is not changing phase). ``t`` (..., 3) temperature
    after heat diffusion, K; ``ice_mm``, ``liq_mm`` (..., 3) start-of-step water, mm; ``active`` (..., 3) the
    slots that hold a layer.
    """
    c, dt = const, dt_s
    f = jnp.where(active, phase_factor, 1.0)
    ts, ices, liqs, melting = [], [], [], []
    latent = melt = carry = jnp.zeros_like(t[..., 0])
    for s in range(t.shape[-1]):
        t_s, ice0, liq0, f_s, on = t[..., s], ice_mm[..., s], liq_mm[..., s], f[..., s], active[..., s]
        tot0 = ice0 + liq0
        melt_flag = on & (ice0 > 0.0) & (t_s >= c.tfrz)
        freeze_flag = on & (liq0 > 0.0) & (t_s < c.tfrz)
        flagged = melt_flag | freeze_flag
        e_res = jnp.where(flagged, div(t_s - c.tfrz, f_s), 0.0)
        t_s = jnp.where(flagged, c.tfrz, t_s)
        wrong_sign = (melt_flag & (e_res < 0.0)) | (freeze_flag & (e_res > 0.0))  # unreachable, kept for parity
        flagged = flagged & ~wrong_sign
        e_res = jnp.where(wrong_sign, 0.0, e_res) + carry
        w_pc = div(e_res * dt, c.lf)
        run = flagged & (jnp.abs(e_res) > 0.0)
        ice = jnp.where(
            w_pc > 0.0, jnp.maximum(0.0, ice0 - w_pc), jnp.where(w_pc < 0.0, jnp.minimum(tot0, ice0 - w_pc), ice0)
        )
        ice = jnp.where(run, ice, ice0)
        e_left = jnp.where(run & (w_pc != 0.0), e_res - div(c.lf * (ice0 - ice), dt), 0.0)
        liq = jnp.where(run, jnp.maximum(0.0, tot0 - ice), liq0)
        left = jnp.abs(e_left) > 0.0
        t_s = jnp.where(left, t_s + f_s * e_left, t_s)
        t_s = jnp.where(left & ((liq * ice > 0.0) | (ice == 0.0)), c.tfrz, t_s)
        carry = jnp.where(left & (ice == 0.0), e_left, 0.0)
        latent = latent + div(c.lf * (ice0 - ice), dt)
        melt = melt + div(jnp.maximum(0.0, ice0 - ice), dt)
        ts.append(t_s)
        ices.append(ice)
        liqs.append(liq)
        melting.append(melt_flag & ~wrong_sign)
    stack = lambda xs: jnp.stack(xs, axis=-1)  # noqa: E731
    return SnowPhaseChange(
        t_k=stack(ts), ice_mm=stack(ices), liq_mm=stack(liqs), melting=stack(melting), latent_heat_wm2=latent,
        melt_mmps=melt, heat_to_soil_wm2=carry,
    )  # fmt: skip
