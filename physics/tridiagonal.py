"""Batched tridiagonal solve (Noah-MP ROSR12 / Thomas algorithm) with an adjoint-solve VJP.

The sweep runs over the (small, static) layer axis, the last axis; every operation is vectorised over
the leading (column) axes, so a batch of 1e6 columns is a handful of fused element-wise kernels, unlike
``jax.lax.linalg.tridiagonal_solve`` which loops over the batch on GPU. The operation order reproduces
``MatrixSolverTriDiagonal`` exactly (multiplication by the reciprocal pivot). The reverse pass solves the
transposed system once instead of storing and differentiating the elimination sweep.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._safe import div


def _thomas(a: jax.Array, b: jax.Array, c: jax.Array, d: jax.Array) -> jax.Array:
    """Solve a_k x_{k-1} + b_k x_k + c_k x_{k+1} = d_k (a_1 and c_N are ignored)."""
    n = d.shape[-1]
    p = [div(-c[..., 0], b[..., 0])]
    delta = [div(d[..., 0], b[..., 0])]
    for k in range(1, n):
        ck = c[..., k] if k < n - 1 else jnp.zeros_like(c[..., k])
        r = div(1.0, b[..., k] + a[..., k] * p[k - 1])
        p.append(-ck * r)
        delta.append((d[..., k] - a[..., k] * delta[k - 1]) * r)
    x = [None] * n
    x[n - 1] = delta[n - 1]
    for k in range(n - 2, -1, -1):
        x[k] = p[k] * x[k + 1] + delta[k]
    return jnp.stack(x, axis=-1)


@jax.custom_vjp
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
    return _thomas(a, b, c, d)


def _fwd(a, b, c, d):
    x = _thomas(a, b, c, d)
    return x, (a, b, c, x)


def _bwd(res, x_bar):
    a, b, c, x = res
    zero = jnp.zeros_like(a[..., :1])
    # Transposed matrix: sub-diagonal c_{k-1}, super-diagonal a_{k+1}.
    at = jnp.concatenate([zero, c[..., :-1]], axis=-1)
    ct = jnp.concatenate([a[..., 1:], zero], axis=-1)
    lam = _thomas(at, b, ct, x_bar)
    x_prev = jnp.concatenate([zero, x[..., :-1]], axis=-1)
    x_next = jnp.concatenate([x[..., 1:], zero], axis=-1)
    a_bar = (-lam * x_prev).at[..., 0].set(0.0)
    c_bar = (-lam * x_next).at[..., -1].set(0.0)
    return a_bar, -lam * x, c_bar, lam


tridiagonal_solve.defvjp(_fwd, _bwd)
