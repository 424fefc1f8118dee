"""Absorbed and reflected shortwave, PAR of sunlit and shaded leaves, and surface emissivity.

Ports Noah-MP ``SurfaceRadiation`` and ``SurfaceEmissivity`` (soil surface, no SNICAR), with the shortwave
split of ``ProcessAtmosForcing`` and the albedo of :func:`dam.physics.albedo.surface_albedo`. Fluxes are per
unit grid area, W m-2; the canopy gaps (1 - VegFrac with RADIATIVE_TRANSFER_OPTION 3) are inside the
two-stream fluxes, so ``sav_wm2`` and ``sag_wm2`` are grid means, as in Noah-MP.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div, safe_divide
from .albedo import MIN_THR, AlbedoOutputs, RadiationOptions, RadiationParams, surface_albedo

EMISSIVITY_VAI_SCALE = 1.0  # canopy emissivity 1 - exp(-VAI / 1.0)


class RadiationOutputs(eqx.Module):
    """Shortwave of one step (Noah-MP names in brackets). W m-2 per unit grid area unless stated.

    ``sav_wm2`` absorbed by the canopy (RadSwAbsVeg); ``sag_wm2`` absorbed by the ground (RadSwAbsGrd);
    ``fsa_wm2`` total absorbed (RadSwAbsSfc); ``fsr_wm2`` reflected (RadSwReflSfc); ``fsr_veg_wm2``,
    ``fsr_grd_wm2`` reflected by the canopy and by the ground through the gaps (RadSwReflVeg, RadSwReflGrd);
    ``albedo`` broadband surface albedo fsr / sw_down, - (AlbedoSfc; 0 where no shortwave reaches the
    surface, where Noah-MP writes -9999); ``par_sunlit_wm2``, ``par_shade_wm2`` PAR absorbed per unit
    sunlit and shaded leaf area, W m-2 of leaf (RadPhotoActAbsSunlit/Shade; for the stomata);
    ``par_canopy_wm2`` PAR absorbed by the canopy leaves, W m-2 (RadPhotoActAbsCan); ``lai_sunlit``,
    ``lai_shade`` m2 m-2 and ``fraction_sunlit`` - of the canopy; ``snow_age`` non-dimensional snow age to
    carry to the next step (SnowAgeNondim), -; ``bands`` the full :class:`AlbedoOutputs`.
    """

    sav_wm2: jax.Array
    sag_wm2: jax.Array
    fsa_wm2: jax.Array
    fsr_wm2: jax.Array
    fsr_veg_wm2: jax.Array
    fsr_grd_wm2: jax.Array
    albedo: jax.Array
    par_sunlit_wm2: jax.Array
    par_shade_wm2: jax.Array
    par_canopy_wm2: jax.Array
    lai_sunlit: jax.Array
    lai_shade: jax.Array
    fraction_sunlit: jax.Array
    snow_age: jax.Array
    bands: AlbedoOutputs


def shortwave_split(
    sw_down_wm2: jax.Array, cos_zenith: jax.Array, sw_dir_frac: jax.Array | float, sw_vis_frac: jax.Array | float
) -> tuple:
    """Direct and diffuse incoming shortwave per band, (..., 2) each, W m-2 (Noah-MP ``ProcessAtmosForcing``).

    No shortwave enters when ``cos_zenith <= 0`` (Noah-MP zeroes the forcing).
    """
    sw = jnp.where(cos_zenith <= 0.0, 0.0, sw_down_wm2)
    dir_frac = jnp.asarray(sw_dir_frac, sw.dtype)  # the fractions follow the precision of the flux
    vis_frac = jnp.asarray(sw_vis_frac, sw.dtype)
    direct = jnp.stack([sw * dir_frac * vis_frac, sw * dir_frac * (1.0 - vis_frac)], axis=-1)
    diffuse = jnp.stack([sw * (1.0 - dir_frac) * vis_frac, sw * (1.0 - dir_frac) * (1.0 - vis_frac)], axis=-1)
    return sw, direct, diffuse


def surface_radiation(
    *,
    cos_zenith: jax.Array,
    sw_down_wm2: jax.Array,
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
    sw_dir_frac: jax.Array | float = 0.7,
    sw_vis_frac: jax.Array | float = 0.5,
) -> RadiationOutputs:
    """Absorbed, reflected and PAR shortwave of a column (Noah-MP ``SurfaceAlbedo`` then ``SurfaceRadiation``).

    ``sw_down_wm2`` downward shortwave at the reference height, W m-2, split into ``sw_dir_frac`` direct
    and ``sw_vis_frac`` visible (HRLDAS fixes 0.7 and 0.5). The other inputs are those of
    :func:`dam.physics.albedo.surface_albedo` (start-of-step state; ``dt_s`` the time step, s).
    """
    a = surface_albedo(
        cos_zenith=cos_zenith,
        lai_eff=lai_eff,
        sai_eff=sai_eff,
        veg_frac=veg_frac,
        snow_cover_frac=snow_cover_frac,
        swe_mm=swe_mm,
        swe_prev_mm=swe_prev_mm,
        snow_age=snow_age,
        t_grd_k=t_grd_k,
        t_canopy_k=t_canopy_k,
        canopy_wet_frac=canopy_wet_frac,
        smc_top=smc_top,
        params=params,
        options=options,
        dt_s=dt_s,
    )
    sw, sw_dir, sw_dif = shortwave_split(sw_down_wm2, cos_zenith, sw_dir_frac, sw_vis_frac)
    abs_can_dir = sw_dir * a.direct.absorbed_veg
    abs_can_dif = sw_dif * a.diffuse.absorbed_veg
    down_dir = sw_dir * a.direct.down_dir
    down_dif = sw_dir * a.direct.down_dif + sw_dif * a.diffuse.down_dif
    abs_grd = down_dir * (1.0 - a.albedo_grd_dir) + down_dif * (1.0 - a.albedo_grd_dif)

    # Accumulate band by band in Noah-MP's order (the sums are not associative in floating point).
    zero = jnp.zeros_like(sw)
    sav, sag, fsa = zero, zero, zero
    for band in range(2):
        sav = sav + abs_can_dir[..., band] + abs_can_dif[..., band]
        fsa = fsa + abs_can_dir[..., band] + abs_can_dif[..., band]
        sag = sag + abs_grd[..., band]
        fsa = fsa + abs_grd[..., band]

    vai = lai_eff + sai_eff
    lai_frac = div(lai_eff, jnp.maximum(vai, MIN_THR))
    sunlit, shade = a.fraction_sunlit, a.fraction_shade
    lai_sun_floor = jnp.maximum(a.lai_sunlit, MIN_THR)
    lai_shade_floor = jnp.maximum(a.lai_shade, MIN_THR)
    has_sun = sunlit > 0.0
    par_sun = jnp.where(
        has_sun, div((abs_can_dir[..., 0] + sunlit * abs_can_dif[..., 0]) * lai_frac, lai_sun_floor), 0.0
    )
    par_shade = jnp.where(
        has_sun,
        div((shade * abs_can_dif[..., 0]) * lai_frac, lai_shade_floor),
        div((abs_can_dir[..., 0] + abs_can_dif[..., 0]) * lai_frac, lai_shade_floor),
    )

    refl = a.albedo_dir * sw_dir + a.albedo_dif * sw_dif
    fsr = refl[..., 0] + refl[..., 1]
    r_veg = a.direct.reflected_veg * sw_dir
    r_veg_dif = a.diffuse.reflected_veg * sw_dif
    fsr_veg = r_veg[..., 0] + r_veg_dif[..., 0] + r_veg[..., 1] + r_veg_dif[..., 1]
    r_grd = a.direct.reflected_grd * sw_dir
    r_grd_dif = a.diffuse.reflected_grd * sw_dif
    fsr_grd = r_grd[..., 0] + r_grd_dif[..., 0] + r_grd[..., 1] + r_grd_dif[..., 1]

    return RadiationOutputs(
        sav_wm2=sav,
        sag_wm2=sag,
        fsa_wm2=fsa,
        fsr_wm2=fsr,
        fsr_veg_wm2=fsr_veg,
        fsr_grd_wm2=fsr_grd,
        albedo=safe_divide(fsr, sw, 0.0),
        par_sunlit_wm2=par_sun,
        par_shade_wm2=par_shade,
        par_canopy_wm2=par_sun * a.lai_sunlit + par_shade * a.lai_shade,
        lai_sunlit=a.lai_sunlit,
        lai_shade=a.lai_shade,
        fraction_sunlit=sunlit,
        snow_age=a.snow_age,
        bands=a,
    )


class Emissivity(eqx.Module):
    """Longwave emissivities, - (Noah-MP ``SurfaceEmissivity``): ``canopy`` (EmissivityVeg), ``ground``
    (EmissivityGrd: soil and snow weighted by the snow cover) and ``surface`` (EmissivitySfc: grid mean with
    one reflection between canopy and ground, weighted by VegFrac)."""

    canopy: jax.Array
    ground: jax.Array
    surface: jax.Array


def emissivity(
    lai_eff: jax.Array,
    sai_eff: jax.Array,
    veg_frac: jax.Array,
    snow_cover_frac: jax.Array,
    params: RadiationParams,
) -> Emissivity:
    """Canopy, ground and surface emissivity (Noah-MP ``SurfaceEmissivity``, soil surface).

    ``lai_eff``, ``sai_eff`` effective leaf and stem area index, m2 m-2; ``veg_frac`` VegFrac, -;
    ``snow_cover_frac`` -.
    """
    ev = 1.0 - jnp.exp(-div(lai_eff + sai_eff, EMISSIVITY_VAI_SCALE))
    fs = snow_cover_frac
    eg = params.emissivity_soil * (1.0 - fs) + params.emissivity_snow * fs
    es = veg_frac * (eg * (1 - ev) + ev + ev * (1 - ev) * (1 - eg)) + (1 - veg_frac) * eg
    return Emissivity(canopy=ev, ground=eg, surface=es)
