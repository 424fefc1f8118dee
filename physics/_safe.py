"""Gradient-safe elementary functions: both branches of a select must have finite derivatives."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def safe_where(cond: jax.Array, x: jax.Array, safe_value: float | jax.Array) -> jax.Array:
    """``x`` where ``cond`` holds, else ``safe_value``: feed the result to a function that is singular
    outside ``cond`` and select again afterwards (the double-where pattern)."""
    return jnp.where(cond, x, safe_value)


def safe_divide(num: jax.Array, den: jax.Array, fallback: float | jax.Array = 0.0) -> jax.Array:
    """``num / den`` where ``den != 0``, else ``fallback``; no NaN in value or gradient."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), fallback)


def div(x: jax.Array | float, y: jax.Array | float) -> jax.Array:
    """``x / y`` as a true IEEE division, element by element.

    XLA rewrites a division by a constant or a broadcast operand (a time step, a per-layer parameter shared
    by a batch) into a multiplication by its reciprocal, which differs from the Fortran in the last bit; an
    optimisation barrier on the (broadcast) divisor keeps the division. Used wherever the divisor may be
    broadcast, so that batched runs are bit-reproducible against the Fortran reference.
    """
    shape = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(y))
    return x / lax.optimization_barrier(jnp.broadcast_to(y, shape))


def pow_libm(x: jax.Array, exponent: float) -> jax.Array:
    """``x ** exponent`` through the libm-equivalent ``pow`` even for a constant integral exponent, which
    XLA would otherwise expand into multiplications (``pow(x, 3.0)`` is a real ``pow`` call in Noah-MP)."""
    return jnp.power(x, lax.optimization_barrier(jnp.full_like(x, exponent)))


def power(x: jax.Array, y: jax.Array, exp_log: bool = False) -> jax.Array:
    """``x ** y`` for ``x > 0``: libm's ``pow`` (the Fortran's value, bit for bit), or with ``exp_log``
    ``exp(y log x)``, which XLA:CPU vectorises (about 1.5x faster soil columns) and which differs from ``pow`` in the
    last bits (:attr:`~dam.physics.types.SoilOptions.pow`)."""
    return jnp.exp(y * jnp.log(x)) if exp_log else _pow(x, y)


@jax.custom_jvp
def _pow(x: jax.Array, y: jax.Array) -> jax.Array:
    """libm's ``pow`` whose derivative reuses the value: d/dx = y v / x, d/dy = v log x.

    JAX's own rule evaluates a second ``pow`` (x ** (y - 1)), which made the reverse pass through the hydraulic
    and thermal functions several times dearer than needed.
    """
    return jnp.power(x, y)


@_pow.defjvp
def _pow_jvp(primals, tangents):
    x, y = primals
    dx, dy = tangents
    value = _pow(x, y)
    return value, (y * value / x) * dx + (value * jnp.log(x)) * dy
