"""A single-block LSTM over a whole sequence (``lax.scan`` over ``eqx.nn.LSTMCell``) with a linear head.

Shared pieces used by the other networks live here too: :func:`lstm_hidden` (the fast scan),
:func:`squash_to_bounds` (optional physical output bounds) and :func:`with_static` (broadcast per-site static
features along time).
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

Bounds = tuple[float | Sequence[float], float | Sequence[float]]


def init_lstm_cell(in_size: int, hidden_size: int, *, forget_bias: float, key: Array, dtype=None) -> eqx.nn.LSTMCell:
    """``eqx.nn.LSTMCell`` with ``forget_bias`` added to the forget-gate bias (gate order i, f, g, o).

    A positive forget bias (Jozefowicz et al. 2015; neuralhydrology's ``initial_forget_bias``) starts the cell
    with long memory, which helps slow variables such as deep soil moisture learn from long sequences.
    """
    cell = eqx.nn.LSTMCell(in_size, hidden_size, dtype=dtype, key=key)
    bias = cell.bias.at[hidden_size : 2 * hidden_size].add(forget_bias)
    return eqx.tree_at(lambda c: c.bias, cell, bias)


def lstm_hidden(cell: eqx.nn.LSTMCell, x: Array) -> Array:
    """Hidden states of ``cell`` run over ``x`` from a zero state: exactly ``eqx.nn.LSTMCell.__call__`` per step.

    The input projection ``W_ih x_t + b`` of every step is one matrix product before the scan, so the scan body
    holds only the recurrent product ``W_hh h`` (about twice as fast on CPU as calling the cell per step).
    """
    hidden = cell.hidden_size
    pre = x @ cell.weight_ih.T
    if cell.use_bias:
        pre = pre + cell.bias

    def step(carry, p):
        h, c = carry
        i, f, g, o = jnp.split(p + cell.weight_hh @ h, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zero = jnp.zeros((hidden,), pre.dtype)
    _, hs = jax.lax.scan(step, (zero, zero), pre)
    return hs


def normalise_bounds(bounds: Bounds | None, n: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(lo, hi)`` (scalars or length-``n`` sequences) as two static tuples of floats, checked ``lo < hi``."""
    if bounds is None:
        return None
    lo, hi = (tuple(float(v) for v in np.broadcast_to(np.asarray(b, float), (n,))) for b in bounds)
    if any(a >= b for a, b in zip(lo, hi, strict=True)):
        raise ValueError(f"output bounds need lo < hi for every output, got lo={lo}, hi={hi}")
    return lo, hi


def squash_to_bounds(z: Array, bounds: tuple[tuple[float, ...], tuple[float, ...]] | None) -> Array:
    """``lo + (hi - lo) * sigmoid(z)`` over the last axis (identity when ``bounds`` is None)."""
    if bounds is None:
        return z
    lo, hi = (jnp.asarray(b, z.dtype) for b in bounds)
    return lo + (hi - lo) * jax.nn.sigmoid(z)


def with_static(x: Array, static: Array | None, static_size: int) -> Array:
    """Append the per-site static features to every time step of ``x`` (checking their size)."""
    if static_size == 0:
        if static is not None and jnp.shape(static)[-1] != 0:
            raise ValueError("static features given to a network built with static_size=0")
        return x
    if static is None or jnp.shape(static) != (static_size,):
        raise ValueError(
            f"expected static features of shape ({static_size},), got {None if static is None else jnp.shape(static)}"
        )
    return jnp.concatenate([x, jnp.broadcast_to(static, (x.shape[0], static_size)).astype(x.dtype)], axis=-1)


class LSTM(eqx.Module):
    """One LSTM block and a linear head, applied to a whole sequence.

    ``model(x)`` maps inputs ``x`` of shape (T, in_size) (plus optional static features of shape
    (static_size,), repeated at every step) to outputs of shape (T, out_size); the state starts at zero, so the
    output at step t depends only on inputs at steps <= t. Use ``jax.vmap(model)`` for a batch of sites.

    Parameters
    ----------
    in_size, hidden_size, out_size
        Input features per step, LSTM width, outputs per step.
    key
        PRNG key for the initial weights.
    static_size
        Static (per-site) features appended to every step's input (0: none).
    out_bounds
        Optional ``(lo, hi)`` (scalars or one per output, in the units of the targets the network predicts):
        outputs are squashed with a sigmoid into (lo, hi).
    forget_bias
        Added to the forget-gate bias at initialisation (long initial memory).
    dtype
        Parameter dtype (default: JAX's default float).
    """

    cell: eqx.nn.LSTMCell
    head: eqx.nn.Linear
    static_size: int = eqx.field(static=True)
    out_bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_size: int,
        out_size: int,
        *,
        key: Array,
        static_size: int = 0,
        out_bounds: Bounds | None = None,
        forget_bias: float = 1.0,
        dtype=None,
    ):
        k_cell, k_head = jax.random.split(key)
        self.cell = init_lstm_cell(in_size + static_size, hidden_size, forget_bias=forget_bias, key=k_cell, dtype=dtype)
        self.head = eqx.nn.Linear(hidden_size, out_size, dtype=dtype, key=k_head)
        self.static_size = static_size
        self.out_bounds = normalise_bounds(out_bounds, out_size)

    def hidden(self, x: Array, static: Array | None = None) -> Array:
        """Hidden states (T, hidden_size)."""
        return lstm_hidden(self.cell, with_static(x, static, self.static_size))

    def __call__(self, x: Array, static: Array | None = None) -> Array:
        z = jax.vmap(self.head)(self.hidden(x, static))
        return squash_to_bounds(z, self.out_bounds)
