"""Heat of the snow and soil column in the station model: layer geometry (Noah-MP ``GeneralInit``), thermal
properties (``GroundThermalProperty``), one implicit conduction step through snow layers and soil
(``SoilSnowTemperatureMain``) and the phase change of both (``SoilSnowWaterPhaseChange``).

With snow layers the column's top is the top snow layer: it takes the ground heat flux, and its temperature,
conductivity and thickness couple the surface energy balance to the column (:class:`GroundThermal`). Depths
are measured from the snow surface, as Noah-MP does: the layer bottoms are cumulated from the thicknesses
at the end of the last step and the thicknesses used in this step are their differences (Noah-MP carries
the depths, ZSNSO, between steps), which reproduces the Fortran's rounding.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div
from .phase_change import phase_change, snow_phase_change
from .snow_thermal_property import snow_thermal_properties
from .snow_types import SLOTS, SnowpackOptions, SnowState, layer_mask, pick, top_mask
from .soil_temperature import snow_soil_heat_diffusion
from .soil_thermal_properties import snow_blend, soil_heat_capacity_conductivity
from .types import SoilGrid, SoilOptions, SoilParams, SoilState, ThinSnow


class GroundThermal(eqx.Module):
    """Geometry and thermal properties of the snow + soil column at the start of a step.

    Snow slots (..., 3) and soil layers (..., N): ``snow_dz`` / ``soil_dz`` thickness, m; ``snow_z`` /
    ``soil_z`` depth of the layer bottom below the snow surface, m (negative); ``snow_heat_capacity`` /
    ``heat_capacity`` J m-3 K-1; ``snow_conductivity`` / ``conductivity`` W m-1 K-1 (soil layer 1 blended
    with the snow above it); ``snow_phase_factor`` / ``phase_factor`` dt / (C dz), K m2 W-1. The top layer
    of the column (top snow layer, or soil layer 1 without snow layers), for the surface energy balance:
    ``t_top`` K, ``k_top`` W m-1 K-1, ``dz_top`` m.
    """

    snow_dz: jax.Array
    snow_z: jax.Array
    snow_heat_capacity: jax.Array
    snow_conductivity: jax.Array
    snow_phase_factor: jax.Array
    soil_dz: jax.Array
    soil_z: jax.Array
    heat_capacity: jax.Array
    conductivity: jax.Array
    phase_factor: jax.Array
    t_top: jax.Array
    k_top: jax.Array
    dz_top: jax.Array


def ground_thermal_properties(
    soil: SoilState,
    snow: SnowState,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    snow_options: SnowpackOptions | None = None,
) -> GroundThermal:
    """Layer geometry and thermal properties of the snow and soil column from the start-of-step state."""
    c, dt = options.const, options.dt_s
    snow_options = snow_options or SnowpackOptions()
    n = snow.n_layers
    has_layers = n > 0
    active, top = layer_mask(n), top_mask(n)
    # Layer bottoms below the snow surface from the thicknesses, then thicknesses back from the bottoms.
    z_snow, dz_snow, z_prev = [], [], jnp.zeros_like(snow.swe_mm)
    for s in SLOTS:
        z_s = jnp.where(active[..., s], z_prev - snow.dz_m[..., s], 0.0)
        dz_snow.append(jnp.where(top[..., s], -z_s, jnp.where(active[..., s], z_prev - z_s, 0.0)))
        z_snow.append(z_s)
        z_prev = z_s
    layer_steps = [grid.zsoil[0]] + [grid.zsoil[k] - grid.zsoil[k - 1] for k in range(1, grid.n_layers)]
    z_soil, dz_soil = [], []
    for k in range(grid.n_layers):
        z_k = z_prev + layer_steps[k]
        z_soil.append(jnp.where(has_layers, z_k, grid.zsoil[k]))
        dz_soil.append(jnp.where(has_layers, z_prev - z_k, grid.dz[k]))
        z_prev = z_k
    z_snow, dz_snow = jnp.stack(z_snow, axis=-1), jnp.stack(dz_snow, axis=-1)
    z_soil, dz_soil = jnp.stack(z_soil, axis=-1), jnp.stack(dz_soil, axis=-1)

    c_snow, k_snow = snow_thermal_properties(snow.ice_mm, snow.liq_mm, dz_snow, active, c, snow_options.conductivity)
    heat_capacity, conductivity = soil_heat_capacity_conductivity(soil, params, c)
    k_blend = jnp.where(has_layers, k_snow[..., -1], c.k_snow_blend)
    h_blend = jnp.where(has_layers, dz_snow[..., -1], snow.depth_m)
    conductivity = conductivity.at[..., 0].set(snow_blend(conductivity[..., 0], dz_soil[..., 0], k_blend, h_blend))
    snow_factor = jnp.where(active, div(dt, jnp.where(active, c_snow * dz_snow, 1.0)), 0.0)
    top_slot = len(SLOTS) - n
    return GroundThermal(
        snow_dz=dz_snow, snow_z=z_snow, snow_heat_capacity=c_snow, snow_conductivity=k_snow,
        snow_phase_factor=snow_factor, soil_dz=dz_soil, soil_z=z_soil, heat_capacity=heat_capacity,
        conductivity=conductivity, phase_factor=div(dt, heat_capacity * dz_soil),
        t_top=jnp.where(has_layers, pick(snow.t_k, top_slot), soil.t[..., 0]),
        k_top=jnp.where(has_layers, pick(k_snow, top_slot), conductivity[..., 0]),
        dz_top=jnp.where(has_layers, pick(dz_snow, top_slot), dz_soil[..., 0]),
    )  # fmt: skip


class GroundHeat(eqx.Module):
    """Diagnostics of :func:`ground_heat`.

    ``t_diff`` (..., N) soil temperature after diffusion, before phase change, K; ``snow_t_diff`` (..., 3) the
    same for snow layers; ``heat_bottom_wm2`` heat flux into the column through its bottom, + up, W m-2;
    ``latent_heat_wm2`` energy used by melting minus freezing in snow and soil, W m-2; ``heat_capacity``
    (..., N) soil heat capacity, J m-3 K-1; ``snow_melt_mm`` snow melted in the step (thin snow and layers),
    mm; ``thin_snow_melt_mm`` the part melted from a pack without layers, which ponds on the soil (Noah-MP
    PondSfcThinSnwMelt), mm; ``melting`` (..., 3) snow layers flagged for melting (IndexPhaseChange = 1).
    """

    t_diff: jax.Array
    snow_t_diff: jax.Array
    heat_bottom_wm2: jax.Array
    latent_heat_wm2: jax.Array
    heat_capacity: jax.Array
    snow_melt_mm: jax.Array
    thin_snow_melt_mm: jax.Array
    melting: jax.Array


def ground_heat(
    soil: SoilState,
    snow: SnowState,
    thermal: GroundThermal,
    ghf_wm2: jax.Array,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
) -> tuple[SoilState, SnowState, GroundHeat]:
    """Conduction through snow layers and soil with top flux ``ghf_wm2`` (W m-2, + down), then the phase
    change of snow layers, thin snow and soil. Returns the soil state, the snowpack after its melt (layers'
    temperature, ice and liquid; SWE and depth of a pack without layers) and diagnostics."""
    c, dt = options.const, options.dt_s
    n = snow.n_layers
    active = layer_mask(n)
    t_snow, t_diff, h_bot = snow_soil_heat_diffusion(
        snow.t_k, thermal.snow_heat_capacity, thermal.snow_conductivity, thermal.snow_z, n, soil.t,
        thermal.heat_capacity, thermal.conductivity, thermal.soil_z, ghf_wm2, params, grid, options, snow.depth_m,
    )  # fmt: skip
    spc = snow_phase_change(t_snow, snow.ice_mm, snow.liq_mm, thermal.snow_phase_factor, active, c, dt)
    thin = n == 0
    zero = jnp.zeros_like(snow.swe_mm)
    pack = ThinSnow(swe_mm=jnp.where(thin, snow.swe_mm, 0.0), depth_m=jnp.where(thin, snow.depth_m, 0.0))
    t, smc, sh2o, latent, melted = phase_change(
        t_diff, soil.smc, soil.sh2o, thermal.phase_factor, params, thermal.soil_dz, options, snow=pack,
        heat_from_snow_wm2=spc.heat_to_soil_wm2,
    )  # fmt: skip
    new_snow = eqx.tree_at(
        lambda s: (s.swe_mm, s.depth_m, s.t_k, s.ice_mm, s.liq_mm),
        snow,
        (jnp.where(thin, melted.swe_mm, snow.swe_mm), jnp.where(thin, melted.depth_m, snow.depth_m),
         jnp.where(active, spc.t_k, snow.t_k), jnp.where(active, spc.ice_mm, snow.ice_mm),
         jnp.where(active, spc.liq_mm, snow.liq_mm)),
    )  # fmt: skip
    thin_melt = jnp.where(thin, melted.melt_mm, zero)
    diag = GroundHeat(
        t_diff=t_diff, snow_t_diff=t_snow, heat_bottom_wm2=h_bot, latent_heat_wm2=latent + spc.latent_heat_wm2,
        heat_capacity=thermal.heat_capacity, snow_melt_mm=thin_melt + spc.melt_mmps * dt,
        thin_snow_melt_mm=thin_melt, melting=spc.melting,
    )  # fmt: skip
    return SoilState(t=t, smc=smc, sh2o=sh2o), new_snow, diag
