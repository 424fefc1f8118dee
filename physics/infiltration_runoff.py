"""Surface infiltration and infiltration-excess runoff, Schaake et al. (1996) with a frozen-soil
reduction (Noah-MP ``RunoffSurfaceFreeDrain``, OPT_RUN=3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._safe import div, safe_divide
from .constants import Constants
from .soil_hydraulics import conductivity_liquid_top
from .types import SoilParams


def schaake_infiltration(
    qinsurf_mps: jax.Array,
    sh2o: jax.Array,
    ice: jax.Array,
    params: SoilParams,
    dz: jax.Array,
    dt_s: float,
    const: Constants,
) -> tuple[jax.Array, jax.Array]:
    """Split surface water input into surface runoff and infiltration.

    Parameters
    ----------
    qinsurf_mps : (...,) water reaching the surface, m s-1.
    sh2o, ice : (..., N) current liquid and ice content, m3 m-3.
    dt_s : the time step the capacity is computed for, s (the soil step, or a water sub-step).

    Returns
    -------
    runoff_mps, infil_mps : (...,) both 0 where there is no input.
    """
    c = const
    n = sh2o.shape[-1]
    # Per-layer views taken once (cheap transposes in the reverse pass).
    liq, frz, wlt = (lax.unstack(v, axis=-1) for v in (sh2o, ice, params.smcwlt))
    smcmax1 = lax.unstack(params.smcmax, axis=-1)[0]
    dt_day = dt_s / c.seconds_per_day
    cap = smcmax1 - wlt[0]
    deficit = (dz[0] * cap) * (1.0 - div(liq[0] + frz[0] - wlt[0], cap))
    ice_depth = dz[0] * frz[0]
    for k in range(1, n):
        ice_depth = ice_depth + dz[k] * frz[k]
        deficit = deficit + (dz[k] * cap) * (1.0 - div((liq[k] + frz[k]) - wlt[k], cap))
    dx = deficit * (1.0 - jnp.exp(-params.infmax_coeff * dt_day))
    px = jnp.maximum(0.0, qinsurf_mps * dt_s)
    infil_max = div(px * safe_divide(dx, px + dx), dt_s)

    icy = ice_depth > c.iw_threshold
    a = div(c.cvfrz * params.imperv_coeff(c), jnp.where(icy, ice_depth, 1.0))
    frozen_reduction = 1.0 - jnp.exp(-a) * ((1.0 + (a * a) / 2.0) + a)
    infil_max = infil_max * jnp.where(icy, frozen_reduction, 1.0)

    k_top = conductivity_liquid_top(liq[0], params, c)
    infil_max = jnp.minimum(jnp.maximum(infil_max, k_top), div(px, dt_s))
    runoff = jnp.maximum(0.0, qinsurf_mps - infil_max)
    infil = qinsurf_mps - runoff
    wet = qinsurf_mps > 0.0
    return jnp.where(wet, runoff, 0.0), jnp.where(wet, infil, 0.0)
