"""Differentiable parameter learning (dPL): one network maps site attributes to the station model's parameters
at many sites, trained through the physics on all of them together (:func:`calibrate_dpl`).

The gradient of each site's loss with respect to its latent parameters (:func:`dam.coupling.calibration.value_and_grad`
on the site's problem, built as in :func:`dam.calibration.calibrate`) is chained through the network
(``jax.vjp``), so sites of any time step and length share one network and each site's compiled gradient.
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
import pandas as pd

from .calibration import DEFAULT_SPECS, SpecLike, _history_frame, _problem, _single_batch
from .coupling.calibration import (
    CalibrationProblem,
    ParameterSpec,
    apply_parameters,
    current_values,
    initial_latent,
    latent_from_vector,
    latent_to_values,
    latent_vector,
    loss_value,
    make_specs,
    value_and_grad,
)
from .coupling.losses import PhysicsLoss
from .physics.station import StationParams
from .site_run import StationSetup
from .training import fit

__all__ = ["DPLResult", "calibrate_dpl"]


@dataclasses.dataclass
class DPLResult:
    """``network`` the trained MLP (normalised attributes -> latent vector, or with ``residual`` its change from
    the site's own latents); ``params`` / ``values`` per site; ``history`` one row per step (mean loss and
    per-site losses of the trained sites; with validation sites ``val_loss``, and the untrained network's in
    ``history.attrs["initial_val_loss"]``); ``attr_mean`` / ``attr_std`` the attribute normalisation (apply to new
    sites with :meth:`predict`); ``validation`` the sites held out of training and ``best_step`` the step
    returned (-1: the untrained network)."""

    network: eqx.Module
    params: list[StationParams]
    values: list[dict[str, np.ndarray]]
    history: pd.DataFrame
    specs: tuple[ParameterSpec, ...]
    attr_mean: np.ndarray
    attr_std: np.ndarray
    template: dict[str, jax.Array]
    residual: bool = False
    validation: tuple[int, ...] = ()
    best_step: int | None = None

    def predict(self, attributes, params: Sequence[StationParams] | None = None) -> list[dict[str, np.ndarray]]:
        """Parameter values for sites with ``attributes`` (n_sites, n_attr); a ``residual`` network also needs
        each site's own (default) ``params``."""
        a = (np.asarray(attributes, float) - self.attr_mean) / self.attr_std
        if self.residual and (params is None or len(params) != len(a)):
            raise ValueError("a residual dPL network predicts from each site's own parameters: pass params per site")
        out = []
        for i, row in enumerate(a):
            change = self.network(jnp.asarray(row))
            vec = change + latent_vector(initial_latent(params[i], self.specs), self.specs) if self.residual else change
            values = latent_to_values(latent_from_vector(vec, self.template, self.specs), self.specs)
            values = {k: np.asarray(v) for k, v in values.items()}
            if self.residual:  # an unchanged entry keeps the site's value exactly (the latent round trip is not)
                kept = latent_from_vector(change == 0, self.template, self.specs)
                own = current_values(params[i], self.specs)
                values = {k: np.where(np.asarray(kept[k]), own[k], v) for k, v in values.items()}
            out.append(values)
        return out


def _dpl_network(n_attr: int, start, width: int, depth: int, seed: int, dtype, scale: float = 0.01) -> eqx.Module:
    """An MLP whose output starts at the latent vector ``start`` (last layer weights scaled by ``scale``; 0: exactly
    ``start`` for every site)."""
    net = eqx.nn.MLP(n_attr, int(start.size), width, depth, activation=jnp.tanh, key=jax.random.PRNGKey(seed))
    last = net.layers[-1]
    net = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), net, (last.weight * scale, start))
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype) if eqx.is_inexact_array(x) else x, net)


def _dpl_grad_fn(probs: Sequence[CalibrationProblem], a_norm: jax.Array, offsets: jax.Array, template, specs,
                 labels: Sequence[int], scales: Sequence[float]):  # fmt: skip
    """The gradient of the mean site loss with respect to the network: each site's latent gradient pulled back
    through the network (one compiled gradient per site shape); ``offsets`` (n_sites, n_latent) are added to
    the network's output (zero, or each site's own latents for a residual network); each site's loss is divided
    by its entry of ``scales`` and reported as ``site<label>``."""

    def grad_fn(network, _):
        site_losses, net_grad = [], None
        for i, prob in enumerate(probs):
            vec, pullback = eqx.filter_vjp(lambda m, x=a_norm[i], o=offsets[i]: m(x) + o, network)
            value, _, g_lat = value_and_grad(latent_from_vector(vec, template, specs), prob)
            (g_net,) = pullback(latent_vector(g_lat, specs) / (len(probs) * scales[i]))
            net_grad = g_net if net_grad is None else jax.tree_util.tree_map(jnp.add, net_grad, g_net)
            site_losses.append(float(value) / scales[i])
        return float(np.mean(site_losses)), net_grad, {f"site{k}": v for k, v in zip(labels, site_losses, strict=True)}

    return grad_fn


def calibrate_dpl(
    setups: Sequence[StationSetup],
    observations: Sequence | None,
    attributes,
    specs: Sequence[SpecLike] = DEFAULT_SPECS,
    *,
    network: eqx.Module | None = None,
    width: int = 32,
    depth: int = 2,
    seed: int = 0,
    windows: Sequence[tuple[Any, Any]] | None = None,
    steps: int = 30,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 3e-3,
    loss: PhysicsLoss | None = None,
    truncation_steps: int | None = None,
    checkpoint_every: int | None = 1,
    variable: str = "soil_moisture",
    skip_unreliable: bool = True,
    residual: bool = False,
    relative: bool = False,
    validation: Sequence[int] = (),
    patience: int | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
) -> DPLResult:
    """Differentiable parameter learning: an MLP maps normalised site attributes to the latent parameters of
    every site; trained on the mean of the sites' losses.

    Parameters
    ----------
    setups, observations : one set-up (spun up) and one observation set (or ``None``: the site's) per site.
    attributes : (n_sites, n_attr) site attributes (e.g. sand/clay fraction, mean precipitation, latitude),
        normalised here by their mean and standard deviation over the sites.
    network : any module mapping (n_attr,) to (n_latent,) (n_latent = total size of the specs); default an
        ``eqx.nn.MLP(width, depth, tanh)`` whose output starts at the first site's default latents (with
        ``residual``: exactly zero, its last layer's weights start at zero).
    windows : per-site loss windows ``(start, end)``; default the whole set-up.
    residual : the network gives the change of each site's latents from its own set-up's values (every site
        starts from its own table parameters; new sites need theirs, :meth:`DPLResult.predict`).
    relative : each site's loss (training and validation) is divided by its loss with the untrained network (with
        ``residual``: its table parameters; a forward run each), so the network minimises the mean relative
        change of the sites' losses. Without it a few sites far from their observations (e.g. a sensor that reads
        0.3 m3 m-3 above what any parameter set gives) dominate the mean loss, and the network learns to move
        them at the cost of the sites the table parameters already fit.
    validation : indices of sites held out of training (early stopping on sites): the network is trained on
        the others and the step returned is the one whose mean loss at these sites (a forward run each) is
        lowest, the untrained network included (with ``residual``: every site's table parameters). Empty: the
        step of the lowest training loss.
    patience : with ``validation``, stop after this many steps without a lower validation loss.
    Other arguments as :func:`calibrate`; the default optimiser is ``optax.adam(learning_rate)``.
    """
    specs = make_specs(specs)
    loss = loss or PhysicsLoss(data="rmse")
    n_sites = len(setups)
    observations = list(observations) if observations is not None else [None] * n_sites
    windows = list(windows) if windows is not None else [(None, None)] * n_sites
    attributes = np.asarray(attributes, float).reshape(n_sites, -1)
    mean, std = attributes.mean(axis=0), attributes.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    held = sorted({int(i) for i in validation})
    if any(not 0 <= i < n_sites for i in held) or len(held) >= n_sites:
        raise ValueError(f"validation must name some but not all of the {n_sites} sites by index, got {validation}")
    probs = [_problem(s, o, specs, loss, w0, w1, truncation_steps, checkpoint_every, variable=variable,
                      skip_unreliable=skip_unreliable)
             for s, o, (w0, w1) in zip(setups, observations, windows, strict=True)]  # fmt: skip
    template = initial_latent(setups[0].params, specs)
    own = jnp.stack([latent_vector(initial_latent(s.params, specs), specs) for s in setups])
    offsets = own if residual else jnp.zeros_like(own)
    dtype = jnp.asarray(setups[0].state0.soil.smc).dtype
    if network is None:
        start = jnp.zeros_like(own[0]) if residual else latent_vector(template, specs)
        network = _dpl_network(attributes.shape[1], start, width, depth, seed, dtype, 0.0 if residual else 0.01)
    a_norm = jnp.asarray((attributes - mean) / std)
    trained = [i for i in range(n_sites) if i not in held]

    def site_loss(net, i: int) -> float:
        return float(loss_value(latent_from_vector(net(a_norm[i]) + offsets[i], template, specs), probs[i]))

    # a site fitted exactly from the start keeps its absolute loss
    scales = [(site_loss(network, i) or 1.0) if relative else 1.0 for i in range(n_sites)]
    val_fn = (lambda net: np.mean([site_loss(net, i) / scales[i] for i in held])) if held else None
    network, history = fit(
        network, None, None, n_members=1, batch_size=1, batch_fn=_single_batch, epochs=steps,
        grad_fn=_dpl_grad_fn([probs[i] for i in trained], a_norm[jnp.asarray(trained)],
                             offsets[jnp.asarray(trained)], template, specs, trained, [scales[i] for i in trained]),
        optimizer=optimizer or optax.adam(learning_rate), select="val" if held else "train", val_fn=val_fn,
        validate_initial=bool(held), patience=patience if held else None, shuffle=False,
        checkpoint_dir=checkpoint_dir, progress=progress, desc="calibrate_dpl",
    )  # fmt: skip
    frame = _history_frame(history, "step", [f"site{i}" for i in trained])
    if held:
        frame["val_loss"] = history["val_loss"]
        frame.attrs["initial_val_loss"] = history["initial_val"]
    result = DPLResult(network, [], [], frame, specs, mean, std, template, residual, tuple(held),
                       history["best_epoch"])  # fmt: skip
    result.values = result.predict(attributes, [s.params for s in setups])
    result.params = [apply_parameters(s.params, specs, v) for s, v in zip(setups, result.values, strict=True)]
    return result
