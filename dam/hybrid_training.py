"""AI in physics, trained: the network water transport of :mod:`dam.coupling.hybrid` is taught to imitate the
Richards sub-step (:func:`pretrain_to_physics`), then trained end to end through the station model against
observed layered soil moisture (:func:`train_hybrid`), both by the training engine :func:`dam.training.fit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .coupling.hybrid import HybridObjective, NeuralWaterTransport, PhysicsWaterSamples, imitation_loss
from .coupling.losses import masked_mse
from .physics.types import SoilGrid, SoilOptions, SoilParams
from .sequences import chronological_split
from .site_run import StationSetup
from .training import fit

__all__ = ["HybridTrainResult", "pretrain_to_physics", "train_hybrid"]


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
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
) -> tuple[NeuralWaterTransport, dict]:
    """Teach ``net`` the Richards sub-step on ``samples`` (:func:`dam.coupling.hybrid.physics_water_samples`).

    Loss :func:`~dam.coupling.hybrid.imitation_loss`, with each layer's misfit scaled by the standard deviation of
    the Richards sub-step's change of its liquid moisture (so slow deep layers count as much as the top one).
    Adam with a cosine-decayed ``learning_rate`` over about ``iterations`` updates, shuffled mini-batches of
    ``batch_size`` samples (None: all); with ``checkpoint_dir``, about ten orbax checkpoints over the run. Returns
    the trained network and :func:`dam.training.fit`'s history.
    """
    n = samples.sh2o_out.shape[0]
    change = np.asarray(samples.sh2o_out - samples.water.sh2o)
    scale = jnp.asarray(np.maximum(change.std(axis=0), 1e-12), samples.sh2o_out.dtype)
    size = n if batch_size is None or batch_size >= n else int(batch_size)
    n_batches = -(-n // size)
    epochs = max(1, -(-iterations // n_batches))
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * n_batches, alpha=0.05))
    return fit(
        net, lambda model, batch: imitation_loss(model, batch, params, grid, options, scale), samples,
        optimizer=optimizer, epochs=epochs, batch_size=size, seed=seed, checkpoint_dir=checkpoint_dir,
        checkpoint_every=max(1, epochs // 10), progress=progress, desc="pretrain transport",
    )  # fmt: skip


@dataclasses.dataclass
class HybridTrainResult:
    """What :func:`train_hybrid` returns: ``net`` the network with the lowest validation loss (the untrained one
    included; the last one without a validation period); ``history`` :func:`dam.training.fit`'s (``initial_val``
    the untrained network's validation loss, ``val_loss`` after each epoch, (m3 m-3)^2); ``best_epoch`` (-1: the
    untrained network); ``window`` steps per window."""

    net: NeuralWaterTransport
    history: dict
    best_epoch: int
    window: int


def _default_window(dt_s: float) -> int:
    return int(round(10 * 86400 / dt_s)) if dt_s < 86400 else 60


def _checked(observations: Any, sensor_layers: Any, n: int, n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Observations (T, S) and the sensors' (S, N) layer weights from (S, N) weights or (S,) layer indices."""
    obs = np.asarray(observations, dtype=float)
    if obs.ndim != 2 or obs.shape[0] != n:
        raise ValueError(f"observations must have shape (T={n}, sensors), got {obs.shape}")
    n_sensors = obs.shape[1]
    arr = np.asarray(sensor_layers)
    if arr.ndim == 1:
        layers = arr.astype(int)
        if layers.shape != (n_sensors,) or (layers < 0).any() or (layers >= n_layers).any():
            raise ValueError(f"sensor_layers {layers.tolist()} must give a layer in [0, {n_layers}) for each of "
                             f"{n_sensors} sensors")  # fmt: skip
        return obs, np.eye(n_layers)[layers]
    if arr.shape != (n_sensors, n_layers) or not np.allclose(arr.sum(axis=1), 1.0) or (arr < 0).any():
        raise ValueError(f"sensor_layers weights of shape {arr.shape} must be ({n_sensors}, {n_layers}), >= 0, rows "
                         "summing to 1")  # fmt: skip
    return obs, arr.astype(float)


def _window_steps(window: int | None, checkpoint_every: int | None, n_train: int, dt_s: float):
    """Steps per window (default :func:`_default_window`, at most the ``n_train`` training steps) rounded down to a
    multiple of the rematerialisation segment ``checkpoint_every`` (None where the window is not longer)."""
    window = max(1, min(int(window or _default_window(dt_s)), n_train))
    if checkpoint_every and window > checkpoint_every:
        window -= window % int(checkpoint_every)
    elif checkpoint_every:
        checkpoint_every = None
    return window, checkpoint_every


def train_hybrid(
    setup: StationSetup,
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
    progress: bool = False,
    liquid: bool | Sequence[bool] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> HybridTrainResult:
    """Train ``net`` end to end inside the station model against observed layered soil moisture.

    Truncated back-propagation through time: the training period is cut into windows of ``window`` steps. A
    forward run of the hybrid model from ``setup.state0`` over the training and validation periods gives the state
    at every window start (no gradient crosses a window start) and the validation loss; it is made before
    training and after every epoch, and the next epoch's windows start from its states. Mini-batches of
    ``windows_per_batch`` windows, run side by side as a batch of columns, each give one optimiser update on the
    mean of their windows' masked MSE. Inside a window the scan is rematerialised every ``checkpoint_every``
    steps (``window`` is rounded down to a multiple of it: a remainder would compile a second copy of the model).

    Parameters
    ----------
    setup : the station set-up (spun up by the caller); its dtype is the run's dtype.
    observations : (T, S) observed soil moisture (m3 m-3) at the model steps of ``setup``, NaN where missing.
    net : the initial network (e.g. after :func:`pretrain_to_physics`).
    sensor_layers : how each observed column reads the model layers: (S, N) layer weights, e.g.
        ``setup.site.sensor_mapping("soil_moisture", setup.layer_bottoms_m).weights`` (:mod:`dam.sensors`), or
        (S,) 0-based layer indices (each sensor reads its layer).
    train_steps, val_steps : step ranges; default :func:`dam.sequences.chronological_split` (first 72 % train,
        next 8 % validation).
    window : steps per window; default 10 days of sub-daily steps, 60 daily steps.
    windows_per_batch, epochs : windows per update, passes over the training windows.
    optimizer : optax transformation; default Adam(``learning_rate``) with global-norm clipping at 1.
    checkpoint_every : rematerialisation segment inside a window, steps (None: none).
    progress : show a progress bar.
    liquid : compare with liquid water (True) or total water (False), one value or one per sensor; default what
        each of the site's sensors sees (``soil_moisture_measures`` in ``site.yaml``).
    checkpoint_dir : orbax checkpoints of the training (resumed when present).
    """
    dtype = jnp.asarray(setup.state0.soil.smc).dtype
    n = len(setup.times)
    obs, weights = _checked(observations, sensor_layers, n, setup.grid.n_layers)
    liquid = setup.site.sees_liquid("soil_moisture") if liquid is None else liquid
    d_train, d_val, _ = chronological_split(n)
    train = train_steps or d_train
    val = val_steps if val_steps is not None else (d_val if train_steps is None else None)
    t0, t1, _ = train.indices(n)
    if t1 - t0 < 1:
        raise ValueError("the training period is empty")
    window, checkpoint_every = _window_steps(window, checkpoint_every, t1 - t0, setup.options.dt_s)
    starts = t0 + window * np.arange((t1 - t0) // window)
    end = max(t1, val.indices(n)[1]) if val is not None else t1

    objective = HybridObjective(
        state0=setup.state0, params=setup.params, grid=setup.grid, options=setup.options,
        forcing=jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[:end], dtype), setup.forcing),
        sensor_weights=jnp.asarray(weights, dtype), checkpoint_every=checkpoint_every,
        liquid=jnp.asarray(np.broadcast_to(np.asarray(liquid, bool), (obs.shape[1],))),
    )  # fmt: skip
    observed = jnp.asarray(obs[:end], dtype)
    rows = starts[:, None] + np.arange(window)[None, :]  # (windows, window) step indices
    frc_w = jax.tree_util.tree_map(lambda x: x[rows], objective.forcing)
    obs_w = observed[rows]
    free_run = eqx.filter_jit(HybridObjective.free_run)
    last_run: dict[str, Any] = {}  # the free run of val_fn, reused as the next epoch's window starts

    def windows(model):
        states, _ = last_run.pop("run", None) or free_run(objective, model)
        before = jax.tree_util.tree_map(lambda s0, s: jnp.concatenate([jnp.asarray(s0)[None], s[:-1]])[starts],
                                        setup.state0, states)  # fmt: skip
        return {"states": before, "forcing": frc_w, "observed": obs_w}

    def batch_fn(data, idx):
        pick = lambda x: x[idx]  # noqa: E731
        swap = lambda x: jnp.swapaxes(x[idx], 0, 1)  # noqa: E731
        return (jax.tree_util.tree_map(pick, data["states"]), jax.tree_util.tree_map(swap, data["forcing"]),
                swap(data["observed"]))  # fmt: skip

    def val_fn(model):
        last_run["run"] = free_run(objective, model)
        v0, v1, _ = val.indices(n)
        return masked_mse(last_run["run"][1][v0:v1], observed[v0:v1])

    trained, history = fit(
        net, lambda model, b: objective.window_losses(model, *b), windows, n_members=len(starts),
        batch_size=max(1, min(int(windows_per_batch), len(starts))), batch_fn=batch_fn, epochs=epochs,
        optimizer=optimizer or optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate)),
        val_fn=None if val is None else val_fn, validate_initial=True, seed=seed, checkpoint_dir=checkpoint_dir,
        progress=progress, desc="train hybrid",
    )  # fmt: skip
    return HybridTrainResult(net=trained, history=history, best_epoch=history["best_epoch"], window=window)
