"""Vegetation phenology from the monthly table and burial of the canopy by snow (Noah-MP ``PhenologyMain``).

Only the prescribed-vegetation path is ported: ``DYNAMIC_VEG_OPTION`` 4 (monthly table LAI/SAI, vegetation
fraction = annual maximum SHDMAX), with the table interpolation of options 1/3/4. Non-vegetated points (water,
barren, ice, urban) are the caller's business: give them zero monthly LAI/SAI.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div

# Constants of PhenologyMain (Noah-MP literals; float64 build).
MONTHS_PER_YEAR = 12.0
MIN_AREA_INDEX = 0.05  # LAI/SAI below this are set to 0 (m2 m-2)
MIN_CANOPY_DEPTH_M = 1.0e-6  # floor of the canopy depth in the burial fraction, m
SHORT_CANOPY_TOP_M = 1.0  # canopies with top <= this use the exponential burial depth, m
SHORT_CANOPY_SNOW_SCALE_M = 0.2  # e-folding snow depth of that burial depth, m
SHORT_CANOPY_SNOW_CAP_M = 10.0  # snow depth cap inside that exponential, m
MIN_VEG_FRAC = 0.05  # vegetation fractions <= this are raised to it


class PhenologyParams(eqx.Module):
    """Parameters of :func:`phenology` (one vegetation type; fields broadcast over columns).

    ``lai_monthly`` (..., 12) and ``sai_monthly`` (..., 12) one-sided monthly leaf and stem area index,
    m2 m-2 (table LAI_JAN.. / SAI_JAN..); ``canopy_top_m`` and ``canopy_bottom_m`` canopy top and bottom
    heights, m (HVT, HVB); ``veg_frac_max`` annual maximum vegetation fraction, - (SHDMAX / 100);
    ``t_min_photosynthesis_k`` minimum canopy temperature of the growing season, K (TMIN);
    ``latitude_deg`` latitude, degrees north (the southern hemisphere shifts the table by half a year).
    """

    lai_monthly: jax.Array
    sai_monthly: jax.Array
    canopy_top_m: jax.Array
    canopy_bottom_m: jax.Array
    veg_frac_max: jax.Array
    t_min_photosynthesis_k: jax.Array
    latitude_deg: jax.Array


class PhenologyOutputs(eqx.Module):
    """Vegetation state of one step.

    ``lai``, ``sai`` leaf and stem area index from the table, m2 m-2 (LeafAreaIndex, StemAreaIndex);
    ``lai_eff``, ``sai_eff`` the same after burial by snow, m2 m-2 (LeafAreaIndEff, StemAreaIndEff);
    ``veg_frac`` vegetation fraction, - (VegFrac; 0 where lai_eff + sai_eff = 0);
    ``buried_frac`` fraction of the canopy buried by snow, - (CanopyFracSnowBury);
    ``growing_season`` 1 when the canopy is warmer than TMIN, else 0 (IndexGrowSeason, used by Ball-Berry).
    """

    lai: jax.Array
    sai: jax.Array
    lai_eff: jax.Array
    sai_eff: jax.Array
    veg_frac: jax.Array
    buried_frac: jax.Array
    growing_season: jax.Array


def _month_value(monthly: jax.Array, index: jax.Array) -> jax.Array:
    """``monthly[..., index - 1]`` for a 1-based month index of the batch shape."""
    idx = jnp.broadcast_to(index - 1, jnp.broadcast_shapes(index.shape, monthly.shape[:-1]))
    table = jnp.broadcast_to(monthly, idx.shape + monthly.shape[-1:])
    return jnp.take_along_axis(table, idx[..., None], axis=-1)[..., 0]


def phenology(
    day_of_year: jax.Array,
    snow_depth_m: jax.Array,
    canopy_temperature_k: jax.Array,
    params: PhenologyParams,
    days_in_year: float | jax.Array = 365.0,
) -> PhenologyOutputs:
    """LAI, SAI, their snow-buried effective values and the vegetation fraction (Noah-MP ``PhenologyMain``).

    Parameters
    ----------
    day_of_year
        Julian day of the step, days (Noah-MP DayJulianInYear: day-of-year - 1 + fraction of day).
    snow_depth_m
        Snow depth at the start of the step, m.
    canopy_temperature_k
        Canopy temperature at the start of the step, K (only for ``growing_season``).
    params
        :class:`PhenologyParams`.
    days_in_year
        Number of days in the year (365 or 366).

    Notes
    -----
    The monthly values are interpolated linearly between mid-months, as Noah-MP does: with
    ``m = 12 d / N``, month ``i = int(m + 0.5)`` (0 wraps to 12) and ``i + 1`` (13 wraps to 1) weigh
    ``(i + 0.5 - m)`` and ``1 - that``.
    """
    p = params
    day = jnp.asarray(day_of_year)
    n_days = jnp.asarray(days_in_year, day.dtype)
    day = jnp.where(p.latitude_deg >= 0.0, day, jnp.mod(day + 0.5 * n_days, n_days))
    month = div(MONTHS_PER_YEAR * day, n_days)
    month1 = jnp.floor(month + 0.5).astype(jnp.int32)  # Fortran integer truncation of a non-negative real
    weight1 = (month1 + 0.5) - month
    weight2 = 1.0 - weight1
    month2 = month1 + 1
    month1 = jnp.where(month1 < 1, 12, month1)
    month2 = jnp.where(month2 > 12, 1, month2)
    lai = weight1 * _month_value(p.lai_monthly, month1) + weight2 * _month_value(p.lai_monthly, month2)
    sai = weight1 * _month_value(p.sai_monthly, month1) + weight2 * _month_value(p.sai_monthly, month2)
    sai = jnp.where(sai < MIN_AREA_INDEX, 0.0, sai)
    lai = jnp.where((lai < MIN_AREA_INDEX) | (sai == 0.0), 0.0, lai)

    # Burial by snow: linear in the snow depth between bottom and top, or for short canopies (top <= 1 m)
    # relative to a critical depth that shrinks with deeper snow.
    depth = p.canopy_top_m - p.canopy_bottom_m
    buried_thickness = jnp.minimum(jnp.maximum(snow_depth_m - p.canopy_bottom_m, 0.0), depth)
    buried = div(buried_thickness, jnp.maximum(MIN_CANOPY_DEPTH_M, depth))
    short = (p.canopy_top_m > 0.0) & (p.canopy_top_m <= SHORT_CANOPY_TOP_M)
    critical = p.canopy_top_m * jnp.exp(-jnp.minimum(snow_depth_m, SHORT_CANOPY_SNOW_CAP_M) / SHORT_CANOPY_SNOW_SCALE_M)
    critical_safe = jnp.where(short & (critical > 0.0), critical, 1.0)
    buried = jnp.where(short, div(jnp.minimum(snow_depth_m, critical_safe), critical_safe), buried)

    lai_eff = lai * (1.0 - buried)
    sai_eff = sai * (1.0 - buried)
    sai_eff = jnp.where(sai_eff < MIN_AREA_INDEX, 0.0, sai_eff)
    lai_eff = jnp.where((lai_eff < MIN_AREA_INDEX) | (sai_eff == 0.0), 0.0, lai_eff)

    growing = jnp.where(canopy_temperature_k > p.t_min_photosynthesis_k, 1.0, 0.0)

    veg_frac = jnp.broadcast_to(p.veg_frac_max, jnp.shape(lai_eff)).astype(lai_eff.dtype)
    veg_frac = jnp.where(veg_frac <= MIN_VEG_FRAC, MIN_VEG_FRAC, veg_frac)
    veg_frac = jnp.where((lai_eff + sai_eff) == 0.0, 0.0, veg_frac)
    return PhenologyOutputs(
        lai=lai,
        sai=sai,
        lai_eff=lai_eff,
        sai_eff=sai_eff,
        veg_frac=veg_frac,
        buried_frac=buried,
        growing_season=growing.astype(lai.dtype),
    )
