"""Baseline without recurrence: a per-step MLP on the current features and a fixed set of lagged features."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from .lstm import Bounds, normalise_bounds, squash_to_bounds, with_static


def lagged_features(x: Array, n_lags: int, lag_stride: int = 1) -> Array:
    """Stack ``x`` (T, F) with its lagged copies: (T, F * (n_lags + 1)).

    Columns ``[l * F, (l + 1) * F)`` hold ``x[t - l * lag_stride]`` for l = 0 .. n_lags. Steps before the start
    of the sequence take the first row (edge padding), so the features at t use only inputs at steps <= t.
    """
    if n_lags == 0:
        return x
    t = jnp.arange(x.shape[0])
    return jnp.concatenate([x[jnp.maximum(t - lag * lag_stride, 0)] for lag in range(n_lags + 1)], axis=-1)


class MLP(eqx.Module):
    """Per-step MLP baseline: ``y_t = f(x_t, x_{t-s}, ..., x_{t-n_lags*s}, static)``, no state carried in time.

    ``model(x)`` maps (T, in_size) to (T, out_size). The memory of the network is exactly the ``n_lags`` lagged
    copies of the inputs, ``lag_stride`` steps apart (e.g. ``n_lags=7, lag_stride=48`` sees the same half hour
    of the past seven days); rows before the sequence start repeat its first row. Hidden layers use ``tanh``
    by default (smooth, bounded: friendly to gradients through physics couplings).

    Parameters
    ----------
    in_size, out_size
        Input features and outputs per step.
    key
        PRNG key for the initial weights.
    n_lags, lag_stride
        Number of lagged copies of the inputs and their spacing in steps.
    width, depth
        Hidden-layer width and number of hidden layers.
    static_size
        Static (per-site) features appended to every step's input (0: none).
    out_bounds
        Optional ``(lo, hi)`` per output (sigmoid squash, in the units of the targets).
    activation
        Hidden-layer activation.
    """

    net: eqx.nn.MLP
    n_lags: int = eqx.field(static=True)
    lag_stride: int = eqx.field(static=True)
    static_size: int = eqx.field(static=True)
    out_bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        key: Array,
        n_lags: int = 0,
        lag_stride: int = 1,
        width: int = 64,
        depth: int = 2,
        static_size: int = 0,
        out_bounds: Bounds | None = None,
        activation: Callable[[Array], Array] = jnp.tanh,
        dtype=None,
    ):
        if n_lags < 0 or lag_stride < 1:
            raise ValueError(f"need n_lags >= 0 and lag_stride >= 1, got {n_lags}, {lag_stride}")
        self.net = eqx.nn.MLP(
            in_size * (n_lags + 1) + static_size, out_size, width, depth, activation=activation, dtype=dtype, key=key
        )
        self.n_lags, self.lag_stride, self.static_size = n_lags, lag_stride, static_size
        self.out_bounds = normalise_bounds(out_bounds, out_size)

    def __call__(self, x: Array, static: Array | None = None) -> Array:
        """Outputs (T, out_size) for inputs ``x`` (T, in_size) and optional static features (static_size,)."""
        feats = with_static(lagged_features(x, self.n_lags, self.lag_stride), static, self.static_size)
        return squash_to_bounds(jax.vmap(self.net)(feats), self.out_bounds)
