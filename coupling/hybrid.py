"""AI in physics: a neural network replaces the soil water transport inside the time-stepped station model.

:class:`NeuralWaterTransport` is a drop-in for :func:`dam.physics.soil_water.soil_water` (same signature, same
:class:`~dam.physics.soil_water.WaterFluxes`), so it plugs into ``run_station(..., water=net)`` and
``soil_step(..., water=net)``. Only the transport *between* layers and out of the bottom is learned; every
other part of Noah-MP's soil water step (``WaterMain`` / ``SoilWaterMain``) stays physical:

1. frost and sublimation of frozen ground go to layer-1 ice; liquid water above the effective porosity leaves as
   saturation excess (as Noah-MP ``SoilWaterMain``);
2. Schaake et al. (1996) infiltration and infiltration-excess runoff (:mod:`dam.physics.infiltration_runoff`);
3. infiltration into layer 1, soil evaporation from layer 1 and transpiration from each layer, applied
   explicitly (the right-hand side of Noah-MP ``SoilWaterDiffusionRichards``), then Noah-MP's bucket overflow
   and negative-water fix (``SoilMoistureSolver``, ``SoilWaterMain``);
4. the network's redistribution: inter-layer fluxes ``q_k`` (k = 1..N-1, + down) and bottom drainage ``q_N``
   (>= 0) update each layer by continuity, ``dz_k dtheta_k = (q_{k-1} - q_k) dt``.

Steps 3 and 4 together are ``dz_k dtheta_k = (q_{k-1} - q_k - s_k) dt`` with ``q_0`` the infiltration and
``s_k`` the sinks, split so that the network acts on a state already inside its bounds. Because every update
is a flux difference, water is conserved exactly (to round-off) whatever the weights. Bounds hold by
construction: a learned flux leaving a layer is squashed (``cap * tanh(flux / cap)``) to at most half the
water the donor holds above its floor (``floor_fraction * smcwlt``) and at most half the free pore space of
the receiver (each layer has two faces, so the two halves never overdraw it). Ice is frozen during the step.

Training (:func:`train_hybrid`) is end to end through ``lax.scan`` over the full station model with truncated
back-propagation through time; :func:`pretrain_to_physics` first teaches the network to imitate the Richards
solver one step at a time on a physics run (cheap: all steps form one batch).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dam.physics._safe import div
from dam.physics.infiltration_runoff import schaake_infiltration
from dam.physics.soil_water import WaterFluxes, bucket, min_water_fix, soil_water
from dam.physics.station import run_station, station_step
from dam.physics.types import SoilForcing, SoilGrid, SoilOptions, SoilParams

__all__ = [
    "N_FEATURES",
    "HybridTrainResult",
    "NeuralWaterTransport",
    "PhysicsWaterSamples",
    "hybrid_loss",
    "physics_water_samples",
    "pretrain_to_physics",
    "train_hybrid",
]

# Feature scaling (fixed, so a network needs no fitted normaliser and transfers between sites).
MM_PER_DAY = 86400.0e3  # m s-1 -> mm day-1
SINK_SCALE_MM_DAY = 5.0  # typical transpiration / evaporation rate, mm day-1
LOG_K_SCALE = 10.0  # scale of log relative conductivity and log suction
MIN_SATURATION = 0.01  # floor of theta / theta_s in the Clapp-Hornberger features (Noah-MP's value)
MAX_LOG_FLUX = 8.0  # soft upper bound of the log flux (in units of the saturated conductivity)
LAYER_FEATURES = 9
N_FEATURES = 2 * LAYER_FEATURES + 5


class NeuralWaterTransport(eqx.Module):
    """Soil water step whose inter-layer transport and drainage come from an MLP (see the module docstring).

    One MLP is shared by all interfaces; for interface k (between layers k and k+1, or the bottom when k = N) it
    sees the features of both layers (liquid and ice saturation, log Clapp-Hornberger relative conductivity and
    suction, wetness between wilting point and field capacity, log saturated conductivity, b, thickness, sink
    rate), the interface depth, the log suction difference, the infiltration rate, the time step and a bottom
    flag. It returns two log rates in units of the saturated conductivity ``dksat`` of the upper layer;
    the flux is ``dksat * (exp(o_down) - exp(o_up))`` (bottom: ``slope * dksat * exp(o_down)``), then bounded.

    Attributes
    ----------
    mlp : the network, ``N_FEATURES`` inputs, 2 outputs.
    floor_fraction : a learned flux never takes a layer below ``floor_fraction * smcwlt`` (m3 m-3) (static).
    substeps : redistribution sub-steps per model step, each re-evaluating the network (static).
    """

    mlp: eqx.nn.MLP
    floor_fraction: float = eqx.field(static=True, default=0.5)
    substeps: int = eqx.field(static=True, default=1)

    def __init__(
        self,
        key: jax.Array,
        *,
        width: int = 32,
        depth: int = 2,
        floor_fraction: float = 0.5,
        substeps: int = 1,
        init_log_flux: tuple[float, float] = (-5.0, -6.0),
        dtype: Any = None,
    ) -> None:
        if not 0.0 <= floor_fraction < 1.0:
            raise ValueError(f"floor_fraction must lie in [0, 1), got {floor_fraction}")
        if int(substeps) < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
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
        self.substeps = int(substeps)

    # ------------------------------------------------------------------ features and fluxes
    def features(
        self,
        sh2o: jax.Array,
        ice: jax.Array,
        sink_mps: jax.Array,
        infil_mps: jax.Array,
        params: SoilParams,
        grid: SoilGrid,
        dt: float,
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
                jnp.full(shape, math.log10(dt / 86400.0), sh2o.dtype),
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

    def redistribute(
        self,
        sh2o: jax.Array,
        ice: jax.Array,
        sink_mps: jax.Array,
        infil_mps: jax.Array,
        params: SoilParams,
        grid: SoilGrid,
        options: SoilOptions,
        dt: float,
    ) -> tuple[jax.Array, jax.Array]:
        """One bounded, conservative redistribution over ``dt`` seconds.

        Returns the new liquid moisture (..., N) (m3 m-3) and the bottom drainage of the sub-step (..., ), m.
        """
        c = options.const
        shape = sh2o.shape
        dz = jnp.broadcast_to(grid.dz, shape)
        smcmax = jnp.broadcast_to(params.smcmax, shape)
        floor = self.floor_fraction * jnp.broadcast_to(params.smcwlt, shape)
        porosity = jnp.maximum(c.porosity_floor, smcmax - ice)
        avail = jnp.maximum(sh2o - floor, 0.0) * dz  # m of water above the floor
        space = jnp.maximum(porosity - sh2o, 0.0) * dz  # m of free pore space

        o = self.log_rates(self.features(sh2o, ice, sink_mps, infil_mps, params, grid, dt))
        ks = jnp.broadcast_to(params.dksat, shape)
        slope = jnp.broadcast_to(params.slope, shape[:-1])
        rate_down, rate_up = jnp.exp(o[..., 0]), jnp.exp(o[..., 1])
        raw = ks[..., :-1] * (rate_down[..., :-1] - rate_up[..., :-1]) * dt  # interfaces, m per sub-step
        raw_bottom = slope * ks[..., -1] * rate_down[..., -1] * dt

        down_cap = 0.5 * jnp.minimum(avail[..., :-1], space[..., 1:])
        up_cap = 0.5 * jnp.minimum(avail[..., 1:], space[..., :-1])
        face = jnp.where(raw >= 0.0, _bounded(raw, down_cap), _bounded(raw, up_cap))
        bottom = _bounded(raw_bottom, 0.5 * avail[..., -1])
        zero = jnp.zeros_like(bottom)[..., None]
        into = jnp.concatenate([zero, face], axis=-1)  # q_{k-1}: from above (+ down)
        out = jnp.concatenate([face, bottom[..., None]], axis=-1)  # q_k: to below
        water = sh2o * dz + (into - out)
        return div(water, dz), bottom

    # ------------------------------------------------------------------ the water step
    def __call__(
        self,
        smc: jax.Array,
        sh2o: jax.Array,
        forcing: SoilForcing,
        params: SoilParams,
        grid: SoilGrid,
        options: SoilOptions,
    ) -> tuple[jax.Array, jax.Array, WaterFluxes]:
        """The hybrid soil water step (signature of :func:`dam.physics.soil_water.soil_water`).

        Parameters
        ----------
        smc, sh2o : (..., N) total and liquid moisture after the phase change, m3 m-3.
        forcing : the step's boundary fluxes (:class:`SoilForcing`).

        Returns
        -------
        smc, sh2o : (..., N) updated moisture, m3 m-3.
        fluxes : :class:`WaterFluxes` (``runoff_surface_mm`` infiltration and saturation excess, mm per step;
            ``runoff_subsurface_mm`` drainage minus the negative-water refill, mm per step; ``drainage_mmps``
            learned bottom drainage, mm s-1; ``infil_mps`` infiltration, m s-1; ``nsub`` = ``substeps``).
        """
        c = options.const
        dt = options.dt_s
        dz = grid.dz
        n = grid.n_layers

        # WaterMain: frost / sublimation of frozen ground goes to layer-1 ice (as the physical step does).
        ice = jnp.maximum(0.0, smc - sh2o)
        frozen = forcing.frozen_ground > 0
        ice1 = ice[..., 0] + div(forcing.frz_top_ice_flux_mmps * dt, dz[0] * c.rho_water)
        liq1 = jnp.where(ice1 < 0.0, sh2o[..., 0] + ice1, sh2o[..., 0])
        ice1 = jnp.where(ice1 < 0.0, 0.0, ice1)
        ice = ice.at[..., 0].set(jnp.where(frozen, ice1, ice[..., 0]))
        sh2o = sh2o.at[..., 0].set(jnp.where(frozen, liq1, sh2o[..., 0]))
        evap = jnp.where(frozen, 0.0, forcing.evap_mps)

        # SoilWaterMain: liquid water above the effective porosity leaves as runoff.
        porosity = jnp.maximum(c.porosity_floor, params.smcmax - ice)
        sat_excess = jnp.sum(jnp.maximum(0.0, sh2o - porosity) * dz, axis=-1)
        sh2o = jnp.minimum(porosity, sh2o)

        # Schaake infiltration over the whole step, then the explicit sources and sinks.
        qin = forcing.qinsurf_mps
        runoff_inf, infil = schaake_infiltration(qin, sh2o, ice, params, dz, dt, c)
        etran = jnp.broadcast_to(forcing.etran_mps, sh2o.shape)
        sink = etran.at[..., 0].add(evap)
        source = (-sink).at[..., 0].add(infil)
        sh2o = sh2o + div(source * dt, dz)
        layers, overflow = bucket([sh2o[..., k] for k in range(n)], ice, params, dz, c)
        sh2o, refill_mm = min_water_fix(jnp.stack(layers, axis=-1), dz, c)

        # The learned transport.
        drain = jnp.zeros_like(qin)
        for _ in range(self.substeps):
            sh2o, d = self.redistribute(sh2o, ice, sink, infil, params, grid, options, dt / self.substeps)
            drain = drain + d

        drain_mm = drain * c.rho_water
        fluxes = WaterFluxes(
            runoff_surface_mm=(runoff_inf * dt + sat_excess + overflow) * c.rho_water,
            runoff_subsurface_mm=drain_mm - refill_mm,
            drainage_mmps=div(drain_mm, dt),
            infil_mps=infil,
            nsub=jnp.full(jnp.shape(qin), self.substeps, jnp.int32),
        )
        return sh2o + ice, sh2o, fluxes


def _bounded(flux: jax.Array, cap: jax.Array) -> jax.Array:
    """``cap * tanh(flux / cap)``: ~flux when small, never beyond ``cap`` in magnitude; 0 (with finite
    gradients) where ``cap`` is 0."""
    ok = cap > 0.0
    safe = jnp.where(ok, cap, 1.0)
    return jnp.where(ok, safe * jnp.tanh(flux / safe), 0.0)


# ====================================================================== pretraining on a physics run
class PhysicsWaterSamples(eqx.Module):
    """Inputs and outputs of the physical soil water step over a run, one row per model step (leading axis T).

    ``smc_in`` / ``sh2o_in`` (T, N) moisture entering the water step (after phase change), m3 m-3; ``forcing``
    its :class:`SoilForcing`; ``smc_out`` / ``sh2o_out`` (T, N) after the physical (Richards) step, m3 m-3.
    """

    smc_in: jax.Array
    sh2o_in: jax.Array
    forcing: SoilForcing
    smc_out: jax.Array
    sh2o_out: jax.Array


def _as_array_tree(tree: Any, dtype: Any = None) -> Any:
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype) if dtype is not None else jnp.asarray(x), tree)


def _setup_dtype(setup: Any) -> Any:
    return jnp.asarray(setup.state0.soil.smc).dtype


def _forcing_slice(setup: Any, i0: int, i1: int) -> Any:
    dtype = _setup_dtype(setup)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[i0:i1], dtype), setup.forcing)


def physics_water_samples(setup: Any, steps: slice | None = None) -> PhysicsWaterSamples:
    """Record what the physical soil water step receives and returns on a physics run of ``setup``.

    The station runs from ``setup.state0`` to ``steps.stop`` with a water callable that calls the physical
    step and records its inputs; the rows of ``steps`` are kept. ``setup`` is a
    :class:`dam.station.StationSetup` (fields ``state0``, ``forcing``, ``params``, ``grid``, ``options``).
    """
    n = jax.tree_util.tree_leaves(setup.forcing)[0].shape[0]
    steps = steps or slice(0, n)
    i0, i1, _ = steps.indices(n)
    return _physics_samples(setup.state0, _forcing_slice(setup, 0, i1), setup.params, setup.grid, setup.options, i0)


@eqx.filter_jit
def _physics_samples(state0, forcing, params, grid, options, i0: int) -> PhysicsWaterSamples:
    def step(state, frc):
        box: dict[str, Any] = {}

        def recorder(smc, sh2o, f, p, g, o):
            box["inputs"] = (smc, sh2o, f)  # tracers of this scan body, returned below
            return soil_water(smc, sh2o, f, p, g, o)

        new, _ = station_step(state, frc, params, grid, options, water=recorder)
        smc_in, sh2o_in, f = box["inputs"]
        return new, PhysicsWaterSamples(smc_in, sh2o_in, f, new.soil.smc, new.soil.sh2o)

    _, samples = jax.lax.scan(step, state0, forcing)
    return jax.tree_util.tree_map(lambda x: x[i0:], samples)


def pretrain_to_physics(
    net: NeuralWaterTransport,
    samples: PhysicsWaterSamples,
    params: SoilParams,
    grid: SoilGrid,
    options: SoilOptions,
    *,
    iterations: int = 400,
    learning_rate: float = 3e-3,
    batch_size: int | None = 4096,
    seed: int = 0,
    progress: bool | Callable[[dict], None] = False,
) -> tuple[NeuralWaterTransport, dict[str, list[float]]]:
    """Teach ``net`` to imitate the physical soil water step, one step at a time (teacher forcing).

    Loss: mean over steps and layers of ``((sh2o_net - sh2o_phys) / sigma_k)^2``, with ``sigma_k`` the standard
    deviation of the physical step's liquid-moisture change in layer k (so that slow deep layers count as much
    as the top one). Adam with a cosine-decayed ``learning_rate``, mini-batches of ``batch_size`` steps (None:
    all). Returns the trained network and ``{"loss": [...]}`` (every 10th iteration).
    """
    s = samples
    t = s.sh2o_in.shape[0]
    dtheta = np.asarray(s.sh2o_out - s.sh2o_in)
    sigma = jnp.asarray(np.maximum(dtheta.std(axis=0), 1e-12), s.sh2o_in.dtype)

    def loss_fn(model, idx):
        batch = jax.tree_util.tree_map(lambda x: x[idx], s)
        _, sh2o, _ = model(batch.smc_in, batch.sh2o_in, batch.forcing, params, grid, options)
        return jnp.mean(((sh2o - batch.sh2o_out) / sigma) ** 2)

    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, max(iterations, 1), alpha=0.05))
    opt_state = opt.init(eqx.filter(net, eqx.is_inexact_array))

    @eqx.filter_jit
    def update(model, opt_state, idx):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, idx)
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    bs = t if batch_size is None or batch_size >= t else int(batch_size)
    history: dict[str, list[float]] = {"loss": []}
    report = _reporter(progress)
    for it in range(iterations):
        idx = jnp.asarray(rng.choice(t, bs, replace=False) if bs < t else np.arange(t))
        net, opt_state, loss = update(net, opt_state, idx)
        if it % 10 == 0 or it == iterations - 1:
            history["loss"].append(float(loss))
            report({"stage": "pretrain", "iteration": it, "loss": float(loss)})
    return net, history


# ====================================================================== end-to-end training
@dataclasses.dataclass
class HybridTrainResult:
    """What :func:`train_hybrid` returns.

    ``net`` the network with the lowest validation loss (the last one without a validation period);
    ``history`` per epoch: ``epoch``, ``train_loss`` (mean mini-batch loss, (m3 m-3)^2), ``val_loss`` (loss of
    the free-running model over the validation period at the start of the epoch, i.e. with the weights of the
    previous epoch; epoch 0 is the untrained network), ``seconds``; ``best_epoch``; ``window`` steps.
    """

    net: NeuralWaterTransport
    history: dict[str, list[float]]
    best_epoch: int
    window: int


def hybrid_loss(modelled: jax.Array, observed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Masked squared error: (sum of squared errors where ``observed`` is finite, number of such values)."""
    ok = jnp.isfinite(observed)
    err = jnp.where(ok, modelled - jnp.where(ok, observed, 0.0), 0.0)
    return jnp.sum(err**2), jnp.sum(ok).astype(modelled.dtype)


def _reporter(progress: bool | Callable[[dict], None]) -> Callable[[dict], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda d: print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items()))
    return lambda d: None


def _default_split(n: int, train_frac: float = 0.8, val_frac_of_train: float = 0.1) -> tuple[slice, slice]:
    """The chronological split of dam.training.chronological_split (train, validation tail)."""
    n_train = int(math.floor(n * train_frac))
    n_val = int(math.floor(n_train * val_frac_of_train))
    return slice(0, n_train - n_val), slice(n_train - n_val, n_train)


def _sensor_weights(sensor_layers, n_sensors: int, n_layers: int) -> np.ndarray:
    """(S, N) layer weights from (S, N) weights or (S,) layer indices (checked)."""
    arr = np.asarray(sensor_layers)
    if arr.ndim == 1:
        layers = arr.astype(int)
        if layers.shape != (n_sensors,) or (layers < 0).any() or (layers >= n_layers).any():
            raise ValueError(f"sensor_layers {layers.tolist()} must give a layer in [0, {n_layers}) for each of "
                             f"{n_sensors} sensors")  # fmt: skip
        return np.eye(n_layers)[layers]
    if arr.shape != (n_sensors, n_layers) or not np.allclose(arr.sum(axis=1), 1.0) or (arr < 0).any():
        raise ValueError(f"sensor_layers weights of shape {arr.shape} must be ({n_sensors}, {n_layers}), >= 0, rows "
                         "summing to 1")  # fmt: skip
    return arr.astype(float)


def train_hybrid(
    setup: Any,
    observations: Any,
    net: NeuralWaterTransport,
    *,
    sensor_layers: Sequence[int] | np.ndarray,
    train_steps: slice | None = None,
    val_steps: slice | None = None,
    window: int | None = None,
    windows_per_batch: int = 8,
    epochs: int = 3,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    checkpoint_every: int | None = 1,
    seed: int = 0,
    progress: bool | Callable[[dict], None] = False,
    liquid: bool | Sequence[bool] | None = None,
) -> HybridTrainResult:
    """Train ``net`` end to end inside the station model against observed layered soil moisture.

    Truncated back-propagation through time: the training period is cut into windows of ``window`` steps. At the
    start of every epoch one forward run of the hybrid model (no gradient) from ``setup.state0`` over training and
    validation periods gives the state at every window start (``stop_gradient``: no gradient crosses a window
    start) and the validation loss. Then mini-batches of ``windows_per_batch`` windows, run side by side as a
    leading batch axis of the physics, each give one optimiser update; inside a window the scan is checkpointed
    every ``checkpoint_every`` steps (``jax.checkpoint`` segments: reverse-mode memory ~ window /
    checkpoint_every + checkpoint_every steps; ``window`` is rounded down to a multiple of it, since a remainder
    would be compiled as a second copy of the model). Later mini-batches of an epoch start from states of the
    epoch's first forward run (slightly stale weights), the usual price of parallel windows.

    Parameters
    ----------
    setup : :class:`dam.station.StationSetup` (spun up by the caller); its dtype is the run's dtype.
    observations : (T, S) observed soil moisture (m3 m-3) at the model steps of ``setup`` (step ends), NaN
        where missing.
    net : the initial network (e.g. after :func:`pretrain_to_physics`).
    sensor_layers : how each observed column reads the model layers: (S, N) layer weights, e.g.
        ``setup.site.sensor_mapping("soil_moisture", setup.layer_bottoms_m).weights`` (:mod:`dam.sensors`), or
        (S,) 0-based layer indices (each sensor reads its layer).
    train_steps, val_steps : step ranges; default the chronological split of :mod:`dam.training` (first 72 % train,
        next 8 % validation; the last 20 % are left for testing).
    window : steps per window; default 10 days of steps for sub-daily data and 60 steps for daily data.
    windows_per_batch : windows per optimiser update.
    epochs : passes over the training windows.
    optimizer : an optax transformation; default Adam(``learning_rate``) with global-norm clipping at 1.
    checkpoint_every : rematerialisation segment inside a window, steps (1: every step recomputed in the reverse
        pass, only the states stored, the fastest for the station model; None: none).
    progress : True prints one line per epoch, a callable receives a dict per epoch.
    liquid : compare the observations with liquid water ``sh2o`` (True) or total ``smc`` (False), one value or
        one per sensor; default what each of the site's sensors sees (``soil_moisture_measures`` in ``site.yaml``).

    Returns
    -------
    :class:`HybridTrainResult`.
    """
    dtype = _setup_dtype(setup)
    obs = np.asarray(observations, dtype=float)
    n = jax.tree_util.tree_leaves(setup.forcing)[0].shape[0]
    if obs.ndim != 2 or obs.shape[0] != n:
        raise ValueError(f"observations must have shape (T={n}, sensors), got {obs.shape}")
    weights = _sensor_weights(sensor_layers, obs.shape[1], setup.grid.n_layers)
    d_train, d_val = _default_split(n)
    train = train_steps or d_train
    val = val_steps if val_steps is not None else (d_val if train_steps is None else None)
    t0, t1, _ = train.indices(n)
    if t1 - t0 < 1:
        raise ValueError("the training period is empty")
    if window is None:
        window = int(round(10 * 86400 / setup.options.dt_s)) if setup.options.dt_s < 86400 else 60
    window = max(1, min(int(window), t1 - t0))
    if checkpoint_every and window > checkpoint_every:
        # whole segments only: a remainder would be a second traced copy of the model (compile time doubles)
        window -= window % int(checkpoint_every)
    elif checkpoint_every:
        checkpoint_every = None
    n_win = (t1 - t0) // window
    starts = t0 + window * np.arange(n_win)
    end = max(t1, val.indices(n)[1]) if val is not None else t1

    forcing = _forcing_slice(setup, 0, end)
    obs_j = jnp.asarray(obs[:end], dtype)
    params, grid, options = setup.params, setup.grid, setup.options
    if liquid is None:
        liquid = setup.site.sees_liquid("soil_moisture")
    liquid_mask = jnp.asarray(np.broadcast_to(np.asarray(liquid, bool), (obs.shape[1],)))
    w_t = jnp.asarray(weights.T, dtype)

    def seen(s):  # the moisture each sensor sees: liquid or total water, read at its depth
        return jnp.where(liquid_mask, s.soil.sh2o @ w_t, s.soil.smc @ w_t)

    @eqx.filter_jit
    def free_run(model):
        _, smc = run_station(
            setup.state0, forcing, params, grid, options, water=model,
            observe=lambda s, f: (s, seen(s)), finite_check=False,
        )  # fmt: skip
        return smc

    def batch_loss(model, states, frc, ob):
        # The windows of a batch run side by side as a leading batch axis of the physics (no vmap needed):
        # states (B, ...), forcing (W, B), observations (W, B, S).
        states = jax.lax.stop_gradient(states)
        _, smc = run_station(
            states, frc, params, grid, options, water=model, observe=lambda s, f: seen(s),
            checkpoint_every=checkpoint_every, finite_check=False,
        )  # fmt: skip
        sse, cnt = hybrid_loss(smc, ob)
        return sse / jnp.maximum(cnt, 1.0)

    opt = optimizer or optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    opt_state = opt.init(eqx.filter(net, eqx.is_inexact_array))

    @eqx.filter_jit
    def update(model, opt_state, states, frc, ob):
        loss, grads = eqx.filter_value_and_grad(batch_loss)(model, states, frc, ob)
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    idx_w = starts[:, None] + np.arange(window)[None, :]  # (n_win, window) step indices
    frc_w = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x[idx_w], 0, 1), forcing)  # (window, n_win)
    obs_w = jnp.swapaxes(obs_j[idx_w], 0, 1)  # (window, n_win, S)
    rng = np.random.default_rng(seed)
    report = _reporter(progress)
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_loss": [], "seconds": []}
    best, best_loss, best_epoch = net, np.inf, 0
    bpe = max(1, min(int(windows_per_batch), n_win))

    for epoch in range(epochs + 1):
        tic = time.perf_counter()
        states, smc = free_run(net)
        val_loss = np.nan
        if val is not None:
            v0, v1, _ = val.indices(n)
            sse, cnt = hybrid_loss(smc[v0:v1], obs_j[v0:v1])
            val_loss = float(sse / jnp.maximum(cnt, 1.0))
            if val_loss < best_loss:
                best, best_loss, best_epoch = net, val_loss, epoch
        if epoch == epochs:  # the final free run only scores the last weights
            if val is None:
                best, best_epoch = net, epoch
            history["val_loss"].append(val_loss)
            history["train_loss"].append(np.nan)
            history["epoch"].append(epoch)
            history["seconds"].append(time.perf_counter() - tic)
            report({"stage": "train", "epoch": epoch, "val_loss": val_loss})
            break
        # state entering each window: after step start-1 (the initial state for a window at step 0)
        before = jax.tree_util.tree_map(
            lambda s0, s: jnp.concatenate([jnp.asarray(s0)[None], s[:-1]])[starts], setup.state0, states
        )
        order = rng.permutation(n_win)
        losses = []
        for b0 in range(0, n_win, bpe):
            sel = order[b0 : b0 + bpe]
            if len(sel) < bpe:  # keep one compiled shape: top up from the start of the permutation
                sel = np.concatenate([sel, order[: bpe - len(sel)]])
            st = jax.tree_util.tree_map(lambda x, s=sel: x[s], before)
            fr = jax.tree_util.tree_map(lambda x, s=sel: x[:, s], frc_w)
            net, opt_state, loss = update(net, opt_state, st, fr, obs_w[:, sel])
            losses.append(float(loss))
        history["epoch"].append(epoch)
        history["train_loss"].append(float(np.mean(losses)))
        history["val_loss"].append(val_loss)
        history["seconds"].append(time.perf_counter() - tic)
        report({"stage": "train", "epoch": epoch, "train_loss": history["train_loss"][-1], "val_loss": val_loss})
    return HybridTrainResult(net=best, history=history, best_epoch=best_epoch, window=window)
