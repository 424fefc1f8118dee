"""AI in physics: a neural network moves the soil water inside the time-stepped soil column and station model.

:class:`NeuralWaterTransport` is an :class:`~dam.physics.soil_water.AbstractTransport`, so it plugs into
``run_station(..., transport=net)`` and ``soil_step(..., transport=net)`` in place of Noah-MP's Richards solver.
Only the water movement of each water sub-step is learned; :func:`dam.physics.soil_water.soil_water` does the
rest exactly as for the physics: the frost of frozen ground, the porosity clip, the sub-step count (3, or 6 after
heavy infiltration), the Schaake et al. (1996) infiltration of every sub-step, Noah-MP's bucket overflow after
every sub-step, the negative-water fix and the runoff bookkeeping (``WaterMain``, ``SoilWaterMain``).

In a sub-step of ``dt`` seconds the network gives inter-layer fluxes ``q_k`` (k = 1..N-1, + down) and the bottom
drainage ``q_N`` (>= 0); with the sub-step's infiltration ``q_0`` and sinks ``s_k`` (soil evaporation from layer
1, transpiration from each layer) every layer changes by continuity, ``dz_k dtheta_k = q_{k-1} - q_k - s_k dt``.
Because every update is a flux difference, water is conserved exactly (to round-off) whatever the weights. Bounds
hold by construction: a learned flux leaving a layer is squashed (``cap * tanh(flux / cap)``) to at most half the
water the donor holds above its floor (``floor_fraction * smcwlt``) and at most half the free pore space of the
receiver (each layer has two faces, so the two halves never overdraw it); the shared bucket and negative-water fix
bound what infiltration and sinks do, as for the physics. Ice is frozen during the step.

The pure pieces of training live here: :func:`physics_water_samples` and :func:`imitation_loss` (teach the network
the Richards sub-step), :class:`HybridObjective` (free runs and the loss of windows of the station model against
observed soil moisture). :mod:`dam.hybrid_training` drives them with the training engine.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from dam.physics._safe import div
from dam.physics.soil_water import AbstractTransport, Richards, SubstepWater, substep_count
from dam.physics.station import (
    StationForcing,
    StationOptions,
    StationParams,
    StationState,
    run_station,
    station_step,
)
from dam.physics.types import SoilGrid, SoilOptions, SoilParams

from .losses import masked_mse

__all__ = [
    "N_FEATURES",
    "HybridObjective",
    "NeuralWaterTransport",
    "PhysicsWaterSamples",
    "imitation_loss",
    "physics_water_samples",
]

# Feature scaling (fixed, so a network needs no fitted normaliser and transfers between sites).
MM_PER_DAY = 86400.0e3  # m s-1 -> mm day-1
SINK_SCALE_MM_DAY = 5.0  # typical transpiration / evaporation rate, mm day-1
LOG_K_SCALE = 10.0  # scale of log relative conductivity and log suction
MIN_SATURATION = 0.01  # floor of theta / theta_s in the Clapp-Hornberger features (Noah-MP's value)
MAX_LOG_FLUX = 8.0  # soft upper bound of the log flux (in units of the saturated conductivity)
LAYER_FEATURES = 9
N_FEATURES = 2 * LAYER_FEATURES + 5


class NeuralWaterTransport(AbstractTransport):
    """Water movement of a sub-step whose inter-layer transport and drainage come from an MLP (module docstring).

    One MLP is shared by all interfaces; for interface k (between layers k and k+1, or the bottom when k = N) it
    sees the features of both layers (liquid and ice saturation, log Clapp-Hornberger relative conductivity and
    suction, wetness between wilting point and field capacity, log saturated conductivity, b, thickness, sink
    rate), the interface depth, the log suction difference, the infiltration rate, the sub-step length and a
    bottom flag. It returns two log rates in units of the saturated conductivity ``dksat`` of the upper layer;
    the flux is ``dksat * (exp(o_down) - exp(o_up))`` (bottom: ``slope * dksat * exp(o_down)``), then bounded.

    Attributes
    ----------
    mlp : the network, ``N_FEATURES`` inputs, 2 outputs.
    floor_fraction : a learned flux never takes a layer below ``floor_fraction * smcwlt`` (m3 m-3) (static).
    """

    mlp: eqx.nn.MLP
    floor_fraction: float = eqx.field(static=True, default=0.5)

    def __init__(
        self,
        key: jax.Array,
        *,
        width: int = 32,
        depth: int = 2,
        floor_fraction: float = 0.5,
        init_log_flux: tuple[float, float] = (-5.0, -6.0),
        dtype: Any = None,
    ) -> None:
        if not 0.0 <= floor_fraction < 1.0:
            raise ValueError(f"floor_fraction must lie in [0, 1), got {floor_fraction}")
        mlp = eqx.nn.MLP(N_FEATURES, 2, width, depth, activation=jnp.tanh, key=key, dtype=dtype)
        last = mlp.layers[-1]
        # Small last layer and a bias at a weak downward flux: an untrained network drains slowly.
        mlp = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias),
            mlp,
            (0.1 * last.weight, jnp.asarray(init_log_flux, last.bias.dtype)),
        )
        self.mlp = mlp
        self.floor_fraction = float(floor_fraction)

    def features(
        self,
        sh2o: jax.Array,
        ice: jax.Array,
        sink_mps: jax.Array,
        infil_mps: jax.Array,
        params: SoilParams,
        grid: SoilGrid,
        dt: jax.Array,
    ) -> jax.Array:
        """Interface features (..., N, N_FEATURES): row k < N-1 is the face between layers k and k+1, row N-1
        the bottom (the lower layer's features are the bottom layer's own, and the bottom flag is 1)."""
        shape = sh2o.shape
        bc = lambda x: jnp.broadcast_to(x, shape)  # noqa: E731
        smcmax, smcref, smcwlt = bc(params.smcmax), bc(params.smcref), bc(params.smcwlt)
        bexp, psisat, dksat = bc(params.bexp), bc(params.psisat), bc(params.dksat)
        dz = bc(grid.dz)
        s_tot = jnp.maximum(div(sh2o + ice, smcmax), MIN_SATURATION)
        log_s = jnp.log(s_tot)
        log_psi = jnp.log(psisat) - bexp * log_s
        layer = jnp.stack(
            [
                div(sh2o, smcmax),
                div(ice, smcmax),
                (2.0 * bexp + 3.0) * log_s / LOG_K_SCALE,
                log_psi / LOG_K_SCALE,
                div(sh2o - smcwlt, smcref - smcwlt),
                jnp.log10(dksat) + 5.0,
                bexp / 10.0,
                dz,
                sink_mps * (MM_PER_DAY / SINK_SCALE_MM_DAY),
            ],
            axis=-1,
        )  # (..., N, LAYER_FEATURES)
        lower = jnp.concatenate([layer[..., 1:, :], layer[..., -1:, :]], axis=-2)
        dlog_psi = jnp.concatenate([log_psi[..., 1:] - log_psi[..., :-1], jnp.zeros_like(log_psi[..., :1])], -1)
        n = shape[-1]
        is_bottom = bc(jnp.asarray(np.arange(n) == n - 1, sh2o.dtype))
        infil = jnp.broadcast_to(jnp.log1p(jnp.maximum(infil_mps, 0.0) * MM_PER_DAY)[..., None], shape) / 3.0
        shared = jnp.stack(
            [
                bc(-grid.zsoil),
                dlog_psi / LOG_K_SCALE,
                infil,
                jnp.broadcast_to(jnp.log10(jnp.asarray(dt, sh2o.dtype) / 86400.0)[..., None], shape),
                is_bottom,
            ],
            axis=-1,
        )
        return jnp.concatenate([layer, lower, shared], axis=-1)

    def log_rates(self, features: jax.Array) -> jax.Array:
        """The network on features (..., F): two log rates (..., 2), softly bounded above by MAX_LOG_FLUX."""
        flat = features.reshape(-1, features.shape[-1])
        dtype = self.mlp.layers[0].weight.dtype
        out = jax.vmap(self.mlp)(flat.astype(dtype)).reshape(*features.shape[:-1], 2).astype(features.dtype)
        return MAX_LOG_FLUX - jax.nn.softplus(MAX_LOG_FLUX - out)

    def substep(
        self, water: SubstepWater, prepared: Any, params: SoilParams, grid: SoilGrid, options: SoilOptions, dt: Array
    ) -> tuple[Array, Array]:
        """One bounded, conservative sub-step of ``dt`` seconds: the new liquid moisture (..., N), m3 m-3 (before
        the shared bucket), and the bottom drainage (...,), m s-1."""
        sh2o, ice = water.sh2o, water.ice
        shape = sh2o.shape
        dt = jnp.asarray(dt, sh2o.dtype)
        dt_layer = dt[..., None]
        dz = jnp.broadcast_to(grid.dz, shape)
        floor = self.floor_fraction * jnp.broadcast_to(params.smcwlt, shape)
        porosity = jnp.maximum(options.const.porosity_floor, jnp.broadcast_to(params.smcmax, shape) - ice)
        avail = jnp.maximum(sh2o - floor, 0.0) * dz  # m of water above the floor
        space = jnp.maximum(porosity - sh2o, 0.0) * dz  # m of free pore space
        sink = jnp.broadcast_to(water.etran_mps, shape).at[..., 0].add(water.evap_mps)

        o = self.log_rates(self.features(sh2o, ice, sink, water.infil_mps, params, grid, dt))
        ks = jnp.broadcast_to(params.dksat, shape)
        slope = jnp.broadcast_to(params.slope, shape[:-1])
        rate_down, rate_up = jnp.exp(o[..., 0]), jnp.exp(o[..., 1])
        raw = ks[..., :-1] * (rate_down[..., :-1] - rate_up[..., :-1]) * dt_layer  # interfaces, m per sub-step
        raw_bottom = slope * ks[..., -1] * rate_down[..., -1] * dt

        down_cap = 0.5 * jnp.minimum(avail[..., :-1], space[..., 1:])
        up_cap = 0.5 * jnp.minimum(avail[..., 1:], space[..., :-1])
        face = jnp.where(raw >= 0.0, _bounded(raw, down_cap), _bounded(raw, up_cap))
        bottom = _bounded(raw_bottom, 0.5 * avail[..., -1])
        into = jnp.concatenate([jnp.zeros_like(bottom)[..., None], face], axis=-1)  # q_{k-1}: from above (+ down)
        out = jnp.concatenate([face, bottom[..., None]], axis=-1)  # q_k: to below
        source = (-sink).at[..., 0].add(water.infil_mps) * dt_layer  # infiltration minus sinks, m per sub-step
        return div(sh2o * dz + (into - out + source), dz), div(bottom, dt)


def _bounded(flux: jax.Array, cap: jax.Array) -> jax.Array:
    """``cap * tanh(flux / cap)``: ~flux when small, never beyond ``cap`` in magnitude; 0 (with finite
    gradients) where ``cap`` is 0."""
    ok = cap > 0.0
    safe = jnp.where(ok, cap, 1.0)
    return jnp.where(ok, safe * jnp.tanh(flux / safe), 0.0)


# ====================================================================== imitating the Richards sub-step
class PhysicsWaterSamples(eqx.Module):
    """Water sub-steps of the physics, one row per model step (leading axis T), to teach a transport.

    ``water`` the :class:`SubstepWater` entering the step's sub-steps in a physics run (its ``infil_mps`` the
    infiltration of the whole step); ``dt_s`` (T,) the step's sub-step length, s; ``sh2o_out`` (T, N) liquid
    moisture after one Richards sub-step from ``water`` (before the bucket), m3 m-3; ``drainage_mps`` (T,) its
    bottom drainage, m s-1.
    """

    water: SubstepWater
    dt_s: jax.Array
    sh2o_out: jax.Array
    drainage_mps: jax.Array


class _Recorder(Richards):
    """Richards, keeping the water that enters each step's sub-steps (tracers of the caller's scan body)."""

    box: dict = eqx.field(static=True)

    def prepare(self, water, params, grid, options):
        self.box["water"] = water
        return super().prepare(water, params, grid, options)


@eqx.filter_jit
def physics_water_samples(
    state0: StationState,
    forcing: StationForcing,
    params: StationParams,
    grid: SoilGrid,
    options: StationOptions,
    first: int = 0,
) -> PhysicsWaterSamples:
    """Run the station model (Richards) over ``forcing`` (leading time axis) from ``state0`` and return the water
    sub-steps of its steps ``first`` onwards (:class:`PhysicsWaterSamples`)."""
    soil, soil_options = params.soil, options.soil

    def step(state, frc):
        recorder = _Recorder(box={})
        new, _ = station_step(state, frc, params, grid, options, transport=recorder)
        return new, recorder.box["water"]

    _, water = jax.lax.scan(step, state0, forcing)
    water = jax.tree_util.tree_map(lambda x: x[first:], water)
    dt = soil_options.dt_s
    g = grid.astype(water.sh2o.dtype)
    dt_sub = dt / substep_count(water.infil_mps, soil, g.dz, dt).astype(water.sh2o.dtype)
    richards = Richards()
    sh2o, drain = richards.substep(water, richards.prepare(water, soil, g, soil_options), soil, g, soil_options, dt_sub)
    return PhysicsWaterSamples(water=water, dt_s=dt_sub, sh2o_out=sh2o, drainage_mps=drain)


def imitation_loss(
    transport: AbstractTransport,
    samples: PhysicsWaterSamples,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    scale: jax.Array,
) -> jax.Array:
    """Per-sample misfit of ``transport``'s sub-step against the Richards sub-step, (B,): mean over layers of
    ``((sh2o - sh2o_richards) / scale)^2``, with ``scale`` (N,) the spread of the layer's change (m3 m-3)."""
    grid = grid.astype(samples.sh2o_out.dtype)
    w = samples.water
    sh2o, _ = transport.substep(w, transport.prepare(w, params, grid, options), params, grid, options, samples.dt_s)
    return jnp.mean(((sh2o - samples.sh2o_out) / scale) ** 2, axis=-1)


# ====================================================================== end to end in the station model
class HybridObjective(eqx.Module):
    """The station model with a learned transport against observed layered soil moisture.

    ``state0`` / ``forcing`` (T, ...) the run; ``params``, ``grid``, ``options`` the station's;
    ``sensor_weights`` (S, N) how each sensor reads the model layers (rows sum to 1; :mod:`dam.sensors`),
    ``liquid`` (S,) whether each sensor sees liquid water (else total); static ``checkpoint_every`` the
    rematerialised segment inside a window, steps (None: none).
    """

    state0: StationState
    forcing: StationForcing
    params: StationParams
    grid: SoilGrid
    sensor_weights: jax.Array
    liquid: jax.Array
    options: StationOptions = eqx.field(static=True)
    checkpoint_every: int | None = eqx.field(static=True, default=1)

    def seen(self, state: StationState) -> jax.Array:
        """The moisture the sensors see at their depths (..., S), m3 m-3: liquid or total water, as each sees it."""
        w_t = self.sensor_weights.T.astype(state.soil.smc.dtype)
        return jnp.where(self.liquid, state.soil.sh2o @ w_t, state.soil.smc @ w_t)

    def free_run(self, transport: AbstractTransport) -> tuple[StationState, jax.Array]:
        """The whole run without gradient bookkeeping: the states after each step and what the sensors see (T, S)."""
        _, (states, seen) = run_station(
            self.state0, self.forcing, self.params, self.grid, self.options, transport=transport,
            observe=lambda s, f: (s, self.seen(s)), finite_check=False,
        )  # fmt: skip
        return states, seen

    def window_losses(
        self, transport: AbstractTransport, states: StationState, forcing: StationForcing, observed: jax.Array
    ) -> jax.Array:
        """Masked MSE of each window (B,): windows side by side as a leading batch axis of the physics, starting
        from ``states`` (B, ...) (no gradient crosses a window start), ``forcing`` (W, B, ...), ``observed``
        (W, B, S) with NaN where missing."""
        states = jax.lax.stop_gradient(states)
        _, seen = run_station(
            states, forcing, self.params, self.grid, self.options, transport=transport,
            observe=lambda s, f: self.seen(s), checkpoint_every=self.checkpoint_every, finite_check=False,
        )  # fmt: skip
        return masked_mse(seen, observed, axis=(0, 2))
