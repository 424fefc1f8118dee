"""Snow cover, snow age, snow and ground albedo and the two-stream canopy (Noah-MP ``SurfaceAlbedo``).

Ports, for ``SNOW_COVER_OPTION`` 1, ``SNOW_ALBEDO_OPTION`` 1 (BATS) and ``RADIATIVE_TRANSFER_OPTION`` 3 (or 2),
on a soil surface (SurfaceType 1): ``SnowCoverGroundNiu07``, ``SnowAgingBats``, ``SnowAlbedoBats``,
``GroundAlbedo``, ``CanopyRadiationTwoStream`` and ``SurfaceAlbedo``.

Band arrays have the band axis last, size 2: index 0 visible, index 1 near infrared. Per-unit fluxes are
fractions of a unit incoming flux of that band (direct or diffuse).
"""

from __future__ import annotations

from typing import Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div, safe_where
from .constants import TFRZ

# Constants (Noah-MP literals; float64 build).
MIN_THR = 1.0e-6  # guard against division by zero in SurfaceAlbedo (MinThr)
SNOW_DENSITY_SCALE = 100.0  # kg m-3, bulk density scale of the Niu07 melt factor
SOIL_WET_ALBEDO_A = 0.11  # soil-moisture albedo correction: max(0.11 - 0.40 * smc_1, 0)
SOIL_WET_ALBEDO_B = 0.40
COSZ_MIN_TWO_STREAM = 0.001  # cos(zenith) floor inside the two-stream scheme
LEAF_ORIENT_MIN = -0.4  # leaf orientation index range of the Ross-Goudriaan function
LEAF_ORIENT_MAX = 0.6
LEAF_ORIENT_NEAR_ZERO = 0.01  # |chi| <= this is replaced by it
ROSS_A = 0.5  # phi1 = 0.5 - 0.633 chi - 0.330 chi^2, phi2 = 0.877 (1 - 2 phi1)
ROSS_B = 0.633
ROSS_C = 0.330
ROSS_D = 0.877
SIGMA_MIN = 1.0e-6  # floor of |sigma| in the two-stream solution
SUNLIT_FRAC_MIN = 0.01  # sunlit fractions below this are set to 0

CanopyGap = Literal["one_minus_vegfrac", "none"]
SnowAlbedo = Literal["bats"]


def _check_choice(name: str, value: str, choices: type) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"option {name}={value!r} is not one of {allowed}")


class RadiationOptions(eqx.Module):
    """Static choices of the radiation processes.

    ``canopy_gap`` = RADIATIVE_TRANSFER_OPTION: 3 ``"one_minus_vegfrac"`` (gap fraction 1 - VegFrac for direct
    and diffuse light; the Bondville default), 2 ``"none"`` (no gaps). ``snow_albedo`` = SNOW_ALBEDO_OPTION 1
    ``"bats"``. (The time step is the caller's: ``dt_s`` of :func:`surface_albedo`.)
    """

    canopy_gap: CanopyGap = eqx.field(static=True, default="one_minus_vegfrac")
    snow_albedo: SnowAlbedo = eqx.field(static=True, default="bats")

    def __check_init__(self) -> None:
        _check_choice("canopy_gap", self.canopy_gap, CanopyGap)
        _check_choice("snow_albedo", self.snow_albedo, SnowAlbedo)


class SnowCoverParams(eqx.Module):
    """Parameters of :func:`snow_cover_fraction`: ``melt_factor`` the Niu-Yang melting exponent m, -
    (MFSNO); ``cover_factor_m`` the snow cover length scale, m (SCFFAC, 2.5 z0 in Niu and Yang 2007)."""

    melt_factor: jax.Array
    cover_factor_m: jax.Array


class RadiationParams(eqx.Module):
    """Parameters of the albedo, shortwave and emissivity routines. Band fields are (..., 2): (vis, NIR).

    Vegetation (table row): ``rho_leaf``, ``rho_stem`` leaf and stem reflectance, - (RHOL, RHOS);
    ``tau_leaf``, ``tau_stem`` leaf and stem transmittance, - (TAUL, TAUS); ``leaf_orientation`` leaf/stem
    orientation index chi, - (XL).
    Soil (colour class): ``albedo_soil_sat``, ``albedo_soil_dry`` saturated and dry soil albedo, - (ALBSAT,
    ALBDRY).
    Snow on leaves: ``snow_scatter`` scattering coefficient of snow, - (OMEGAS); ``snow_upscatter_dir``,
    ``snow_upscatter_dif`` upscatter parameters of snow for direct and diffuse light, - (BETADS, BETAIS).
    BATS snow: ``snow_age_tau_s`` aging time scale, s (TAU0); ``snow_grain_growth`` vapour-diffusion grain
    growth factor, K (GRAIN_GROWTH); ``snow_extra_growth`` extra growth near freezing, - (EXTRA_GROWTH);
    ``snow_dirt_soot`` dirt and soot term, - (DIRT_SOOT); ``swe_full_cover_mm`` new snow that refreshes the
    surface completely, mm (SWEMX); ``bats_cosz`` zenith-angle adjustment b, - (BATS_COSZ);
    ``snow_albedo_new`` (..., 2) fresh-snow diffuse albedo, - (BATS_VIS_NEW, BATS_NIR_NEW);
    ``snow_albedo_age`` (..., 2) age reduction factors, - (BATS_VIS_AGE, BATS_NIR_AGE);
    ``snow_albedo_zenith`` (..., 2) zenith factors of the direct albedo, - (BATS_VIS_DIR, BATS_NIR_DIR).
    Emissivity: ``emissivity_snow`` (SNOW_EMIS) and ``emissivity_soil`` (EG of soil), -.
    """

    rho_leaf: jax.Array
    rho_stem: jax.Array
    tau_leaf: jax.Array
    tau_stem: jax.Array
    leaf_orientation: jax.Array
    albedo_soil_sat: jax.Array
    albedo_soil_dry: jax.Array
    snow_scatter: jax.Array
    snow_upscatter_dir: jax.Array
    snow_upscatter_dif: jax.Array
    snow_age_tau_s: jax.Array
    snow_grain_growth: jax.Array
    snow_extra_growth: jax.Array
    snow_dirt_soot: jax.Array
    swe_full_cover_mm: jax.Array
    bats_cosz: jax.Array
    snow_albedo_new: jax.Array
    snow_albedo_age: jax.Array
    snow_albedo_zenith: jax.Array
    emissivity_snow: jax.Array
    emissivity_soil: jax.Array


def snow_cover_fraction(snow_depth_m: jax.Array, swe_mm: jax.Array, params: SnowCoverParams) -> jax.Array:
    """Snow-covered fraction of the ground, - (Noah-MP ``SnowCoverGroundNiu07``, Niu and Yang 2007).

    ``tanh(h / (SCFFAC (rho_snow / 100)^m))`` with the bulk density ``rho_snow = swe / h`` (kg m-3); 0 without
    snow. Inputs: snow depth ``snow_depth_m`` (m) and water equivalent ``swe_mm`` (mm) at the start of the step.
    """
    has_snow = snow_depth_m > 0.0
    dense = has_snow & (swe_mm > 0.0)
    depth = safe_where(has_snow, snow_depth_m, 1.0)
    density = div(safe_where(dense, swe_mm, 1.0), depth)
    melt = jnp.power(div(density, SNOW_DENSITY_SCALE), params.melt_factor)
    cover = jnp.tanh(div(depth, params.cover_factor_m * melt))
    # No water in a finite depth: Noah-MP divides by a zero melt factor, tanh(inf) = 1.
    return jnp.where(dense, cover, jnp.where(has_snow, 1.0, 0.0))


class SnowAge(eqx.Module):
    """Output of :func:`snow_aging_bats`: ``snow_age`` non-dimensional snow age after this step, -
    (SnowAgeNondim, a prognostic state); ``age_factor`` = age / (age + 1), - (SnowAgeFac)."""

    snow_age: jax.Array
    age_factor: jax.Array


def snow_aging_bats(
    swe_mm: jax.Array,
    swe_prev_mm: jax.Array,
    snow_age: jax.Array,
    t_grd_k: jax.Array,
    params: RadiationParams,
    dt_s: float,
) -> SnowAge:
    """Advance the BATS non-dimensional snow age by one step (Noah-MP ``SnowAgingBats``).

    ``swe_mm`` snow water equivalent at the start of the step (mm); ``swe_prev_mm`` the SWE that Noah-MP
    stored at the start of the previous water step (SnowWaterEquivPrev: SWE after the previous step's phase
    change, before its snowfall), mm; new snow ``max(0, swe - swe_prev) / SWEMX`` resets the age.
    ``snow_age`` previous age, -; ``t_grd_k`` ground temperature at the start of the step, K.
    """
    p = params
    time_factor = div(jnp.asarray(dt_s, jnp.result_type(swe_mm)), p.snow_age_tau_s)
    vap_exp = p.snow_grain_growth * (1.0 / TFRZ - div(1.0, t_grd_k))
    vapour = jnp.exp(vap_exp)
    freeze = jnp.exp(jnp.minimum(0.0, p.snow_extra_growth * vap_exp))
    total = vapour + freeze + p.snow_dirt_soot
    change = time_factor * total
    fresh = div(jnp.maximum(0.0, swe_mm - swe_prev_mm), p.swe_full_cover_mm)
    aged = jnp.maximum(0.0, (snow_age + change) * (1.0 - fresh))
    age = jnp.where(swe_mm <= 0.0, 0.0, aged)
    return SnowAge(snow_age=age, age_factor=div(age, age + 1.0))


def snow_albedo_bats(cos_zenith: jax.Array, age_factor: jax.Array, params: RadiationParams) -> tuple:
    """Direct and diffuse snow albedo, each (..., 2) (Noah-MP ``SnowAlbedoBats``), for ``cos_zenith`` > 0."""
    p = params
    s1 = div(1.0, p.bats_cosz)
    s2 = 2.0 * p.bats_cosz
    zen = jnp.maximum(div(1.0 + s1, 1.0 + s2 * cos_zenith) - s1, 0.0)
    dif = p.snow_albedo_new * (1.0 - p.snow_albedo_age * age_factor[..., None])
    direct = dif + p.snow_albedo_zenith * zen[..., None] * (1.0 - dif)
    return direct, dif


def ground_albedo(
    smc_top: jax.Array,
    snow_cover_frac: jax.Array,
    snow_albedo_dir: jax.Array,
    snow_albedo_dif: jax.Array,
    params: RadiationParams,
) -> tuple:
    """Soil and ground (soil + snow) albedo, (..., 2) each (Noah-MP ``GroundAlbedo``, soil surface).

    Returns ``(soil, ground_dir, ground_dif)``; the soil albedo is the same for direct and diffuse light and
    brightens as the top layer's total moisture ``smc_top`` (m3 m-3) decreases.
    """
    wet = jnp.maximum(SOIL_WET_ALBEDO_A - SOIL_WET_ALBEDO_B * smc_top, 0.0)
    soil = jnp.minimum(params.albedo_soil_sat + wet[..., None], params.albedo_soil_dry)
    f = snow_cover_frac[..., None]
    return soil, soil * (1.0 - f) + snow_albedo_dir * f, soil * (1.0 - f) + snow_albedo_dif * f


class TwoStream(eqx.Module):
    """Per-unit-flux results of :func:`canopy_two_stream` for one kind of incoming light, each (..., 2).

    ``albedo`` surface albedo (AlbedoSfcDir/Dif); ``absorbed_veg`` absorbed by the canopy (RadSwAbsVegDir/Dif);
    ``down_dir``, ``down_dif`` direct and diffuse light reaching the ground (RadSwDirTranGrd*, RadSwDifTranGrd*);
    ``reflected_veg``, ``reflected_grd`` reflected by the canopy and by the ground through the gaps
    (RadSwReflVeg*, RadSwReflGrd*); ``proj_area`` projected leaf+stem area in the solar direction (the same
    for every band; VegAreaProjDir), -.
    """

    albedo: jax.Array
    absorbed_veg: jax.Array
    down_dir: jax.Array
    down_dif: jax.Array
    reflected_veg: jax.Array
    reflected_grd: jax.Array
    proj_area: jax.Array


def canopy_two_stream(
    diffuse: bool,
    cos_zenith: jax.Array,
    vai: jax.Array,
    veg_frac: jax.Array,
    rho_veg: jax.Array,
    tau_veg: jax.Array,
    albedo_grd_dir: jax.Array,
    albedo_grd_dif: jax.Array,
    t_canopy_k: jax.Array,
    canopy_wet_frac: jax.Array,
    params: RadiationParams,
    canopy_gap: CanopyGap = "one_minus_vegfrac",
) -> TwoStream:
    """Two-stream canopy radiative transfer for unit incoming direct (``diffuse=False``) or diffuse light
    (Noah-MP ``CanopyRadiationTwoStream``), both bands at once.

    ``vai`` effective LAI + SAI (m2 m-2); ``rho_veg``, ``tau_veg`` (..., 2) area-weighted leaf/stem optics;
    ``albedo_grd_*`` (..., 2) ground albedo; a canopy at or below freezing scatters as a mixture of leaves and
    snow weighted by the wetted fraction ``canopy_wet_frac``.
    """
    p = params
    vai = vai[..., None]
    if canopy_gap == "one_minus_vegfrac":
        gap = jnp.where(vai == 0.0, 1.0, 1.0 - veg_frac[..., None])
    else:
        gap = jnp.where(vai == 0.0, 1.0, 0.0)

    cosz = jnp.maximum(COSZ_MIN_TWO_STREAM, cos_zenith)[..., None]
    chi = jnp.minimum(jnp.maximum(p.leaf_orientation, LEAF_ORIENT_MIN), LEAF_ORIENT_MAX)
    chi = jnp.where(jnp.abs(chi) <= LEAF_ORIENT_NEAR_ZERO, LEAF_ORIENT_NEAR_ZERO, chi)
    chi = jnp.asarray(chi)[..., None]
    phi1 = ROSS_A - ROSS_B * chi - ROSS_C * chi * chi
    phi2 = ROSS_D * (1.0 - 2.0 * phi1)
    proj = phi1 + phi2 * cosz
    k_dir = div(proj, cosz)
    k_dif = div(1.0 - div(phi1, phi2) * jnp.log(div(phi1 + phi2, phi1)), phi2)
    omega_leaf = rho_veg + tau_veg
    t0 = proj + phi2 * cosz
    t1 = phi1 * cosz
    single = div(0.5 * omega_leaf * proj, t0) * (1.0 - div(t1, t0) * jnp.log(div(t1 + t0, t1)))
    beta_dir_leaf = div(1.0 + k_dif * k_dir, omega_leaf * k_dif * k_dir) * single
    beta_dif_leaf = div(0.5 * (rho_veg + tau_veg + (rho_veg - tau_veg) * ((1.0 + chi) / 2.0) ** 2), omega_leaf)

    fwet = canopy_wet_frac[..., None]
    omega_snowy = (1.0 - fwet) * omega_leaf + fwet * p.snow_scatter
    beta_dir_snowy = div(
        (1.0 - fwet) * omega_leaf * beta_dir_leaf + fwet * p.snow_scatter * p.snow_upscatter_dir, omega_snowy
    )
    beta_dif_snowy = div(
        (1.0 - fwet) * omega_leaf * beta_dif_leaf + fwet * p.snow_scatter * p.snow_upscatter_dif, omega_snowy
    )
    warm = (t_canopy_k > TFRZ)[..., None]
    omega = jnp.where(warm, omega_leaf, omega_snowy)
    beta_dir = jnp.where(warm, beta_dir_leaf, beta_dir_snowy)
    beta_dif = jnp.where(warm, beta_dif_leaf, beta_dif_snowy)

    b = 1.0 - omega + omega * beta_dif
    c = omega * beta_dif
    kk = k_dif * k_dir
    d = kk * omega * beta_dir
    f = kk * omega * (1.0 - beta_dir)
    bc = b * b - c * c
    h = div(jnp.sqrt(bc), k_dif)
    sigma = kk * kk - bc
    sigma = jnp.where(jnp.abs(sigma) < SIGMA_MIN, jnp.where(sigma < 0.0, -SIGMA_MIN, SIGMA_MIN), sigma)
    p1 = b + k_dif * h
    p2 = b - k_dif * h
    p3 = b + kk
    p4 = b - kk
    s1 = jnp.exp(-h * vai)
    s2 = jnp.exp(-k_dir * vai)
    alb = albedo_grd_dif if diffuse else albedo_grd_dir
    u1 = b - div(c, alb)
    u2 = b - c * alb
    u3 = f + c * alb
    t2 = u1 - k_dif * h
    t3 = u1 + k_dif * h
    d1 = div(p1 * t2, s1) - p2 * t3 * s1
    t4 = u2 + k_dif * h
    t5 = u2 - k_dif * h
    d2 = div(t4, s1) - t5 * s1

    if diffuse:
        h7 = div(c * t2, d1 * s1)
        h8 = div(-c * t3 * s1, d1)
        h9 = div(t4, d2 * s1)
        h10 = div(-t5 * s1, d2)
        down_dir = jnp.zeros_like(h9)
        down_dif = (h9 * s1 + div(h10, s1)) * (1.0 - gap) + gap
        albedo = (h7 + h8) * (1.0 - gap) + albedo_grd_dif * gap
        reflected_veg = albedo
        reflected_grd = jnp.zeros_like(albedo)
    else:
        h1 = -d * p4 - c * f
        t6 = d - div(h1 * p3, sigma)
        t7 = (d - c - div(h1, sigma) * (u1 + kk)) * s2
        h2 = div(div(t6 * t2, s1) - p2 * t7, d1)
        h3 = -div(t6 * t3 * s1 - p1 * t7, d1)
        h4 = -f * p3 - c * d
        t8 = div(h4, sigma)
        t9 = (u3 - t8 * (u2 - kk)) * s2
        h5 = -div(div(t8 * t4, s1) + t9, d2)
        h6 = div(t8 * t5 * s1 + t9, d2)
        down_dir = s2 * (1.0 - gap) + gap
        down_dif = (div(h4 * s2, sigma) + h5 * s1 + div(h6, s1)) * (1.0 - gap)
        reflected_veg = (div(h1, sigma) + h2 + h3) * (1.0 - gap)
        reflected_grd = albedo_grd_dir * gap
        albedo = reflected_veg + reflected_grd
    absorbed = 1.0 - albedo - (1.0 - albedo_grd_dir) * down_dir - (1.0 - albedo_grd_dif) * down_dif
    return TwoStream(
        albedo=albedo,
        absorbed_veg=absorbed,
        down_dir=down_dir,
        down_dif=down_dif,
        reflected_veg=reflected_veg,
        reflected_grd=reflected_grd,
        proj_area=proj[..., 0],
    )


class AlbedoOutputs(eqx.Module):
    """Output of :func:`surface_albedo`. Band fields are (..., 2) (vis, NIR); all zero when the sun is down.

    ``albedo_dir``, ``albedo_dif`` surface albedo for direct and diffuse light (AlbedoSfcDir/Dif);
    ``albedo_grd_dir``, ``albedo_grd_dif`` ground albedo; ``albedo_soil`` soil albedo; ``albedo_snow_dir``,
    ``albedo_snow_dif`` snow albedo; ``direct`` and ``diffuse`` the :class:`TwoStream` per-unit fluxes;
    ``fraction_sunlit``, ``fraction_shade`` sunlit and shaded fractions of the canopy, -; ``lai_sunlit``,
    ``lai_shade`` sunlit and shaded leaf area index, m2 m-2; ``snow_age`` updated non-dimensional snow age
    (state for the next step), -; ``snow_age_factor`` age / (age + 1), -.
    """

    albedo_dir: jax.Array
    albedo_dif: jax.Array
    albedo_grd_dir: jax.Array
    albedo_grd_dif: jax.Array
    albedo_soil: jax.Array
    albedo_snow_dir: jax.Array
    albedo_snow_dif: jax.Array
    direct: TwoStream
    diffuse: TwoStream
    fraction_sunlit: jax.Array
    fraction_shade: jax.Array
    lai_sunlit: jax.Array
    lai_shade: jax.Array
    snow_age: jax.Array
    snow_age_factor: jax.Array


def surface_albedo(
    *,
    cos_zenith: jax.Array,
    lai_eff: jax.Array,
    sai_eff: jax.Array,
    veg_frac: jax.Array,
    snow_cover_frac: jax.Array,
    swe_mm: jax.Array,
    swe_prev_mm: jax.Array,
    snow_age: jax.Array,
    t_grd_k: jax.Array,
    t_canopy_k: jax.Array,
    canopy_wet_frac: jax.Array,
    smc_top: jax.Array,
    params: RadiationParams,
    options: RadiationOptions,
    dt_s: float,
) -> AlbedoOutputs:
    """Surface albedo, per-unit canopy fluxes and sunlit/shaded leaf area (Noah-MP ``SurfaceAlbedo``).

    Inputs (start-of-step values, Noah-MP names in brackets): ``cos_zenith`` (CosSolarZenithAngle);
    ``lai_eff``, ``sai_eff`` m2 m-2 and ``veg_frac`` - from :func:`dam.physics.phenology.phenology`;
    ``snow_cover_frac`` - from :func:`snow_cover_fraction`; ``swe_mm``, ``swe_prev_mm``, ``snow_age``,
    ``t_grd_k`` see :func:`snow_aging_bats`; ``t_canopy_k`` canopy temperature, K; ``canopy_wet_frac`` wetted
    fraction of the canopy after this step's interception, - (CanopyWetFrac); ``smc_top`` total moisture of
    soil layer 1, m3 m-3; ``dt_s`` the time step, s. The snow age advances on every step, also at night.
    """
    age = snow_aging_bats(swe_mm, swe_prev_mm, snow_age, t_grd_k, params, dt_s)
    day = cos_zenith > 0.0
    cosz = safe_where(day, cos_zenith, 1.0)  # evaluated branch only where the sun is up
    vai = lai_eff + sai_eff
    p = params
    vai_floor = jnp.maximum(vai, MIN_THR)
    w_leaf = div(lai_eff, vai_floor)[..., None]
    w_stem = div(sai_eff, vai_floor)[..., None]
    rho = jnp.maximum(p.rho_leaf * w_leaf + p.rho_stem * w_stem, MIN_THR)
    tau = jnp.maximum(p.tau_leaf * w_leaf + p.tau_stem * w_stem, MIN_THR)

    snow_dir, snow_dif = snow_albedo_bats(cosz, age.age_factor, p)
    soil, grd_dir, grd_dif = ground_albedo(smc_top, snow_cover_frac, snow_dir, snow_dif, p)
    common = dict(
        cos_zenith=cosz,
        vai=vai,
        veg_frac=veg_frac,
        rho_veg=rho,
        tau_veg=tau,
        albedo_grd_dir=grd_dir,
        albedo_grd_dif=grd_dif,
        t_canopy_k=t_canopy_k,
        canopy_wet_frac=canopy_wet_frac,
        params=p,
        canopy_gap=options.canopy_gap,
    )
    direct = canopy_two_stream(False, **common)
    diffuse = canopy_two_stream(True, **common)

    k_ext = div(direct.proj_area, cosz) * jnp.sqrt(1.0 - rho[..., 0] - tau[..., 0])
    sunlit = div(1.0 - jnp.exp(-k_ext * vai), jnp.maximum(k_ext * vai, MIN_THR))
    sunlit = jnp.where(sunlit < SUNLIT_FRAC_MIN, 0.0, sunlit)

    def night(x):
        return jnp.where(day[..., None] if x.ndim > day.ndim else day, x, 0.0)

    sunlit = night(sunlit)
    shade = 1.0 - sunlit
    return AlbedoOutputs(
        albedo_dir=night(direct.albedo),
        albedo_dif=night(diffuse.albedo),
        albedo_grd_dir=night(grd_dir),
        albedo_grd_dif=night(grd_dif),
        albedo_soil=night(soil),
        albedo_snow_dir=night(snow_dir),
        albedo_snow_dif=night(snow_dif),
        direct=jax.tree_util.tree_map(night, direct),
        diffuse=jax.tree_util.tree_map(night, diffuse),
        fraction_sunlit=sunlit,
        fraction_shade=shade,
        lai_sunlit=lai_eff * sunlit,
        lai_shade=lai_eff * shade,
        snow_age=age.snow_age,
        snow_age_factor=age.age_factor,
    )
