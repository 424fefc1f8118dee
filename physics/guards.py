"""Physical plausibility guards under ``jit``: a state that leaves physical bounds stops the run, as Noah-MP's own
balance checks stop the Fortran model, instead of running on to T = 8e6 K with exit code 0.

Bounds: temperatures (soil layers; at a station also the canopy, ground and canopy-air temperatures) within
[:data:`T_MIN_K`, :data:`T_MAX_K`]; total soil moisture within [0, porosity + :data:`MOISTURE_TOL`]; liquid
moisture within [0, total moisture + :data:`MOISTURE_TOL`]; every other state variable finite.

The check costs a few reductions per step (the happy path; measured in docs/safety.md). Only when it fails does a
host callback locate the first offending step, column and layer: its :class:`Violation` is kept for
:func:`last_violation` (``eqx.error_if`` messages are static) and the run stops through ``eqx.error_if`` with
the variable named. dam's drivers turn that into :class:`PlausibilityError` with everything named
(:func:`raise_located`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from equinox.internal import unvmap_any
from jax import lax

T_MIN_K, T_MAX_K = 150.0, 350.0
MOISTURE_TOL = 1e-6  # m3 m-3: round-off allowance above porosity (float32 runs stay within 1e-7)

_CHECKS = (  # (variable, rule) in the order they are reported
    ("a state variable", "is not finite (NaN or inf)"),
    ("soil temperature", f"outside {T_MIN_K:g}-{T_MAX_K:g} K"),
    ("total soil moisture", f"outside [0, porosity + {MOISTURE_TOL:g}] m3 m-3"),
    ("liquid soil moisture", f"outside [0, total moisture + {MOISTURE_TOL:g}] m3 m-3"),
    ("surface temperature", f"outside {T_MIN_K:g}-{T_MAX_K:g} K"),
)
MARK = "implausible model state"
MESSAGES = [f"{MARK}: {var} {rule} (step, column and layer: dam.physics.guards.last_violation())"
            for var, rule in _CHECKS]  # fmt: skip


class PlausibilityError(RuntimeError):
    """A run stopped because its state left physical bounds (the message names variable, value, step, column)."""


@dataclasses.dataclass(frozen=True)
class Violation:
    """The first offending value of a failed check: ``step`` counts from 0 in the run that failed; ``column`` is
    the index over the leading (column) axes, () for a single column; ``layer`` the soil layer from 1 (None for
    a surface variable)."""

    variable: str
    rule: str
    value: float
    step: int
    column: tuple[int, ...]
    layer: int | None

    def describe(self, step_offset: int = 0, when: str | None = None) -> str:
        where = f"step {self.step + step_offset}" + (f" ({when})" if when else "")
        col = f", column {self.column[0] if len(self.column) == 1 else self.column}" if self.column else ""
        layer = f", layer {self.layer}" if self.layer is not None else ""
        return (f"{self.variable} = {self.value:.6g} at {where}{col}{layer}: {self.rule}; check the forcing and "
                "parameters of that period")  # fmt: skip


_last: list[Violation | None] = [None]


def last_violation() -> Violation | None:
    """The violation found by the last failed guard in this process (None if none failed)."""
    return _last[0]


def clear_violation() -> None:
    _last[0] = None


def _first(flags: np.ndarray) -> tuple[int, ...] | None:
    return np.unravel_index(int(np.flatnonzero(flags)[0]), flags.shape) if flags.any() else None


def locate(t, smc, sh2o, smcmax, others=(), surface_t=None, step: int = 0) -> Violation | None:
    """Host side (NumPy): the first failed check of a soil state ``t``, ``smc``, ``sh2o`` (..., layers) with
    porosity ``smcmax``, extra leaves ``others`` (must be finite) and surface temperatures ``surface_t`` (...,
    k); None if all pass. ``column`` indexes the leading axes (e.g. (step, column) for a stacked trajectory)."""
    t, smc, sh2o = (np.asarray(x, np.float64) for x in (t, smc, sh2o))
    smcmax = np.broadcast_to(np.asarray(smcmax, np.float64), smc.shape)
    surface = np.full((1,), T_MIN_K) if surface_t is None else np.asarray(surface_t, np.float64)
    checks = [  # (flags, values, layered) in the order of _CHECKS
        (np.array([not all(np.all(np.isfinite(o)) for o in others)]), np.array([np.nan]), False),
        (~((t >= T_MIN_K) & (t <= T_MAX_K)), t, True),
        (~((smc >= 0.0) & (smc <= smcmax + MOISTURE_TOL)), smc, True),
        (~((sh2o >= 0.0) & (sh2o <= smc + MOISTURE_TOL)), sh2o, True),
        (~((surface >= T_MIN_K) & (surface <= T_MAX_K)), surface, True),
    ]
    for i, (flags, values, layered) in enumerate(checks):
        idx = _first(flags)
        if idx is not None:
            column = tuple(int(c) for c in idx[:-1]) if layered else ()
            layer = int(idx[-1]) + 1 if layered and i < 4 else None
            return Violation(*_CHECKS[i], float(values[idx]), step, column, layer)
    return None


def _record(step, t, smc, sh2o, smcmax, others, surface_t) -> np.ndarray:
    """Host callback of a failed guard: remember the violation, return its index into :data:`MESSAGES`."""
    step = np.asarray(step)  # under vmap: one copy per batch element (the output needs that shape too)
    found = locate(t, smc, sh2o, smcmax, others, surface_t, step=int(step.reshape(-1)[0]))
    _last[0] = found
    index = 0 if found is None else [c[0] for c in _CHECKS].index(found.variable)
    return np.full(step.shape, index, np.int32)


def _outside(x: jax.Array, lo: Any, hi: Any) -> jax.Array:
    return ~jnp.all((x >= lo) & (x <= hi))  # NaN fails both comparisons


def guard(x: Any, soil: Any, smcmax: jax.Array, step: jax.Array, others: tuple = (), surface_t: tuple = ()) -> Any:
    """``x`` unchanged if the soil state ``soil`` (t, smc, sh2o), the extra state leaves ``others`` (checked
    finite) and the surface temperatures ``surface_t`` are plausible; otherwise the run stops (``eqx.error_if``)
    naming the variable, with the step ``step`` (the run's step index), column and layer in
    :func:`last_violation`."""
    surface_t = jnp.stack(jnp.broadcast_arrays(*surface_t), -1) if surface_t else jnp.full((1,), T_MIN_K)
    bad = (
        _outside(soil.t, T_MIN_K, T_MAX_K)
        | _outside(soil.smc, 0.0, smcmax + MOISTURE_TOL)
        | _outside(soil.sh2o, 0.0, soil.smc + MOISTURE_TOL)
        | _outside(surface_t, T_MIN_K, T_MAX_K)
    )
    for leaf in others:
        bad = bad | ~jnp.all(jnp.isfinite(leaf))
    bad = unvmap_any(bad)

    def locate() -> jax.Array:
        args = lax.stop_gradient((step, soil.t, soil.smc, soil.sh2o, smcmax, others, surface_t))
        return jax.pure_callback(_record, jax.ShapeDtypeStruct((), jnp.int32), *args, vmap_method="broadcast_all")

    index = lax.cond(bad, locate, lambda: jnp.int32(0))
    return eqx.branched_error_if(x, bad, index, MESSAGES)


def step_numbers(forcing: Any) -> jax.Array:
    """0, 1, ..., T-1 for a forcing with leading time axis T: scanned beside the forcing so a guard knows its
    step."""
    return jnp.arange(jax.tree_util.tree_leaves(forcing)[0].shape[0], dtype=jnp.int32)


def guard_soil(state: Any, params: Any, step: jax.Array) -> Any:
    """:func:`guard` of a soil column state (:class:`dam.physics.SoilState`) with ``params.smcmax``."""
    return guard(state, state, params.smcmax, step)


def guard_station(state: Any, params: Any, step: jax.Array) -> Any:
    """:func:`guard` of a station state: the soil bounds, the canopy, ground and canopy-air temperatures, and
    every other leaf finite."""
    e = state.energy
    others = tuple(jax.tree_util.tree_leaves((state.canopy, state.snow, e.e_canair, e.cm, e.ch)))
    return guard(state, state.soil, params.soil.smcmax, step, others, (e.t_veg, e.t_grd, e.t_canair))


def raise_located(err: BaseException, step_offset: int = 0, when: Callable[[int], str] | None = None) -> None:
    """Re-raise ``err`` (caught around a guarded run) as :class:`PlausibilityError` with the located violation
    (its step shifted by ``step_offset``; ``when(step)`` may name the time), if ``err`` came from a guard."""
    found = last_violation()
    if found is None or MARK not in str(err):
        return
    clear_violation()
    step = found.step + step_offset
    raise PlausibilityError(found.describe(step_offset, when(step) if when else None)) from None
