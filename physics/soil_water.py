"""Soil water: Richards equation with Noah-MP's sub-stepping, saturation excess and drainage
(Noah-MP ``WaterMain`` soil part, ``SoilWaterMain``, ``SoilWaterDiffusionRichards``,
``SoilMoistureSolver``).

The prognostic variable is liquid water; ice is frozen during the water step. The step is split into 3
sub-steps, or 6 when the infiltration of the whole step would exceed the top layer's porosity. Diffusion
is implicit (tridiagonal), gravity drainage, infiltration, evaporation and transpiration explicit.

The water movement of a sub-step is the seam for learned components: :func:`soil_water` takes a
``transport`` (an :class:`AbstractTransport`; :class:`Richards` is Noah-MP's), and everything around it
(frost, porosity clip, sub-step count and loop, infiltration, bucket, negative-water fix, runoff) is shared,
so a hybrid and the physics step the same way.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array, lax

from ._remat import keep_loop_carry
from ._safe import div
from .infiltration_runoff import schaake_infiltration
from .shapes import Layered
from .soil_hydraulics import hydraulics_liquid_moisture, hydraulics_total_moisture, impermeable_fraction
from .tridiagonal import tridiagonal_solve_layers
from .types import SoilForcing, SoilGrid, SoilOptions, SoilParams

MAX_SUBSTEPS = 6


class WaterFluxes(eqx.Module):
    """Water-step diagnostics (see :class:`dam.physics.SoilFluxes` for units)."""

    runoff_surface_mm: jax.Array
    runoff_subsurface_mm: jax.Array
    drainage_mmps: jax.Array
    infil_mps: jax.Array
    nsub: jax.Array


def bucket(sh2o: list, ice: jax.Array, params: SoilParams, dz: jax.Array, const) -> tuple[list, jax.Array]:
    """Push water above the effective porosity up to layer 1, then any layer-1 excess back down.

    ``sh2o`` is a list of per-layer liquid contents (...,). Returns the new liquid content per layer and the
    water that no layer can hold, m.
    """
    n = len(sh2o)
    sh2o = list(sh2o)
    ice_k, smcmax_k = lax.unstack(ice, axis=-1), lax.unstack(params.smcmax, axis=-1)
    porosity = [jnp.maximum(const.porosity_floor, smcmax_k[k] - ice_k[k]) for k in range(n)]

    def spill(k):
        excess = jnp.maximum(sh2o[k] - porosity[k], 0.0) * dz[k]
        sh2o[k] = jnp.minimum(porosity[k], sh2o[k])
        return excess

    for k in range(n - 1, 0, -1):
        excess = spill(k)
        sh2o[k - 1] = sh2o[k - 1] + div(excess, dz[k - 1])
    excess_top = spill(0)
    up = list(sh2o)
    sh2o[1] = sh2o[1] + div(excess_top, dz[1])
    for k in range(1, n - 1):
        excess = spill(k)
        sh2o[k + 1] = sh2o[k + 1] + div(excess, dz[k + 1])
    excess_bottom = spill(n - 1)
    down = excess_top > 0.0
    sh2o = [jnp.where(down, d, u) for d, u in zip(sh2o, up, strict=True)]
    return sh2o, jnp.where(down, excess_bottom, excess_top)


class SubstepWater(eqx.Module):
    """What a transport sees in one water sub-step (any leading batch shape).

    ``sh2o`` / ``smc`` (..., N) liquid and total moisture at the start of the sub-step, m3 m-3 (liquid within the
    effective porosity); ``ice`` (..., N) ice content, m3 m-3, frozen during the step; ``infil_mps`` (...,)
    infiltration into layer 1 over the sub-step (Schaake, computed by :func:`soil_water`), m s-1; ``evap_mps``
    (...,) soil evaporation from layer 1 (0 on frozen ground), m s-1; ``etran_mps`` (..., N) transpiration
    from each layer, m s-1.
    """

    sh2o: jax.Array
    smc: jax.Array
    ice: jax.Array
    infil_mps: jax.Array
    evap_mps: jax.Array
    etran_mps: jax.Array


class AbstractTransport(eqx.Module):
    """The seam of the soil water step: the water movement of one sub-step.

    :func:`soil_water` owns everything around it, shared by every transport: the frost of frozen ground, the
    porosity clip, the sub-step count (3, or 6 after heavy infiltration) and loop, the Schaake infiltration of
    each sub-step, the bucket overflow after each sub-step, the negative-water fix and the runoff bookkeeping.
    A transport only moves water within a sub-step: it applies the sub-step's infiltration and sinks and its
    inter-layer fluxes and returns the new liquid moisture (before the bucket) and the bottom drainage. Water
    is conserved when ``sum_k dz_k (sh2o_new - sh2o)_k = (infil - evap - sum_k etran_k - drainage) dt``.

    Subclasses: :class:`Richards` (Noah-MP's physics) and the learned transports of :mod:`dam.coupling`.
    """

    def prepare(self, water: SubstepWater, params: SoilParams, grid: SoilGrid, options: SoilOptions) -> Any:
        """Once per model step, before the sub-steps: what stays constant over them (default None).

        ``water`` is the state entering the first sub-step; its ``infil_mps`` is the infiltration of the whole
        step (which decides the sub-step count), not of a sub-step.
        """
        return None

    @abc.abstractmethod
    def substep(
        self, water: SubstepWater, prepared: Any, params: SoilParams, grid: SoilGrid, options: SoilOptions, dt: Array
    ) -> tuple[Array, Array]:
        """Move the water of one sub-step of ``dt`` seconds.

        Returns
        -------
        sh2o : (..., N) liquid moisture after the sub-step, before the bucket overflow, m3 m-3.
        drainage_mps : (...,) bottom drainage over the sub-step, m s-1.
        """


class Richards(AbstractTransport):
    """Noah-MP's soil water transport (``SoilWaterDiffusionRichards``, ``SoilMoistureSolver``): the
    Richards equation with implicit (tridiagonal) diffusion, explicit gravity drainage, infiltration,
    evaporation and transpiration, and free drainage at the bottom."""

    def prepare(self, water: SubstepWater, params: SoilParams, grid: SoilGrid, options: SoilOptions) -> Any:
        """The impermeable fraction (OPT_INF=1) and the column-maximum ice (OPT_INF=2) of the step's ice."""
        imperm = impermeable_fraction(water.ice, params, options.const)
        ice_max = jnp.maximum(0.0, jnp.max(water.ice, axis=-1))
        return imperm, ice_max

    def substep(
        self, water: SubstepWater, prepared: Any, params: SoilParams, grid: SoilGrid, options: SoilOptions, dt: Array
    ) -> tuple[Array, Array]:
        c = options.const
        n = grid.n_layers
        dz, dist = grid.dz, grid.node_distance
        imperm, ice_max = prepared
        if options.frozen_permeability == "niu06":
            diff, cond = hydraulics_total_moisture(water.smc, imperm, params, c)
            moist = water.smc
        else:
            diff, cond = hydraulics_liquid_moisture(water.sh2o, ice_max, params, c)
            moist = water.sh2o
        inv = div(2.0, dist)
        # Per-layer views taken once: their transposes (stacks) are cheap, repeated slices' are not.
        m = lax.unstack(moist, axis=-1)
        d, kk, tr = (lax.unstack(v, axis=-1) for v in (diff, cond, water.etran_mps))
        grad = [div(2.0 * (m[k] - m[k + 1]), dist[k]) for k in range(n - 1)]
        drain = params.slope * kk[-1]

        exc = [d[0] * grad[0] + kk[0] - water.infil_mps + tr[0] + water.evap_mps]
        exc += [d[k] * grad[k] + kk[k] - d[k - 1] * grad[k - 1] - kk[k - 1] + tr[k] for k in range(1, n - 1)]
        exc.append(-(d[n - 2] * grad[n - 2]) - kk[n - 2] + tr[n - 1] + drain)
        rhs = [div(exc[k], -dz[k]) for k in range(n)]

        b1 = div(d[0] * inv[0], dz[0])
        upper = [-b1] + [div(-d[k] * inv[k], dz[k]) for k in range(1, n - 1)]
        lower = [div(-d[k - 1] * inv[k - 1], dz[k]) for k in range(1, n)]
        zero = jnp.zeros_like(b1)
        diag = [b1] + [-(lower[k - 1] + upper[k]) for k in range(1, n - 1)] + [-(lower[-1] + zero)]
        a = [zero] + lower
        cc = upper + [zero]
        dtheta = tridiagonal_solve_layers(
            [v * dt for v in a], [1.0 + v * dt for v in diag], [v * dt for v in cc], [v * dt for v in rhs]
        )
        s = lax.unstack(water.sh2o, axis=-1)
        return jnp.stack([s[k] + dtheta[k] for k in range(n)], axis=-1), drain


RICHARDS = Richards()


def substep_count(infil_mps: jax.Array, params: SoilParams, dz: jax.Array, dt: float) -> jax.Array:
    """Water sub-steps of a step (int32): 3, or 6 when the step's infiltration ``infil_mps`` (m s-1) would
    exceed the top layer's pore volume."""
    return jnp.where(infil_mps * dt > dz[0] * params.smcmax[..., 0], MAX_SUBSTEPS, 3).astype(jnp.int32)


def min_water_fix(sh2o: jax.Array, dz: jax.Array, const) -> tuple[jax.Array, jax.Array]:
    """Refill layers with negative water from the layer below (to 0.01 mm); the bottom layer is refilled
    from outside the column. Returns liquid moisture and the bottom refill, mm."""
    n = sh2o.shape[-1]
    w = [v * dz[k] * const.rho_water for k, v in enumerate(lax.unstack(sh2o, axis=-1))]
    wmin = const.min_water_mm
    for k in range(n - 1):
        rem = jnp.where(w[k] < 0.0, wmin - w[k], 0.0)
        w[k] = w[k] + rem
        w[k + 1] = w[k + 1] - rem
    rem = jnp.where(w[-1] < wmin, wmin - w[-1], 0.0)
    w[-1] = w[-1] + rem
    return jnp.stack([div(w[k], dz[k] * const.rho_water) for k in range(n)], axis=-1), rem


def soil_water(
    smc: Layered,
    sh2o: Layered,
    forcing: SoilForcing,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    transport: AbstractTransport = RICHARDS,
) -> tuple[Layered, Layered, WaterFluxes]:
    """The soil water step of Noah-MP (after the phase change), with the water movement of each sub-step done by
    ``transport`` (default :class:`Richards`, Noah-MP's physics; see :class:`AbstractTransport`).

    Parameters
    ----------
    smc, sh2o : (..., N) total and liquid moisture after the phase change, m3 m-3.
    transport : the sub-step's water movement.

    Returns
    -------
    smc, sh2o : (..., N) updated moisture, m3 m-3.
    fluxes : :class:`WaterFluxes`.
    """
    c = options.const
    dt = options.dt_s
    dz = grid.dz
    n = grid.n_layers

    # WaterMain: ice, and the frost/sublimation of frozen ground goes to layer-1 ice (main time step).
    ice = jnp.maximum(0.0, smc - sh2o)
    frozen = forcing.frozen_ground > 0
    ice1 = ice[..., 0] + div(forcing.frz_top_ice_flux_mmps * dt, dz[0] * c.rho_water)
    liq1 = jnp.where(ice1 < 0.0, sh2o[..., 0] + ice1, sh2o[..., 0])
    ice1 = jnp.where(ice1 < 0.0, 0.0, ice1)
    ice = ice.at[..., 0].set(jnp.where(frozen, ice1, ice[..., 0]))
    sh2o = sh2o.at[..., 0].set(jnp.where(frozen, liq1, sh2o[..., 0]))
    smc = smc.at[..., 0].set(jnp.where(frozen, liq1 + ice1, smc[..., 0]))
    evap = jnp.where(frozen, 0.0, forcing.evap_mps)

    # SoilWaterMain: clip liquid water to the effective porosity; the excess leaves as runoff.
    porosity = jnp.maximum(c.porosity_floor, params.smcmax - ice)
    sat_excess = jnp.zeros_like(sh2o[..., 0])
    for k in range(n):
        sat_excess = sat_excess + jnp.maximum(0.0, sh2o[..., k] - porosity[..., k]) * dz[k]
    sh2o = jnp.minimum(porosity, sh2o)

    qin = forcing.qinsurf_mps
    _, infil_full = schaake_infiltration(qin, sh2o, ice, params, dz, dt, c)
    prepared = transport.prepare(SubstepWater(sh2o, smc, ice, infil_full, evap, forcing.etran_mps), params, grid,
                                 options)  # fmt: skip
    nsub = substep_count(infil_full, params, dz, dt)
    nsub_f = nsub.astype(sh2o.dtype)
    dt_sub = div(dt, nsub_f)

    def substep(i, carry):
        sh2o, smc, runoff_acc, drain_acc, sat_acc, infil_last = carry
        runoff, infil = schaake_infiltration(qin, sh2o, ice, params, dz, dt_sub, c)
        water = SubstepWater(sh2o, smc, ice, infil, evap, forcing.etran_mps)
        moved, drain = transport.substep(water, prepared, params, grid, options, dt_sub)
        layers, excess = bucket(lax.unstack(moved, axis=-1), ice, params, dz, c)
        new = jnp.stack(layers, axis=-1)
        active = i < nsub
        sh2o = jnp.where(active[..., None], new, sh2o)
        smc = jnp.where(active[..., None], new + ice, smc)
        runoff_acc = jnp.where(active, runoff_acc + runoff, runoff_acc)
        drain_acc = jnp.where(active, drain_acc + drain, drain_acc)
        sat_acc = jnp.where(active, sat_acc + excess, sat_acc)
        infil_last = jnp.where(active, infil, infil_last)
        return keep_loop_carry((sh2o, smc, runoff_acc, drain_acc, sat_acc, infil_last))

    # Rematerialised in the reverse pass: each sub-step is recomputed from its carry instead of stacking its
    # ~100 intermediates through the loop, which made the loop's reverse pass about twice dearer on CPU.
    # prevent_cse=False is safe here: the sub-step only runs inside fori_loop bodies.
    substep = jax.checkpoint(substep, prevent_cse=False)
    zero = jnp.zeros_like(qin)
    carry = (sh2o, smc, zero, zero, sat_excess, zero)
    carry = lax.fori_loop(0, 3, substep, carry)
    # The last three sub-steps only run when some column of the batch needs six.
    carry = lax.cond(
        jnp.any(nsub == MAX_SUBSTEPS),
        lambda cr: lax.fori_loop(3, MAX_SUBSTEPS, substep, cr),
        lambda cr: cr,
        carry,
    )
    sh2o, _, runoff_acc, drain_acc, sat_acc, infil_last = carry

    runoff_mmps = div(runoff_acc, nsub_f) * c.rho_water + div(sat_acc * c.rho_water, dt)
    drainage_mmps = div(drain_acc, nsub_f) * c.rho_water
    sh2o, refill_mm = min_water_fix(sh2o, dz, c)
    subsurface_mmps = -div(refill_mm, dt) + drainage_mmps
    smc = sh2o + ice
    fluxes = WaterFluxes(
        runoff_surface_mm=runoff_mmps * dt,
        runoff_subsurface_mm=subsurface_mmps * dt,
        drainage_mmps=drainage_mmps,
        infil_mps=infil_last,
        nsub=nsub,
    )
    return smc, sh2o, fluxes
