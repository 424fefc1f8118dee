"""Batched tridiagonal solve (Noah-MP ROSR12 / Thomas algorithm), differentiable in both AD modes.

The sweep runs over the (small, static) layer axis; every operation is vectorised over the leading
(column) axes, so a batch of 1e6 columns is a handful of fused element-wise kernels, unlike
``jax.lax.linalg.tridiagonal_solve`` which loops over the batch on GPU. The operation order reproduces
``MatrixSolverTriDiagonal`` exactly (multiplication by the reciprocal pivot).

The solve is a ``jax.lax.custom_linear_solve``: the derivative is one more solve (the transposed system in
reverse mode, the same system in forward mode) plus the derivative of the matrix-vector product with
respect to the coefficients, so neither the elimination sweep is stored nor is forward mode blocked.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from ._safe import div


def _thomas(a: Sequence, b: Sequence, c: Sequence, d: Sequence, restart: bool = False) -> list:
    """Solve a_k x_{k-1} + b_k x_k + c_k x_{k+1} = d_k per layer (a_1 and c_N are ignored).

    With ``restart``, a row decoupled from the one above (a_k = 0) is eliminated as Noah-MP's top row (division
    by the pivot instead of multiplication by its reciprocal): for systems whose leading rows are decoupled
    identity rows, the solution is then bit-identical to the shorter system's.
    """
    n = len(d)
    p = [div(-c[0], b[0])]
    delta = [div(d[0], b[0])]
    for k in range(1, n):
        ck = c[k] if k < n - 1 else jnp.zeros_like(c[k])
        r = div(1.0, b[k] + a[k] * p[k - 1])
        p_k, delta_k = -ck * r, (d[k] - a[k] * delta[k - 1]) * r
        if restart:
            first = a[k] == 0.0
            p_k = jnp.where(first, div(-ck, b[k]), p_k)
            delta_k = jnp.where(first, div(d[k], b[k]), delta_k)
        p.append(p_k)
        delta.append(delta_k)
    x = [None] * n
    x[n - 1] = delta[n - 1]
    for k in range(n - 2, -1, -1):
        x[k] = p[k] * x[k + 1] + delta[k]
    return x


def tridiagonal_solve_layers(a: Sequence, b: Sequence, c: Sequence, d: Sequence, restart: bool = False) -> list:
    """:func:`tridiagonal_solve` on per-layer sequences: ``a[k]``, ``b[k]``, ``c[k]``, ``d[k]`` are arrays of
    the batch shape (...,) for layer k; returns the solution as a list of such arrays. ``restart`` as in
    :func:`_thomas` (the transposed solve of the reverse pass does not need it: it only sets rounding).

    Working layer by layer avoids a slice per coefficient and layer, whose transposes (a padded array per
    slice, summed) dominated the reverse pass of the callers.
    """
    a, b, c, d = list(a), list(b), list(c), list(d)
    n = len(d)

    def matvec(x):
        rows = []
        for k in range(n):
            row = b[k] * x[k]
            if k > 0:
                row = row + a[k] * x[k - 1]
            if k < n - 1:
                row = row + c[k] * x[k + 1]
            rows.append(row)
        return rows

    # Transposed matrix: sub-diagonal c_{k-1}, super-diagonal a_{k+1} (the unused ends are never read).
    a_t = [a[0]] + c[:-1]
    c_t = a[1:] + [c[-1]]
    return lax.custom_linear_solve(
        matvec,
        d,
        solve=lambda _, rhs: _thomas(a, b, c, rhs, restart),
        transpose_solve=lambda _, rhs: _thomas(a_t, b, c_t, rhs),
    )


def tridiagonal_solve(a: jax.Array, b: jax.Array, c: jax.Array, d: jax.Array) -> jax.Array:
    """Solve the tridiagonal systems along the last axis.

    Parameters
    ----------
    a, b, c : arrays (..., N)
        Sub-diagonal (``a[..., 0]`` unused), diagonal and super-diagonal (``c[..., N-1]`` unused).
    d : array (..., N)
        Right-hand side.

    Returns
    -------
    x : array (..., N)
    """
    a, b, c, d = jnp.broadcast_arrays(a, b, c, d)
    x = tridiagonal_solve_layers(*(lax.unstack(v, axis=-1) for v in (a, b, c, d)))
    return jnp.stack(x, axis=-1)
