"""Derived air state and precipitation phase at the reference height (Noah-MP ``AtmosForcingMod``,
``ProcessAtmosForcing``).

Units are SI; precipitation rates are mm s-1 (= kg m-2 s-1), as in Noah-MP.
"""

from __future__ import annotations

from typing import Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import safe_divide
from .constants import EPS_Q, ONE_MINUS_EPS, R_DRY, TFRZ

# Constants of Noah-MP ConstantDefineMod used here (float64 literals as the reference build uses them).
CONV_FRACTION = 0.10  # convective share of the total precipitation (all PCP options but 4)
LARGE_SCALE_FRACTION = 0.90
DEFAULT_DIRECT_FRACTION = 0.7  # used when the forcing's fraction is outside [0, 1]
DEFAULT_VISIBLE_FRACTION = 0.5
MIN_WIND = 1.0  # lower bound of the reference-height wind speed, m s-1
# Jordan (1991) rain/snow partition and Hedstrom & Pomeroy (1998) fresh-snow density.
JORDAN_ALL_RAIN_DT = 2.5  # K above TFRZ
JORDAN_ALL_SNOW_DT = 0.5
JORDAN_RAMP_DT = 2.0
JORDAN_RAMP_A = -54.632
JORDAN_RAMP_B = 0.2
JORDAN_MIXED = 0.6
BATS_SNOW_DT = 2.2
SNOW_DENSITY_A = 67.92  # kg m-3
SNOW_DENSITY_B = 51.25  # kg m-3
SNOW_DENSITY_T = 2.59  # K

RainSnowPartition = Literal["jordan91", "bats", "freezing_point"]


class AtmosOptions(eqx.Module):
    """Static choice of the rain/snow partition (Noah-MP OPT_SNF): ``"jordan91"`` = 1, ``"bats"`` = 2,
    ``"freezing_point"`` = 3. Options 4 (microphysics) and 5 (wet bulb) are not ported."""

    rain_snow: RainSnowPartition = eqx.field(static=True, default="jordan91")

    def __check_init__(self) -> None:
        if self.rain_snow not in get_args(RainSnowPartition):
            raise ValueError(f"option rain_snow={self.rain_snow!r} is not one of {get_args(RainSnowPartition)}")


DEFAULT_ATMOS_OPTIONS = AtmosOptions()


class AtmosParams(eqx.Module):
    """``snowfall_density_max``: upper bound of the fresh-snow density, kg m-3 (SNOWDEN_MAX, 120)."""

    snowfall_density_max: jax.Array


class AtmosState(eqx.Module):
    """Forcing of one step and the air state derived from it (all (...,) unless stated).

    Raw forcing: ``t_air`` K, ``q_air`` kg kg-1, ``p_air`` Pa (reference height), ``p_sfc`` Pa, ``u``/``v``
    m s-1, ``lw_down`` W m-2. Derived: ``theta`` potential temperature, K (equals ``t_air``: Noah-MP
    references it to the reference-height pressure itself); ``e_air`` vapour pressure, Pa; ``rho_air`` air
    density, kg m-3; ``wind`` wind speed, >= 1 m s-1; ``sw_dir``/``sw_dif`` (..., 2) direct/diffuse SW in the
    visible and NIR bands, W m-2 (0 when cos zenith <= 0); ``precip`` total, ``rain`` and ``snow`` (liquid
    equivalent) rates, mm s-1; ``precip_conv``/``precip_large_scale`` mm s-1; ``precip_area_frac`` fraction
    of the area receiving precipitation (-); ``frozen_frac`` frozen fraction of precipitation (-);
    ``snowfall_density`` bulk density of new snow, kg m-3.
    """

    t_air: jax.Array
    q_air: jax.Array
    p_air: jax.Array
    p_sfc: jax.Array
    u: jax.Array
    v: jax.Array
    lw_down: jax.Array
    theta: jax.Array
    e_air: jax.Array
    rho_air: jax.Array
    wind: jax.Array
    sw_dir: jax.Array
    sw_dif: jax.Array
    precip: jax.Array
    rain: jax.Array
    snow: jax.Array
    precip_conv: jax.Array
    precip_large_scale: jax.Array
    precip_area_frac: jax.Array
    frozen_frac: jax.Array
    snowfall_density: jax.Array


def _frozen_fraction(t_air: jax.Array, option: RainSnowPartition) -> jax.Array:
    if option == "jordan91":
        ramp = 1.0 - (JORDAN_RAMP_A + JORDAN_RAMP_B * t_air)
        cold = jnp.where(
            t_air <= TFRZ + JORDAN_ALL_SNOW_DT, 1.0, jnp.where(t_air <= TFRZ + JORDAN_RAMP_DT, ramp, JORDAN_MIXED)
        )
        return jnp.where(t_air > TFRZ + JORDAN_ALL_RAIN_DT, 0.0, cold)
    if option == "bats":
        return jnp.where(t_air >= TFRZ + BATS_SNOW_DT, 0.0, 1.0)
    return jnp.where(t_air >= TFRZ, 0.0, 1.0)


def atmos_forcing(
    t_air: jax.Array,
    q_air: jax.Array,
    p_air: jax.Array,
    u: jax.Array,
    v: jax.Array,
    lw_down: jax.Array,
    sw_down: jax.Array,
    cos_zenith: jax.Array,
    precip_conv: jax.Array,
    precip_nonconv: jax.Array,
    precip_shconv: jax.Array,
    params: AtmosParams,
    options: AtmosOptions = DEFAULT_ATMOS_OPTIONS,
    *,
    p_sfc: jax.Array | None = None,
    sw_dir_frac: jax.Array | float = DEFAULT_DIRECT_FRACTION,
    sw_vis_frac: jax.Array | float = DEFAULT_VISIBLE_FRACTION,
) -> AtmosState:
    """Noah-MP ``ProcessAtmosForcing``: air state, SW band split, rain/snow partition, new-snow density.

    Precipitation components are rates in mm s-1 (kg m-2 s-1). ``p_sfc`` defaults to ``p_air``.
    """
    dtype = jnp.result_type(t_air, float)
    t_air = jnp.asarray(t_air, dtype)
    p_sfc = p_air if p_sfc is None else p_sfc
    # Noah-MP raises T to (p/p)**(R/cp) = 1 exactly: the potential temperature is the air temperature.
    theta = t_air * 1.0
    e_air = q_air * p_air / (EPS_Q + ONE_MINUS_EPS * q_air)
    rho_air = (p_air - ONE_MINUS_EPS * e_air) / (R_DRY * t_air)

    dir_frac = jnp.where((sw_dir_frac >= 0.0) & (sw_dir_frac <= 1.0), sw_dir_frac, DEFAULT_DIRECT_FRACTION)
    vis_frac = jnp.where((sw_vis_frac >= 0.0) & (sw_vis_frac <= 1.0), sw_vis_frac, DEFAULT_VISIBLE_FRACTION)
    sw = jnp.where(cos_zenith <= 0.0, 0.0, sw_down)
    sw_dir = jnp.stack([sw * dir_frac * vis_frac, sw * dir_frac * (1.0 - vis_frac)], axis=-1)
    sw_dif = jnp.stack([sw * (1.0 - dir_frac) * vis_frac, sw * (1.0 - dir_frac) * (1.0 - vis_frac)], axis=-1)

    precip = precip_conv + precip_nonconv + precip_shconv
    conv = CONV_FRACTION * precip
    large = LARGE_SCALE_FRACTION * precip
    area = safe_divide(conv + large, 10.0 * conv + large)
    area = jnp.where(conv + large > 0.0, area, 0.0)

    frozen = _frozen_fraction(t_air, options.rain_snow)
    snow_density = jnp.minimum(
        params.snowfall_density_max, SNOW_DENSITY_A + SNOW_DENSITY_B * jnp.exp((t_air - TFRZ) / SNOW_DENSITY_T)
    )
    rain = precip * (1.0 - frozen)
    snow = precip * frozen

    speed2 = u * u + v * v
    positive = speed2 > 0.0
    wind = jnp.maximum(jnp.where(positive, jnp.sqrt(jnp.where(positive, speed2, 1.0)), 0.0), MIN_WIND)

    shape = jnp.shape(t_air)
    full = lambda x: jnp.broadcast_to(jnp.asarray(x, dtype), shape)  # noqa: E731
    return AtmosState(
        t_air=t_air,
        q_air=full(q_air),
        p_air=full(p_air),
        p_sfc=full(p_sfc),
        u=full(u),
        v=full(v),
        lw_down=full(lw_down),
        theta=theta,
        e_air=full(e_air),
        rho_air=full(rho_air),
        wind=full(wind),
        sw_dir=sw_dir,
        sw_dif=sw_dif,
        precip=full(precip),
        rain=full(rain),
        snow=full(snow),
        precip_conv=full(conv),
        precip_large_scale=full(large),
        precip_area_frac=full(area),
        frozen_frac=full(frozen),
        snowfall_density=full(snow_density),
    )
