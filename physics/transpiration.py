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
import numpy as np

from ._safe import div
from .types import SoilGrid, SoilParams

MIN_FACTOR = 1.0e-6  # floor of each layer factor and of their sum (MinThr)
MM_TO_M = 0.001

TranspirationScheme = Literal["noah"]


class TranspirationOptions(eqx.Module):
    """Static choices (hashable): ``scheme`` soil moisture factor (OPT_BTR 1 ``"noah"``: linear between wilting
    point and field capacity in liquid moisture)."""

    scheme: TranspirationScheme = eqx.field(static=True, default="noah")

    def __check_init__(self) -> None:
        allowed = get_args(TranspirationScheme)
        if self.scheme not in allowed:
            raise ValueError(f"option scheme={self.scheme!r} is not one of {allowed}")


class RootParams(eqx.Module):
    """``n_root`` (...,) number of soil layers with roots, an integer (Noah-MP ``NumSoilLayerRoot``, table NROOT;
    3 for croplands). An array, not a static option, so sites with different root zones share one compiled
    model."""

    n_root: jax.Array

    def __check_init__(self) -> None:
        n = self.n_root
        if isinstance(n, jax.core.Tracer):
            return
        n = np.asarray(n)
        if not (np.issubdtype(n.dtype, np.integer) and np.all(n >= 1)):
            raise ValueError(f"n_root must be a positive integer number of soil layers, got {n.tolist()!r}")


class TranspirationFactors(eqx.Module):
    """``btran`` soil water transpiration factor, 0..1 (-) [SoilTranspFacAcc]; ``root_fac`` (..., N)
    fraction of the transpiration taken from each layer, summing to 1 over the root layers and 0 below
    (-) [SoilTranspFac]."""

    btran: jax.Array
    root_fac: jax.Array


def soil_water_transpiration(
    sh2o: jax.Array,
    params: SoilParams,
    grid: SoilGrid,
    roots: RootParams | None = None,
    options: TranspirationOptions | None = None,
) -> TranspirationFactors:
    """Soil water transpiration factors from the liquid moisture at the start of the step (Noah-MP
    ``SoilWaterTranspiration``, OPT_BTR = 1, land points).

    Parameters
    ----------
    sh2o : (..., N) liquid soil moisture, m3 m-3.
    params : soil parameters; uses ``smcwlt`` and ``smcref`` (m3 m-3).
    grid : soil layers; ``roots.n_root`` must not exceed their number.
    roots : the number of root layers (default 3), traced: layers below it are masked, not left out, so the
        factors are those of Noah-MP's loop over the root layers bit for bit.
    options : the scheme (default Noah).
    """
    options = TranspirationOptions() if options is None else options
    n_root = jnp.asarray(3 if roots is None else roots.n_root)
    n = grid.n_layers
    if not isinstance(n_root, jax.core.Tracer) and np.any(np.asarray(n_root) > n):
        raise ValueError(f"n_root={np.asarray(n_root).tolist()} exceeds the {n} soil layers")
    g = grid.astype(sh2o.dtype)
    dz, layer = g.dz, jnp.arange(n)
    in_root = layer < n_root[..., None]  # (..., N)
    bottom = layer == n_root[..., None] - 1  # the deepest root layer: its depth is the root depth (one term)
    root_depth = -jnp.sum(jnp.where(bottom, g.zsoil, 0.0), axis=-1)
    wlt = jnp.broadcast_to(params.smcwlt, sh2o.shape)
    ref = jnp.broadcast_to(params.smcref, sh2o.shape)
    facs = []
    total = jnp.zeros_like(sh2o[..., 0])
    for k in range(n):  # adding the masked layers' exact zeros keeps Noah-MP's sum over the root layers
        wet = div(sh2o[..., k] - wlt[..., k], ref[..., k] - wlt[..., k])
        wet = jnp.minimum(1.0, jnp.maximum(0.0, wet))
        fac = jnp.where(in_root[..., k], jnp.maximum(MIN_FACTOR, div(dz[k], root_depth) * wet), 0.0)
        total = total + fac
        facs.append(fac)
    btran = jnp.maximum(MIN_FACTOR, total)
    root_fac = jnp.stack([div(f, btran) for f in facs], axis=-1)
    return TranspirationFactors(btran=btran, root_fac=root_fac)


def transpiration_water_loss(transpiration_mmps: jax.Array, root_fac: jax.Array) -> jax.Array:
    """Transpiration water loss of each soil layer, m s-1 (Noah-MP ``TranspWatLossSoil`` in ``WaterMain``).

    Parameters
    ----------
    transpiration_mmps : (...,) transpiration of the step, mm s-1 (>= 0).
    root_fac : (..., N) layer factors from :func:`soil_water_transpiration`.
    """
    return transpiration_mmps[..., None] * root_fac * MM_TO_M
