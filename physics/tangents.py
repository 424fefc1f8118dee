"""One function's values with another's derivatives: a step evaluated as the Fortran does, differentiated through
a cheaper twin.

The Fortran match needs libm's ``pow`` bit for bit, which XLA:CPU calls one element at a time: about 57 % of a soil
column's forward (docs/performance.md). A gradient with per-step checkpoints evaluates each step again in its
backward pass, and its derivatives need no such last bits. :func:`differentiated_as` keeps a step's values and
takes its derivatives from a twin evaluated with ``exp(y log x)`` (``SoilOptions.derivative_pow``), so the backward
pass recomputes only the twin.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import equinox as eqx


def differentiated_as(f: Callable, g: Callable, *args: Any) -> Any:
    """``f(*args)``, with the derivatives (JVP, hence also ``jax.grad``) of ``g`` at ``args``.

    ``f`` and ``g`` must return the same structure and agree to rounding. Every array the derivatives may depend on
    goes in ``args``, none in a closure of ``f`` or ``g``: parameters, a trained transport or stomata network.
    Without differentiation only ``f`` runs.
    """
    return _differentiated_as(*args, f=f, g=g)


def step_with_twin(step: Callable, options: Any, *args: Any) -> Any:
    """``step(*args, options=options)``, differentiated as ``step(*args, options=options.derivative_options)`` where
    the options name a twin (:attr:`dam.physics.types.SoilOptions.derivative_options`)."""
    twin = options.derivative_options
    if twin is None:
        return step(*args, options=options)
    return differentiated_as(partial(step, options=options), partial(step, options=twin), *args)


@eqx.filter_custom_jvp
def _differentiated_as(*args: Any, f: Callable, g: Callable) -> Any:
    return f(*args)


@_differentiated_as.def_jvp
def _differentiated_as_jvp(primals, tangents, *, f, g):
    _, t_out = eqx.filter_jvp(g, primals, tangents)
    return f(*primals), t_out
