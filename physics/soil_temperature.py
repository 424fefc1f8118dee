"""Soil heat conduction (Noah-MP ``SoilSnowThermalDiffusion`` + ``SoilSnowTemperatureSolver``).

Backward Euler in the inter-layer conduction; the top ground heat flux and the bottom flux to TBOT are
explicit (old temperatures), so that Sum C dz dT = (G + H_bot) dt holds to round-off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._safe import div
from .shapes import Layered, PerColumn
from .tridiagonal import tridiagonal_solve, tridiagonal_solve_layers
from .types import SoilGrid, SoilOptions, SoilParams


def heat_diffusion(
    t: Layered,
    heat_capacity: Layered,
    conductivity: Layered,
    ghf_wm2: PerColumn,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    snow_depth_m: PerColumn | float = 0.0,
) -> tuple[Layered, PerColumn]:
    """One implicit heat-conduction step.

    Parameters
    ----------
    t : (..., N) layer temperature, K.
    heat_capacity, conductivity : (..., N) from :func:`soil_thermal_properties`.
    ghf_wm2 : (...,) ground heat flux into layer 1, W m-2, positive down.
    snow_depth_m : (...,) depth of a snowpack without snow layers, m: the TBOT depth is measured from the
        snow surface (Noah-MP ``DepthSoilTempBotToSno``).

    Returns
    -------
    t_new : (..., N) temperature after diffusion, K.
    heat_bottom_wm2 : (...,) heat flux into the column through its bottom (Noah-MP Hbot, positive up), W m-2.
    """
    n = grid.n_layers
    z, dz, dist = grid.zsoil, grid.dz, grid.node_distance
    k = conductivity
    cdz = heat_capacity * dz
    inv = div(2.0, dist)
    grad = [div(2.0 * (t[..., i] - t[..., i + 1]), dist[i]) for i in range(n - 1)]
    if options.bottom_temperature == "tbot":
        grad_bot = div(t[..., -1] - params.tbot, 0.5 * (z[n - 2] + z[n - 1]) - (grid.zbot - snow_depth_m))
        h_bot = -k[..., -1] * grad_bot
    else:
        h_bot = jnp.zeros_like(t[..., -1])

    excess = [k[..., 0] * grad[0] - ghf_wm2]
    excess += [k[..., i] * grad[i] - k[..., i - 1] * grad[i - 1] for i in range(1, n - 1)]
    excess.append(-h_bot - k[..., n - 2] * grad[n - 2])
    rhs = div(jnp.stack(excess, axis=-1), -cdz)

    upper = [div(-k[..., i] * inv[i], cdz[..., i]) for i in range(n - 1)]
    lower = [div(-k[..., i - 1] * inv[i - 1], cdz[..., i]) for i in range(1, n)]
    zero = jnp.zeros_like(t[..., 0])
    diag0 = -upper[0]
    if options.temperature_scheme == "full_implicit":
        diag0 = diag0 + div(k[..., 0], 0.5 * z[0] * z[0] * heat_capacity[..., 0])
    diag = [diag0] + [-(lower[i - 1] + upper[i]) for i in range(1, n - 1)] + [-(lower[-1] + zero)]
    a = jnp.stack([zero] + lower, axis=-1)
    b = jnp.stack(diag, axis=-1)
    c = jnp.stack(upper + [zero], axis=-1)

    dt = options.dt_s
    dtemp = tridiagonal_solve(a * dt, 1.0 + b * dt, c * dt, rhs * dt)
    return t + dtemp, h_bot


def snow_soil_heat_diffusion(
    t_snow: jax.Array,
    heat_capacity_snow: jax.Array,
    conductivity_snow: jax.Array,
    z_snow: jax.Array,
    n_snow_layers: jax.Array,
    t: jax.Array,
    heat_capacity: jax.Array,
    conductivity: jax.Array,
    z_soil: jax.Array,
    ghf_wm2: jax.Array,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    snow_depth_m: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One implicit heat-conduction step of the snow layers and the soil as one column (Noah-MP
    ``SoilSnowThermalDiffusion`` + ``SoilSnowTemperatureSolver`` with ``NumSnowLayerNeg < 0``).

    The system has 3 + N rows (the three snow slots, then the soil layers). The top existing layer takes the
    ground heat flux; rows of absent snow layers are decoupled identity rows that keep their temperature. With
    no snow layer the result is bit-identical to :func:`heat_diffusion`.

    Parameters
    ----------
    t_snow, heat_capacity_snow, conductivity_snow : (..., 3) snow layer temperature (K), heat capacity
        (J m-3 K-1) and conductivity (W m-1 K-1).
    z_snow : (..., 3) depth of each snow layer's bottom below the snow surface, m (negative; Noah-MP ZSNSO).
    n_snow_layers : (...,) number of snow layers.
    t, heat_capacity, conductivity : (..., N) the soil layers (conductivity of layer 1 after the snow blend).
    z_soil : (..., N) depth of each soil layer's bottom below the snow surface, m (negative).
    ghf_wm2 : ground heat flux into the top layer, W m-2, + down.
    snow_depth_m : snow depth, m (the TBOT depth is measured from the snow surface).

    Returns
    -------
    t_snow, t : temperatures after diffusion, K.
    heat_bottom_wm2 : heat flux into the column through its bottom (Noah-MP HeatFromSoilBot, + up), W m-2.
    """
    from .snow_types import SLOTS, layer_mask, top_mask

    active = [*lax.unstack(layer_mask(n_snow_layers), axis=-1), *([None] * grid.n_layers)]
    top = [*lax.unstack(top_mask(n_snow_layers), axis=-1), jnp.asarray(n_snow_layers) == 0]
    top += [None] * (grid.n_layers - 1)
    temp = [*lax.unstack(t_snow, axis=-1), *lax.unstack(t, axis=-1)]
    cap = [*lax.unstack(heat_capacity_snow, axis=-1), *lax.unstack(heat_capacity, axis=-1)]
    k = [*lax.unstack(conductivity_snow, axis=-1), *lax.unstack(conductivity, axis=-1)]
    z = [*lax.unstack(z_snow, axis=-1), *lax.unstack(z_soil, axis=-1)]
    m = len(temp)
    zero = jnp.zeros_like(temp[-1])

    def sel(cond, x, y):  # x where cond, else y; a static None is "never" (soil rows below the first)
        return y if cond is None else jnp.where(cond, x, y)

    def safe(r, x):  # x in rows that exist; a stand-in of 1 in the rows of absent snow layers
        return x if active[r] is None else jnp.where(active[r], x, 1.0)

    z_above = [zero] + [sel(top[r], zero, z[r - 1]) for r in range(1, m)]
    # Rows of absent snow layers get safe stand-ins (their results are discarded).
    cdz = [safe(r, (z_above[r] - z[r]) * cap[r]) for r in range(m)]
    dist = [safe(r, z_above[r] - z[r + 1]) for r in range(m - 1)]
    inv = [div(2.0, dist[r]) for r in range(m - 1)]
    grad = [div(2.0 * (temp[r] - temp[r + 1]), dist[r]) for r in range(m - 1)]
    if options.bottom_temperature == "tbot":
        grad_bot = div(temp[-1] - params.tbot, 0.5 * (z[m - 2] + z[m - 1]) - (grid.zbot - snow_depth_m))
        h_bot = -k[-1] * grad_bot
    else:
        h_bot = jnp.zeros_like(temp[-1])

    def middle(r):
        return k[r] * grad[r] - k[r - 1] * grad[r - 1] if r > 0 else zero

    excess = [sel(top[r], k[r] * grad[r] - ghf_wm2, middle(r)) for r in range(m - 1)]
    excess.append(-h_bot - k[m - 2] * grad[m - 2])
    rhs = [div(excess[r], -cdz[r]) for r in range(m)]
    upper = [div(-k[r] * inv[r], cdz[r]) for r in range(m - 1)]
    lower = [zero] + [div(-k[r - 1] * inv[r - 1], cdz[r]) for r in range(1, m)]
    diag_top = [-upper[r] for r in range(m - 1)]
    if options.temperature_scheme == "full_implicit":
        diag_top = [diag_top[r] + div(k[r], 0.5 * z[r] * z[r] * cap[r]) for r in range(m - 1)]
    diag = [sel(top[r], diag_top[r], -(lower[r] + upper[r])) for r in range(m - 1)] + [-(lower[-1] + zero)]
    a = [sel(top[r], zero, lower[r]) for r in range(m)]
    c = upper + [zero]
    # Absent snow layers: identity rows (no change).
    for r in SLOTS:
        a[r], diag[r], c[r], rhs[r] = (jnp.where(active[r], v, zero) for v in (a[r], diag[r], c[r], rhs[r]))

    dt = options.dt_s
    # Stacked and split again: rows with constant zeros then carry real (zero) tangents, which the linear solve's
    # derivative under rematerialisation needs.
    system = ([x * dt for x in a], [1.0 + x * dt for x in diag], [x * dt for x in c], [x * dt for x in rhs])
    rows = [lax.unstack(jnp.stack(v, axis=-1), axis=-1) for v in system]
    dtemp = tridiagonal_solve_layers(*rows, restart=True)
    new = [temp[r] + dtemp[r] for r in range(m)]
    return jnp.stack(new[: len(SLOTS)], axis=-1), jnp.stack(new[len(SLOTS) :], axis=-1), h_bot
