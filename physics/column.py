"""The soil column: one pure step function and a (checkpointed) ``lax.scan`` runner.

Order within a step, as in Noah-MP ``EnergyMain`` then ``WaterMain``: thermal properties from the
start-of-step state, implicit heat diffusion, phase change, soil water. The water movement of each water
sub-step is the seam for learned components: ``transport=`` takes any
:class:`~dam.physics.soil_water.AbstractTransport` in place of Noah-MP's :class:`~dam.physics.soil_water.Richards`,
while heat, phase change, sub-stepping and water bookkeeping stay physical.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from ._remat import STEP_REMAT_POLICY
from .guards import guard_soil, step_numbers
from .phase_change import phase_change
from .soil_temperature import heat_diffusion
from .soil_thermal_properties import soil_thermal_properties
from .soil_water import RICHARDS, AbstractTransport, soil_water
from .tangents import step_with_twin
from .types import (
    LAYER_PARAMS,
    HeatDiagnostics,
    SoilFluxes,
    SoilForcing,
    SoilGrid,
    SoilOptions,
    SoilParams,
    SoilState,
    ThinSnow,
)

Observer = Callable[[SoilState, SoilFluxes], Any]


def soil_heat(
    state: SoilState,
    ghf_wm2: jax.Array,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    snow: ThinSnow | None = None,
) -> tuple[SoilState, HeatDiagnostics, ThinSnow | None]:
    """Heat part of a step: thermal properties, implicit conduction with top flux ``ghf_wm2`` (W m-2, +down),
    then phase change. A snowpack without layers (``snow``) insulates layer 1, moves the TBOT depth and is
    melted first by a layer 1 above freezing; its updated value is returned (None without snow)."""
    c = options.const
    grid = grid.astype(state.t.dtype)
    depth = 0.0 if snow is None else snow.depth_m
    heat_capacity, conductivity, phase_factor = soil_thermal_properties(
        state, params, grid, c, options.dt_s, snow_depth_m=depth
    )
    t_diff, heat_bottom = heat_diffusion(
        state.t, heat_capacity, conductivity, ghf_wm2, params, grid, options, snow_depth_m=depth
    )
    t, smc, sh2o, latent, snow = phase_change(
        t_diff, state.smc, state.sh2o, phase_factor, params, grid.dz, options, snow=snow
    )
    diag = HeatDiagnostics(
        t_diff=t_diff, heat_bottom_wm2=heat_bottom, latent_heat_wm2=latent, heat_capacity=heat_capacity
    )
    return SoilState(t=t, smc=smc, sh2o=sh2o), diag, snow


def soil_step(
    state: SoilState,
    forcing: SoilForcing,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    *,
    transport: AbstractTransport = RICHARDS,
) -> tuple[SoilState, SoilFluxes]:
    """Advance the soil column(s) by one time step of ``options.dt_s`` seconds.

    Works on one column or on any leading batch shape (state and forcing (..., N) / (...,); parameters
    broadcast against them; the grid is shared). ``transport`` moves the water within each water sub-step
    (default Noah-MP's Richards solver; see :class:`~dam.physics.soil_water.AbstractTransport`). With
    ``options.derivative_pow="exp_log"`` its derivatives are those of its ``exp(y log x)`` twin
    (:mod:`dam.physics.tangents`; :func:`run` decides ``"auto"``)."""
    return step_with_twin(_soil_step, options, state, forcing, params, grid, transport)


def _soil_step(
    state: SoilState,
    forcing: SoilForcing,
    params: SoilParams,
    grid: SoilGrid,
    transport: AbstractTransport,
    *,
    options: SoilOptions,
) -> tuple[SoilState, SoilFluxes]:
    grid = grid.astype(state.t.dtype)
    heated, heat, _ = soil_heat(state, forcing.ghf_wm2, params, grid, options)
    smc, sh2o, wf = soil_water(heated.smc, heated.sh2o, forcing, params, grid, options, transport)
    fluxes = SoilFluxes(
        runoff_surface_mm=wf.runoff_surface_mm,
        runoff_subsurface_mm=wf.runoff_subsurface_mm,
        drainage_mmps=wf.drainage_mmps,
        infil_mps=wf.infil_mps,
        nsub=wf.nsub,
        t_diff=heat.t_diff,
        heat_bottom_wm2=heat.heat_bottom_wm2,
        latent_heat_wm2=heat.latent_heat_wm2,
        heat_capacity=heat.heat_capacity,
    )
    return SoilState(t=heated.t, smc=smc, sh2o=sh2o), fluxes


def keep_all(state: Any, fluxes: Any) -> tuple[Any, Any]:
    """The default observer of :func:`run` and :func:`dam.physics.station.run_station`: the state after each step
    and all fluxes."""
    return state, fluxes


def check_finite(state: SoilState) -> SoilState:
    """Raise (also under ``jit``) when the state holds NaN or infinity."""
    bad = ~(jnp.all(jnp.isfinite(state.t)) & jnp.all(jnp.isfinite(state.smc)) & jnp.all(jnp.isfinite(state.sh2o)))
    return eqx.error_if(state, bad, "soil state became non-finite (NaN or inf): check forcing and parameters")


def check_finite_forcing(forcing: SoilForcing) -> SoilForcing:
    """Raise (also under ``jit``) when a forcing value is NaN or infinite."""
    bad = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(forcing)]))
    return eqx.error_if(forcing, bad, "forcing is non-finite (NaN or inf): check the input series")


def scan_checkpointed(
    step: Callable, state0: Any, xs: Any, checkpoint_every: int | None = None, keep_loop_carries: bool = True
) -> tuple[Any, Any]:
    """``lax.scan(step, state0, xs)``; with ``checkpoint_every``, steps are grouped in segments of that length,
    each rematerialised in the backward pass (``jax.checkpoint``), so reverse-mode memory grows with
    T / checkpoint_every + checkpoint_every steps instead of T. Shared by the soil-column and station runners.

    With ``checkpoint_every=1`` and ``keep_loop_carries`` each step also keeps its inner loops' carries
    (:mod:`dam.physics._remat`): memory is then T states and T x (water sub-steps) sub-step carries. Segments keep
    nothing else, which would grow with T and undo their purpose. A step differentiated through a twin
    (:mod:`dam.physics.tangents`) keeps none: the forward pass would have to run the twin's loops to keep them."""
    n_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if not checkpoint_every or checkpoint_every >= n_steps:
        return lax.scan(step, state0, xs)
    seg = int(checkpoint_every)
    n_seg, rest = divmod(n_steps, seg)
    head = jax.tree_util.tree_map(lambda x: x[: n_seg * seg].reshape(n_seg, seg, *x.shape[1:]), xs)

    @partial(jax.checkpoint, policy=STEP_REMAT_POLICY if seg == 1 and keep_loop_carries else None)
    def segment(state, part):
        return lax.scan(step, state, part)

    state, out = lax.scan(segment, state0, head)
    out = jax.tree_util.tree_map(lambda x: x.reshape(n_seg * seg, *x.shape[2:]), out)
    if rest:
        tail = jax.tree_util.tree_map(lambda x: x[n_seg * seg :], xs)
        state, out_tail = segment(state, tail)
        out = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), out, out_tail)
    return state, out


def run(
    state0: SoilState,
    forcing: SoilForcing,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    *,
    transport: AbstractTransport = RICHARDS,
    observe: Observer | None = keep_all,
    checkpoint_every: int | None = None,
    finite_check: bool = True,
    column_chunk: int | None = None,
) -> tuple[SoilState, Any]:
    """Run the column(s) over a forcing time series with ``lax.scan``.

    Parameters
    ----------
    forcing : SoilForcing whose leaves have a leading time axis (T, ...).
    transport : the water movement of each water sub-step (:func:`soil_step`).
    observe : what to keep per step, ``observe(state, fluxes)``; the default (:func:`keep_all`) keeps the state
        after each step and all fluxes; ``None`` keeps nothing (the outputs are None).
    checkpoint_every : if given, steps are grouped in segments of this length and each segment is
        rematerialised in the backward pass (``jax.checkpoint``): reverse-mode memory grows with
        T / checkpoint_every + checkpoint_every steps instead of T. ``1`` keeps the states between steps (and the water
        sub-steps' carries) and recomputes each step: the fastest reverse pass for windows up to a few thousand
        steps.
    finite_check : raise if the forcing is non-finite or the state leaves physical bounds (``eqx.error_if``,
        works under ``jit``; :mod:`dam.physics.guards`: T within 150-350 K, moisture within [0, porosity]).
    column_chunk : if given, the columns (one leading column axis) run in chunks of at most this many, one
        chunk after another, each over the whole time series. On CPU a chunk that fits in cache (about 1e4
        columns) keeps every intermediate of a step there: at 1e6 columns, 1.5x the throughput in float32 and
        2.5x in float64 (docs/performance.md). Leave it ``None`` on accelerators, which want all columns at
        once. Results are bit-identical to the unchunked run.

    Returns
    -------
    final_state, outputs (stacked along a leading time axis, or None).
    """
    if column_chunk is not None:
        return _run_in_chunks(
            state0, forcing, params, grid, options, column_chunk,
            transport=transport, observe=observe, checkpoint_every=checkpoint_every, finite_check=finite_check,
        )  # fmt: skip
    observe = observe or (lambda s, f: None)
    options = options.for_run(math.prod(state0.t.shape[:-1]), checkpoint_every)

    def step(state, xs):
        frc, i = xs
        if finite_check:
            frc = check_finite_forcing(frc)
        new, fluxes = soil_step(state, frc, params, grid, options, transport=transport)
        if finite_check:
            new = guard_soil(new, params, i)
        return new, observe(new, fluxes)

    keep = options.derivative_options is None
    return scan_checkpointed(step, state0, (forcing, step_numbers(forcing)), checkpoint_every, keep)


def _run_in_chunks(
    state0: SoilState,
    forcing: SoilForcing,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    chunk: int,
    **kwargs: Any,
) -> tuple[SoilState, Any]:
    """:func:`run` over contiguous chunks of ``chunk`` columns in turn (``lax.map``); the last chunk is padded
    with copies of the last column and trimmed afterwards."""
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"column_chunk must be a positive integer, got {chunk!r}")
    if state0.t.ndim != 2:
        raise ValueError(f"column_chunk needs states of shape (columns, layers), got {state0.t.shape}")
    n, chunk = state0.t.shape[0], int(chunk)
    if n <= chunk:
        return run(state0, forcing, params, grid, options, **kwargs)
    n_chunks = -(-n // chunk)
    padded = n_chunks * chunk > n
    index = jnp.minimum(jnp.arange(n_chunks * chunk), n - 1)

    def split(x: jax.Array, axis: int) -> jax.Array:
        if padded:  # a gather copies the whole array: only where the last chunk needs filling
            x = jnp.take(x, index, axis=axis)
        return jnp.moveaxis(x.reshape(*x.shape[:axis], n_chunks, chunk, *x.shape[axis + 1 :]), axis, 0)

    def merge(x: jax.Array, axis: int) -> jax.Array:
        if x.ndim < axis + 2:
            raise ValueError("with column_chunk, observe must return per-column arrays (columns after time)")
        x = jnp.moveaxis(x, 0, axis)
        return lax.slice_in_dim(x.reshape(*x.shape[:axis], n_chunks * chunk, *x.shape[axis + 2 :]), 0, n, axis=axis)

    # Parameters shared by all columns (no column axis) are closed over; per-column ones are split.
    per_column = {
        name: jnp.ndim(getattr(params, name)) == (2 if name in LAYER_PARAMS else 1)
        for name in (f.name for f in dataclasses.fields(params))
    }
    split_params = {k: split(getattr(params, k), 0) for k, v in per_column.items() if v}
    xs = (jax.tree_util.tree_map(lambda x: split(x, 0), state0), jax.tree_util.tree_map(lambda x: split(x, 1), forcing))

    def one_chunk(args: tuple) -> tuple[SoilState, Any]:
        (state, frc), fields = args
        return run(state, frc, eqx.tree_at(lambda p: [getattr(p, k) for k in fields], params, list(fields.values())),
                   grid, options, **kwargs)  # fmt: skip

    final, outputs = lax.map(one_chunk, (xs, split_params))
    return jax.tree_util.tree_map(lambda x: merge(x, 0), final), jax.tree_util.tree_map(lambda x: merge(x, 1), outputs)


def replay(
    states: SoilState,
    forcing: SoilForcing,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    *,
    transport: AbstractTransport = RICHARDS,
) -> tuple[SoilState, SoilFluxes]:
    """Per-step replay: step t starts from ``states[t]`` (e.g. a reference trajectory) with ``forcing[t]``.

    All steps are independent, so they run as one batch (the time axis is a batch axis).
    """
    return soil_step(states, forcing, params, grid, options, transport=transport)
