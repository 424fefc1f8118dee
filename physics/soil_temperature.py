"""Soil heat conduction (Noah-MP ``SoilSnowThermalDiffusion`` + ``SoilSnowTemperatureSolver``).

Backward Euler in the inter-layer conduction; the top ground heat flux and the bottom flux to TBOT are
explicit (old temperatures), so that Sum C dz dT = (G + H_bot) dt holds to round-off.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._safe import div
from .shapes import Layered, PerColumn
from .tridiagonal import tridiagonal_solve
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
