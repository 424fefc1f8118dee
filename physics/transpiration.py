"""Soil water stress on transpiration and the split of transpiration over the root layers (Noah-MP
``SoilWaterTranspiration`` with OPT_BTR = 1 (Noah), and the ``TranspWatLossSoil`` loop of ``WaterMain``).

The stress factor ``btran`` (Noah-MP ``SoilTranspFacAcc``) scales the stomatal conductance; the normalised
per-layer factors (``SoilTranspFac``) distribute the transpiration of the step as a water loss of each root
layer. Layers below the root zone get none.
"""

from __future__ import annotations

from typing import Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp

from ._safe import div
from .types import SoilGrid, SoilParams

MIN_FACTOR = 1.0e-6  # floor of each layer factor and of their sum (MinThr)
MM_TO_M = 0.001

TranspirationScheme = Literal["noah"]


class TranspirationOptions(eqx.Module):
    """Static choices (hashable): ``n_root`` number of soil layers with roots (Noah-MP ``NumSoilLayerRoot``,
    table NROOT; 3 for croplands); ``scheme`` soil moisture factor (OPT_BTR 1 ``"noah"``: linear between
    wilting point and field capacity in liquid moisture)."""

    n_root: int = eqx.field(static=True, default=3)
    scheme: TranspirationScheme = eqx.field(static=True, default="noah")

    def __check_init__(self) -> None:
        if not (isinstance(self.n_root, int) and self.n_root >= 1):
            raise ValueError(f"n_root must be a positive number of soil layers, got {self.n_root!r}")
        allowed = get_args(TranspirationScheme)
        if self.scheme not in allowed:
            raise ValueError(f"option scheme={self.scheme!r} is not one of {allowed}")


class TranspirationFactors(eqx.Module):
    """``btran`` soil water transpiration factor, 0..1 (-) [SoilTranspFacAcc]; ``root_fac`` (..., N)
    fraction of the transpiration taken from each layer, summing to 1 over the root layers and 0 below
    (-) [SoilTranspFac]."""

    btran: jax.Array
    root_fac: jax.Array


def soil_water_transpiration(
    sh2o: jax.Array, params: SoilParams, grid: SoilGrid, options: TranspirationOptions | None = None
) -> TranspirationFactors:
    """Soil water transpiration factors from the liquid moisture at the start of the step (Noah-MP
    ``SoilWaterTranspiration``, OPT_BTR = 1, land points).

    Parameters
    ----------
    sh2o : (..., N) liquid soil moisture, m3 m-3.
    params : soil parameters; uses ``smcwlt`` and ``smcref`` (m3 m-3).
    grid : soil layers; ``options.n_root`` must not exceed their number.
    options : root layers and scheme (default: 3 root layers, Noah).
    """
    options = TranspirationOptions() if options is None else options
    n = grid.n_layers
    nr = options.n_root
    if nr > n:
        raise ValueError(f"n_root={nr} exceeds the {n} soil layers")
    dz = grid.astype(sh2o.dtype).dz
    root_depth = -grid.astype(sh2o.dtype).zsoil[nr - 1]
    wlt = jnp.broadcast_to(params.smcwlt, sh2o.shape)
    ref = jnp.broadcast_to(params.smcref, sh2o.shape)
    facs = []
    total = jnp.zeros_like(sh2o[..., 0])
    for k in range(nr):
        wet = div(sh2o[..., k] - wlt[..., k], ref[..., k] - wlt[..., k])
        wet = jnp.minimum(1.0, jnp.maximum(0.0, wet))
        fac = jnp.maximum(MIN_FACTOR, div(dz[k], root_depth) * wet)
        total = total + fac
        facs.append(fac)
    btran = jnp.maximum(MIN_FACTOR, total)
    zero = jnp.zeros_like(total)
    root_fac = jnp.stack([div(f, btran) for f in facs] + [zero] * (n - nr), axis=-1)
    return TranspirationFactors(btran=btran, root_fac=root_fac)


def transpiration_water_loss(transpiration_mmps: jax.Array, root_fac: jax.Array) -> jax.Array:
    """Transpiration water loss of each soil layer, m s-1 (Noah-MP ``TranspWatLossSoil`` in ``WaterMain``).

    Parameters
    ----------
    transpiration_mmps : (...,) transpiration of the step, mm s-1 (>= 0).
    root_fac : (..., N) layer factors from :func:`soil_water_transpiration`.
    """
    return transpiration_mmps[..., None] * root_fac * MM_TO_M
