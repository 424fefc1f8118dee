"""Types of Noah-MP's snowpack: the prognostic state (up to three snow layers over the soil), its parameters and
its static options, plus the slot helpers shared by the snow processes.

Snow layers live in fixed-size arrays of ``N_SNOW_LAYERS`` = 3 slots (last axis), in Noah-MP's index order
-2, -1, 0: slot 2 (index 0) is always the bottom snow layer, next to the soil, and with ``n`` layers the
active slots are the last ``n`` (the top layer is slot ``3 - n``). Inactive slots hold zeros, as Noah-MP's
arrays do. ``n_layers`` (Noah-MP ``-NumSnowLayerNeg``) is part of the state; every process is written with
masks and selects on it, so a batch of columns with different numbers of layers runs as one vectorised step.
"""

from __future__ import annotations

from typing import Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

N_SNOW_LAYERS = 3  # Noah-MP NumSnowLayerMax
SLOTS = tuple(range(N_SNOW_LAYERS))

SnowCompaction = Literal["ar24", "anderson76"]
SnowConductivity = Literal["stieglitz", "anderson76", "constant", "verseghy91", "yen81"]
SnowLayering = Literal["noahmp", "none"]


class SnowState(eqx.Module):
    """Prognostic snowpack of a column (leading batch axes ``...``).

    ``swe_mm`` snow water equivalent, mm (with layers: the sum of their ice and liquid at the end of the last
    step, Noah-MP SNEQV); ``depth_m`` snow depth, m (SNOWH); ``age`` BATS non-dimensional snow age, -
    (TAUSS); ``swe_prev_mm`` SWE at the start of the last step's water balance, after its thin-snow melt,
    mm (SNEQVO, for snow aging); ``n_layers`` number of snow layers 0..3 (-ISNOW; an integer array);
    ``t_k`` (..., 3) layer temperature, K (TSNO); ``ice_mm`` / ``liq_mm`` (..., 3) layer ice and liquid
    water, mm (SNICE, SNLIQ); ``dz_m`` (..., 3) layer thickness, m. Slots as in the module docstring; zeros
    where a layer does not exist. A pack thinner than 2.5 cm has no layer (``n_layers`` = 0): then only
    ``swe_mm`` and ``depth_m`` describe it.
    """

    swe_mm: jax.Array
    depth_m: jax.Array
    age: jax.Array
    swe_prev_mm: jax.Array
    n_layers: jax.Array
    t_k: jax.Array
    ice_mm: jax.Array
    liq_mm: jax.Array
    dz_m: jax.Array

    @classmethod
    def without_layers(cls, swe_mm, depth_m, age=0.0, swe_prev_mm=0.0) -> SnowState:
        """A snowpack without snow layers (thin snow, or none), broadcast to the shape of ``swe_mm``."""
        swe = jnp.asarray(swe_mm)
        shape, dtype = swe.shape, swe.dtype if jnp.issubdtype(swe.dtype, jnp.floating) else jnp.float64
        f = lambda x: jnp.broadcast_to(jnp.asarray(x, dtype), shape)  # noqa: E731
        zeros = jnp.zeros((*shape, N_SNOW_LAYERS), dtype)
        return cls(
            swe_mm=f(swe), depth_m=f(depth_m), age=f(age), swe_prev_mm=f(swe_prev_mm),
            n_layers=jnp.zeros(shape, jnp.int32), t_k=zeros, ice_mm=zeros, liq_mm=zeros, dz_m=zeros,
        )  # fmt: skip

    @classmethod
    def initial(cls, swe_mm, depth_m, t_grd_k, age=0.0) -> SnowState:
        """The snowpack Noah-MP's initialisation builds from a SWE (mm), a depth (m) and the ground temperature
        (K) (HRLDAS ``NoahmpSnowInitMain``): no layer below 2.5 cm; one up to 5 cm; two up to 25 cm (halves up
        to 10 cm, then a 5 cm top layer); three above (5 cm, then halves of the rest up to 45 cm, then 20 cm and
        the rest). Layers are all ice, at the ground temperature, with the pack's bulk density."""
        swe, depth = jnp.asarray(swe_mm), jnp.asarray(depth_m)
        pack = cls.without_layers(swe, depth, age)
        dtype = pack.swe_mm.dtype
        h = pack.depth_m
        one = (h >= 0.025) & (h <= 0.05)
        two_even = (h > 0.05) & (h <= 0.10)
        two = (h > 0.10) & (h <= 0.25)
        three_even = (h > 0.25) & (h <= 0.45)
        three = h > 0.45
        zero = jnp.zeros_like(h)
        dz_top = jnp.where(two_even, h / 2.0, jnp.where(two | three_even | three, 0.05, zero))
        dz_mid = jnp.where(three_even, 0.5 * (h - 0.05), jnp.where(three, 0.20, zero))
        dz_bottom = jnp.select(
            [one, two_even, two, three_even, three], [h, h / 2.0, h - 0.05, 0.5 * (h - 0.05), h - 0.20 - 0.05], zero
        )
        dz = jnp.stack([jnp.where(three_even | three, dz_top, 0.0), jnp.where(three_even | three, dz_mid, dz_top),
                        dz_bottom], axis=-1)  # fmt: skip
        n = jnp.select([one, two_even | two, three_even | three], [1, 2, 3], 0).astype(jnp.int32)
        active = layer_mask(n)
        density = jnp.where(h > 0.0, pack.swe_mm / jnp.where(h > 0.0, h, 1.0), 0.0)
        t = jnp.broadcast_to(jnp.asarray(t_grd_k, dtype), h.shape)[..., None]
        layered = n > 0
        return cls(
            swe_mm=pack.swe_mm,
            depth_m=pack.depth_m,
            age=pack.age,
            swe_prev_mm=pack.swe_prev_mm,
            n_layers=n,
            t_k=jnp.where(active, t, 0.0),
            ice_mm=jnp.where(active, 1.0 * dz * density[..., None], 0.0),
            liq_mm=jnp.zeros_like(dz),
            dz_m=jnp.where(active & layered[..., None], dz, 0.0),
        )

    @property
    def layer_water_mm(self) -> jax.Array:
        """Ice plus liquid water held in the snow layers, mm (0 without layers)."""
        return jnp.sum(jnp.where(layer_mask(self.n_layers), self.ice_mm + self.liq_mm, 0.0), axis=-1)

    @property
    def water_mm(self) -> jax.Array:
        """Water stored in the snowpack, mm: the layers' ice and liquid, or the SWE of a pack without layers."""
        return jnp.where(self.n_layers > 0, self.layer_water_mm, self.swe_mm)


class SnowpackParams(eqx.Module):
    """Snowpack parameters (Noah-MP names; NoahmpTable.TBL global section in brackets).

    Liquid water: ``liq_hold_cap`` holding capacity of the pore space, m3 m-3 (SnowLiqHoldCap, SSI);
    ``liq_frac_max`` largest liquid fraction of a layer's mass, - (SnowLiqFracMax, SNLIQMAXFRAC);
    ``liq_release_fac_ps`` release time-scale factor of the bottom layer, s-1 (SnowLiqReleaseFac,
    SNOW_RET_FAC). Compaction (Anderson 1976; Abolafia-Rosenzweig et al. 2024): ``burden_fac`` overburden
    parameter of option 1, m3 kg-1 (SnowCompactBurdenFac, C2_SNOWCOMPACT); ``aging_fac1`` s-1, ``aging_fac2``
    K-1, ``aging_fac3`` - destructive-metamorphism factors (C3, C4, C5_SNOWCOMPACT); ``aging_density_max``
    kg m-3 (DM_SNOWCOMPACT); ``viscosity`` snow viscosity coefficient, kg s m-2 (ETA0_SNOWCOMPACT);
    ``ar24_slope`` m3 kg-1 K-1 and ``ar24_intercept`` m3 kg-1 of the air-temperature fit of the overburden
    parameter (SNOWCOMPACTm_AR24, SNOWCOMPACTb_AR24); ``ar24_floor_high`` / ``ar24_floor_mid`` /
    ``ar24_floor_low`` its lower bounds for surface pressure >= 85 kPa / 80-85 kPa / < 80 kPa, m3 kg-1
    (SNOWCOMPACT_P1/P2/P3_AR24); ``ar24_cap`` its upper bound, m3 kg-1 (SNOWCOMPACT_Up_AR24).
    ``swe_max_mm`` largest SWE before the excess leaves as glacier flow, mm (SnoWatEqvMaxGlacier, SWEMAXGLA).
    """

    liq_hold_cap: jax.Array
    liq_frac_max: jax.Array
    liq_release_fac_ps: jax.Array
    burden_fac: jax.Array
    aging_fac1: jax.Array
    aging_fac2: jax.Array
    aging_fac3: jax.Array
    aging_density_max: jax.Array
    viscosity: jax.Array
    ar24_slope: jax.Array
    ar24_intercept: jax.Array
    ar24_floor_high: jax.Array
    ar24_floor_mid: jax.Array
    ar24_floor_low: jax.Array
    ar24_cap: jax.Array
    swe_max_mm: jax.Array


class SnowpackOptions(eqx.Module):
    """Static snowpack choices: ``compaction`` = OPT_COMPACT (2 ``"ar24"`` Abolafia-Rosenzweig et al. 2024,
    the v5.2 default; 1 ``"anderson76"``); ``conductivity`` = OPT_TKSNO (1 ``"stieglitz"``, 2
    ``"anderson76"``, 3 ``"constant"``, 4 ``"verseghy91"``, 5 ``"yen81"``). Snow albedo is BATS (ALB=1;
    :mod:`dam.physics.albedo`), without shortwave penetration into the pack (which only SNICAR has).

    ``layers``: ``"noahmp"`` builds snow layers from 2.5 cm of snow, as Noah-MP does; ``"none"`` keeps every pack
    on Noah-MP's path without layers whatever its depth (insulation through the blend with soil layer 1, melt by
    that layer's excess energy, no compaction). Snow layers a few cm thick are coupled explicitly to the surface
    energy balance, which is unstable at daily steps (a 5 cm layer's heat capacity is ~100x smaller than a day's
    surface flux change per kelvin): :func:`dam.site_run.setup_station` chooses ``"none"`` for steps longer than
    3 h."""

    compaction: SnowCompaction = eqx.field(static=True, default="ar24")
    conductivity: SnowConductivity = eqx.field(static=True, default="stieglitz")
    layers: SnowLayering = eqx.field(static=True, default="noahmp")

    def __check_init__(self) -> None:
        for name, choices in (("compaction", SnowCompaction), ("conductivity", SnowConductivity),
                              ("layers", SnowLayering)):  # fmt: skip
            value = getattr(self, name)
            if value not in get_args(choices):
                raise ValueError(f"option {name}={value!r} is not one of {get_args(choices)}")


def layer_mask(n_layers: jax.Array) -> jax.Array:
    """(..., 3) True in the slots that hold a snow layer (the last ``n_layers``)."""
    slots = jnp.arange(N_SNOW_LAYERS)
    return slots >= (N_SNOW_LAYERS - jnp.asarray(n_layers)[..., None])


def top_mask(n_layers: jax.Array) -> jax.Array:
    """(..., 3) True in the slot of the top snow layer (none without layers)."""
    slots = jnp.arange(N_SNOW_LAYERS)
    return slots == (N_SNOW_LAYERS - jnp.asarray(n_layers)[..., None])


def pick(values: jax.Array, index: jax.Array) -> jax.Array:
    """``values[..., index]`` for a per-column slot ``index`` (an exact select, no arithmetic)."""
    out = values[..., 0]
    for s in SLOTS[1:]:
        out = jnp.where(index == s, values[..., s], out)
    return out


def put(values: jax.Array, index: jax.Array, new: jax.Array, where: jax.Array | bool = True) -> jax.Array:
    """``values`` with ``values[..., index] = new`` where ``where`` holds."""
    hit = (jnp.arange(N_SNOW_LAYERS) == jnp.asarray(index)[..., None]) & jnp.asarray(where)[..., None]
    return jnp.where(hit, jnp.asarray(new)[..., None], values)


def barrier(*values):
    """``lax.optimization_barrier`` on a group of values: the unrolled layer loops of the snow processes share
    many subexpressions, which XLA's fusion would otherwise duplicate into every consumer (compile times of
    minutes). Values are unchanged."""
    return lax.optimization_barrier(values)
