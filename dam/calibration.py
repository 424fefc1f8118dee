"""Data-driven parameter optimisation of the station model at sites: direct (per site), dPL (multi-site network)
and the gradient-free baseline, driven by the training engine :func:`dam.training.fit`.

* :func:`calibrate` minimises the masked RMSE (or MSE/MAE, :class:`~dam.coupling.losses.PhysicsLoss`) of
  modelled soil moisture (total or liquid water, as each of the site's sensors sees it:
  ``soil_moisture_measures`` in ``site.yaml``) at the observed sensors (read at their depths:
  :meth:`dam.sites.Site.sensor_mapping`; the model is averaged onto coarser observation periods) over a
  window, with optax and reverse-mode gradients through :func:`~dam.physics.station.run_station`; the parameters
  of the lowest loss evaluated are returned.
* :func:`dam.calibration_dpl.calibrate_dpl` (its own module) trains one network from site attributes to the
  parameters of many sites, on the objectives built here.
* :func:`latin_hypercube_search` is the gradient-free baseline with the same number of model evaluations.

This module turns set-ups and xarray observations into the arrays and types of :mod:`dam.coupling.calibration`
(specs, :class:`~dam.coupling.calibration.ObservationTarget`, the objective), where the pure part lives.

Budget rule (gradient vs. gradient-free): one gradient step = one model evaluation (its forward run; the
adjoint pass is not charged), so :func:`latin_hypercube_search` with ``budget = steps`` evaluates as many
parameter sets as :func:`calibrate` with ``steps``. Both count the default parameters as their first
evaluation. Wall-clock favours the search (a forward run is ~20-50x cheaper than a gradient on CPU); the
comparison is per model evaluation, as issue 5 asks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from .coupling.calibration import (
    CalibrationProblem,
    ObservationTarget,
    ParameterSpec,
    apply_parameters,
    forward_moisture,
    initial_latent,
    latent_from_vector,
    latent_to_values,
    latent_vector,
    lhs_latents,
    loss_value,
    make_problem,
    make_specs,
    score,
    value_and_grad,
    values_row,
)
from .coupling.losses import PhysicsLoss
from .coupling.targets import moisture_kind
from .physics.station import StationParams
from .site_run import StationSetup
from .training import fit, per_member

__all__ = [
    "CalibrationResult",
    "NoObservationsError",
    "SearchResult",
    "calibrate",
    "calibrate_problem",
    "evaluate",
    "latin_hypercube_search",
    "prepare_observations",
    "run_to_window_end",
    "search_objective",
    "sees_liquid",
]

SpecLike = str | Mapping[str, Any] | ParameterSpec
DEFAULT_SPECS = ("soil.bexp", "soil.dksat", "soil.smcmax")
SENSOR_BLOCK = 4  # calibration targets are padded to a multiple of this many sensors (one program for 1-4)


# --------------------------------------------------------------------------------------------------- targets
class NoObservationsError(ValueError):
    """The scored window of a calibration holds no observation: its loss would be 0 whatever the parameters."""


def sees_liquid(setup: StationSetup) -> str:
    """The water the site's soil moisture sensors see: ``"liquid"``, ``"total"`` or ``"both"`` (sensors differ;
    ``soil_moisture_measures`` in ``site.yaml``)."""
    return moisture_kind(setup.site.sees_liquid("soil_moisture"))


def _window(times: pd.DatetimeIndex, start, end) -> tuple[int, int]:
    """Index range [i0, i1) of model steps with start <= time <= end (ints are taken as indices)."""
    if isinstance(start, int | np.integer) or start is None:
        i0 = 0 if start is None else int(start)
    else:
        i0 = int(times.searchsorted(pd.Timestamp(start), side="left"))
    if isinstance(end, int | np.integer) or end is None:
        i1 = len(times) if end is None else int(end)
    else:
        i1 = int(times.searchsorted(pd.Timestamp(end), side="right"))
    if not 0 <= i0 < i1 <= len(times):
        raise ValueError(f"window start={start!r} end={end!r} selects no model steps of {times[0]}..{times[-1]}")
    return i0, i1


def prepare_observations(
    setup: StationSetup,
    observations=None,
    *,
    start=None,
    end=None,
    variable: str = "soil_moisture",
    sensors: Sequence[float] | None = None,
    skip_unreliable: bool = True,
    sensor_weights: Sequence[float] | None = None,
) -> ObservationTarget:
    """Line up observations (xarray Dataset or DataArray ``(time, depth)``; default the site's) with the model
    steps ``[start, end]`` of ``setup`` (dates, or step indices with ``end`` exclusive).

    Sensors: ``sensors`` (depths, m) if given, else all, without those flagged unreliable in ``site.yaml`` when
    ``skip_unreliable``. Time: :meth:`~dam.coupling.calibration.ObservationTarget.aligned`. A window without any
    observation raises :class:`NoObservationsError` (its loss would be 0 for every parameter set).
    """
    obs = setup.site.observations if observations is None else observations
    if obs is None:
        raise NoObservationsError(f"site {setup.site.meta.name}: no observations to calibrate against")
    da = obs[variable] if hasattr(obs, "data_vars") else obs
    ddim = next(d for d in da.dims if d != "time")
    depths = np.asarray(da[ddim].values, float)
    keep = np.ones(len(depths), bool)
    if sensors is not None:
        keep = np.array([np.any(np.isclose(d, np.asarray(sensors, float))) for d in depths])
    elif skip_unreliable:
        keep = np.array([not setup.site.unreliable_flag(variable, float(d)) for d in depths])
    if not keep.any():
        raise ValueError(f"{variable}: no sensor left to calibrate against (depths {depths.tolist()})")
    da = da.isel({ddim: np.flatnonzero(keep)})
    depths = depths[keep]
    mapping = setup.site.sensor_mapping(variable, setup.layer_bottoms_m, depths)  # read at the sensors' depths
    i0, i1 = _window(setup.times, start, end)
    target = ObservationTarget.aligned(
        np.asarray(da.transpose("time", ddim).values, float), pd.DatetimeIndex(da["time"].values).values,
        setup.times.values, setup.options.dt_s, (i0, i1), mapping.layer_index,
        depths, sensor_weights, layer_weights=mapping.weights, liquid=setup.site.sees_liquid(variable, depths),
    )  # fmt: skip
    if not np.isfinite(np.asarray(target.values)).any():
        raise NoObservationsError(
            f"site {setup.site.meta.name}: no {variable} observation (sensors at {depths.tolist()} m) in the scored "
            f"window {setup.times[i0]} .. {setup.times[i1 - 1]}: choose a window with observations"
        )
    return target


def run_to_window_end(setup: StationSetup, target: ObservationTarget, start, end) -> tuple[Any, ObservationTarget]:
    """(forcing, target) of a forward run from ``setup.state0`` that stops at the end of the scored window (no step
    after it can change a score)."""
    _, i1 = _window(setup.times, start, end)
    forcing = setup.forcing if i1 == len(setup.times) else jax.tree_util.tree_map(lambda x: x[:i1], setup.forcing)
    return forcing, eqx.tree_at(lambda t: t.segment, target, target.segment[:i1])


def _problem(setup, observations, specs, loss, start, end, truncation_steps, checkpoint_every, **target_kw):
    """One site's problem; its target padded to the run's steps and to a multiple of ``SENSOR_BLOCK`` sensors, so
    sites with the same time step, run length and options share the compiled loss and gradient."""
    target = prepare_observations(setup, observations, start=start, end=end, **target_kw)
    _, i1 = _window(setup.times, start, end)
    target = target.padded(i1, -(-target.values.shape[1] // SENSOR_BLOCK) * SENSOR_BLOCK)
    return make_problem(setup.state0, setup.forcing, setup.params, setup.grid, setup.options, target, specs, loss,
                        n_run=i1, truncation_steps=truncation_steps,
                        checkpoint_every=checkpoint_every)  # fmt: skip


def _single_batch(data, idx):
    return None


def _objective(prob, latent):
    """The loss of ``latent`` (for line searches; a module function, so its ``Partial`` compiles once)."""
    return loss_value(latent, prob)


# --------------------------------------------------------------------------------------------------- direct
@dataclasses.dataclass
class CalibrationResult:
    """``params`` the best parameters found (lowest loss evaluated); ``values`` their calibrated entries;
    ``latent`` their latents; ``history`` one row per evaluation (step, loss, data term, values, seconds);
    ``specs`` the specs; ``evaluations`` model evaluations used (= steps, plus a line search's trial runs:
    ``linesearch_steps`` in the history)."""

    params: StationParams
    values: dict[str, np.ndarray]
    latent: dict[str, jax.Array]
    history: pd.DataFrame
    specs: tuple[ParameterSpec, ...]
    evaluations: int


def _history_frame(history: dict, first: str, extra: Sequence[str]) -> pd.DataFrame:
    columns = {first: history["epoch"], "loss": history["train_loss"]}
    columns.update({k: history[k] for k in extra})
    return pd.DataFrame({**columns, "seconds": history["seconds"]})


def calibrate(
    setup: StationSetup,
    observations=None,
    specs: Sequence[SpecLike] = DEFAULT_SPECS,
    *,
    start=None,
    end=None,
    steps: int = 30,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 0.1,
    loss: PhysicsLoss | None = None,
    truncation_steps: int | None = None,
    checkpoint_every: int | None = 1,
    variable: str = "soil_moisture",
    sensors: Sequence[float] | None = None,
    skip_unreliable: bool = True,
    init_latent: Mapping[str, Any] | None = None,
    starts: int = 1,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    validation: tuple[Any, Any] | None = None,
    patience: int | None = None,
) -> CalibrationResult:
    """Calibrate the parameters ``specs`` of the station model at one site against layered observations.

    Parameters
    ----------
    setup : the station set-up, spun up by the caller (the run starts from ``setup.state0`` at ``setup.times[0]``).
    observations : xarray Dataset (with ``variable``) or DataArray ``(time, depth)``; default the site's.
    specs : names (default ranges), config mappings or :class:`ParameterSpec` (:func:`make_specs`).
    start, end : loss window (dates, or step indices with ``end`` exclusive); steps before ``start`` are run
        (warm-up) but not scored. Default: the whole set-up.
    steps : optimiser steps = model evaluations.
    optimizer : optax transformation on the latents; default Adam with a cosine decay from ``learning_rate`` to 5 %
        of it over ``steps`` (damps the oscillation of plain Adam near the optimum). An optimiser with a line
        search (``optax.lbfgs``, single start) gets the loss as its objective
        (:func:`~dam.coupling.calibration.loss_value`; the zoom line search of ``optax.lbfgs`` also differentiates
        it, so each trial step costs a gradient and counts as an evaluation).
    loss : :class:`PhysicsLoss` (data term and weights); default masked RMSE. ``w_bounds`` penalises modelled
        moisture outside [0, SMCMAX]; the water and heat terms are for hybrids (the physics conserves both).
    truncation_steps : gradient window length (:mod:`dam.coupling.calibration`); ``None`` = the whole run.
    checkpoint_every : rematerialised segment length inside each window, steps. The default 1 keeps the states
        between steps (and the water sub-steps' carries) and recomputes each step in the reverse pass: the
        smallest memory, and for the station model also the fastest gradient and compilation
        (docs/performance.md); ``None`` keeps every step's intermediates.
    variable, sensors, skip_unreliable : which observations (:func:`prepare_observations`).
    init_latent : start from these latents instead of the set-up's parameters.
    starts : multi-start: this many optimisations side by side in one batched run (``jax.vmap``; on a CPU a
        batch of K costs far less than K runs), from the default (or ``init_latent``) latents and ``starts - 1``
        Latin-hypercube points (``seed``); each start is optimised on its own (its own Adam moments, or its own
        L-BFGS line search: :func:`dam.training.per_member`), the best loss of any start and step is returned,
        and ``evaluations`` counts every start's runs.
    progress : show a progress bar.
    checkpoint_dir : orbax checkpoints of the optimisation (resumed when present; with ``starts > 1`` the best of
        the steps before a resume is not kept, the run continues from the resumed latents).
    validation : ``(start, end)`` of a validation window (dates or step indices, as ``start``/``end``), scored with
        the same loss by a forward run before the first step and after every step (early stopping): the parameters
        returned are those of the lowest validation loss, the starting ones included, not of the lowest training
        loss. For a true hold-out keep it outside ``[start, end)``, e.g. the last weeks before a test period. Each
        validation run counts as a model evaluation. Single start only. The history gets ``val_loss`` (of the
        parameters after each step) and ``attrs`` ``initial_val_loss`` and ``best_step`` (-1: the starting ones).
    patience : with ``validation``, stop after this many steps without a lower validation loss (None: never).
    """
    specs = make_specs(specs)
    loss = loss or PhysicsLoss(data="rmse")
    target_kw = dict(variable=variable, sensors=sensors, skip_unreliable=skip_unreliable)
    prob = _problem(setup, observations, specs, loss, start, end, truncation_steps, checkpoint_every, **target_kw)
    val_fn = None
    if validation is not None:
        one, _ = search_objective(setup, observations, specs, start=validation[0], end=validation[1], loss=loss,
                                  **target_kw)  # fmt: skip
        val_fn = lambda lat: one(latent_vector(lat, specs))  # noqa: E731  (forward_moisture is the compiled part)
    return calibrate_problem(prob, steps=steps, optimizer=optimizer, learning_rate=learning_rate,
                             init_latent=init_latent, starts=starts, seed=seed, progress=progress,
                             checkpoint_dir=checkpoint_dir, desc=f"calibrate {setup.site.meta.name}",
                             val_fn=val_fn, patience=patience)  # fmt: skip


def calibrate_problem(
    prob: CalibrationProblem,
    *,
    steps: int = 30,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 0.1,
    init_latent: Mapping[str, Any] | None = None,
    starts: int = 1,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    desc: str = "calibrate",
    val_fn: Any = None,
    patience: int | None = None,
) -> CalibrationResult:
    """:func:`calibrate` on a problem already built (:func:`dam.coupling.calibration.make_problem`: any set-up,
    e.g. a Fortran reference case without a site folder): the parameters ``prob.specs`` of ``prob.params``;
    arguments as :func:`calibrate`, and ``val_fn(latent) -> loss`` for early stopping (``validation`` there)."""
    specs = prob.specs
    dtype = jnp.asarray(prob.state0.soil.smc).dtype
    latent = dict(init_latent) if init_latent is not None else initial_latent(prob.params, specs)
    latent = {k: jnp.asarray(v, dtype) for k, v in latent.items()}
    optimizer = optimizer or optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.05))
    if starts > 1:
        if val_fn is not None:
            raise ValueError("validation (early stopping) takes a single start: use starts=1")
        return _calibrate_starts(prob, latent, steps, optimizer, starts, seed, progress, checkpoint_dir, desc)

    def grad_fn(lat, _):
        value, terms, grad = value_and_grad(lat, prob)
        return value, grad, {"data": terms.data, **values_row(lat, specs)}

    best, history = fit(
        latent, None, None, n_members=1, batch_size=1, batch_fn=_single_batch, grad_fn=grad_fn, epochs=steps,
        value_fn=jax.tree_util.Partial(_objective, prob), optimizer=optimizer, shuffle=False,
        val_fn=val_fn, validate_initial=True, select="train" if val_fn is None else "val", patience=patience,
        checkpoint_dir=checkpoint_dir, progress=progress, desc=desc,
    )  # fmt: skip
    values = {k: np.asarray(v) for k, v in latent_to_values(best, specs).items()}
    trials = ["linesearch_steps"] if "linesearch_steps" in history else []
    validated = [] if val_fn is None else ["val_loss"]
    frame = _history_frame(history, "step", ["data", *values_row(best, specs), *validated, *trials])
    if val_fn is not None:
        frame.attrs.update(initial_val_loss=history["initial_val"], best_step=history["best_epoch"])
    done = len(history["epoch"])  # fewer than steps after an early stop
    evaluations = done + int(sum(history.get("linesearch_steps", [])))
    if val_fn is not None:
        evaluations += done + 1  # the validation runs, the one before the first step included
    return CalibrationResult(apply_parameters(prob.params, specs, values), values, best, frame, specs, evaluations)


def _calibrate_starts(prob, latent, steps, optimizer, starts, seed, progress, checkpoint_dir, desc):
    """:func:`calibrate_problem` with ``starts`` optimisations side by side: the latents get a leading start axis, the
    objective is the sum of the starts' losses (so each start's gradient is its own), the optimiser runs on each
    start on its own (:func:`dam.training.per_member`: a line search per start), and the lowest loss of any start
    and step is kept."""
    specs = prob.specs
    dtype = jax.tree_util.tree_leaves(latent)[0].dtype
    vecs = jnp.asarray(lhs_latents(latent, specs, starts, seed), dtype)
    stacked = jax.vmap(lambda v: latent_from_vector(v, latent, specs))(vecs)
    batched = jax.vmap(lambda lat: value_and_grad(lat, prob))
    seen: list[tuple[np.ndarray, Any]] = []  # (losses of the starts, their latents) of every step

    def grad_fn(lat, _):
        values, terms, grad = batched(lat)
        losses = np.where(np.isfinite(np.asarray(values)), np.asarray(values), np.inf)
        seen.append((losses, lat))
        k = int(np.argmin(losses))
        one = jax.tree_util.tree_map(lambda x: x[k], lat)
        return jnp.sum(values), grad, {"best_loss": float(losses[k]), "data": float(terms.data[k]),
                                       **values_row(one, specs)}  # fmt: skip

    _, history = fit(
        stacked, None, None, n_members=1, batch_size=1, batch_fn=_single_batch, grad_fn=grad_fn, epochs=steps,
        value_fn=jax.tree_util.Partial(_objective, prob), optimizer=per_member(optimizer), select="train",
        shuffle=False, checkpoint_dir=checkpoint_dir, progress=progress, desc=f"{desc} ({starts} starts)",
    )  # fmt: skip
    step = int(np.argmin([losses.min() for losses, _ in seen]))
    losses, lat = seen[step]
    best = jax.tree_util.tree_map(lambda x: x[int(np.argmin(losses))], lat)
    values = {k: np.asarray(v) for k, v in latent_to_values(best, specs).items()}
    frame = _history_frame(history, "step", ["data", *values_row(best, specs)])
    frame["loss"] = history["best_loss"]  # the best start's loss at each step (the fit's loss is their sum)
    evaluations = starts * (steps + int(sum(history.get("linesearch_steps", []))))
    return CalibrationResult(apply_parameters(prob.params, specs, values), values, best, frame, specs, evaluations)


# --------------------------------------------------------------------------------------------------- search
@dataclasses.dataclass
class SearchResult:
    """Gradient-free search: ``params`` / ``values`` the best set, ``history`` one row per evaluation (loss and
    values, in evaluation order; the first is the default set), ``evaluations`` the budget used."""

    params: StationParams
    values: dict[str, np.ndarray]
    history: pd.DataFrame
    specs: tuple[ParameterSpec, ...]
    evaluations: int


def search_objective(
    setup: StationSetup,
    observations=None,
    specs: Sequence[SpecLike] = DEFAULT_SPECS,
    *,
    start=None,
    end=None,
    loss: PhysicsLoss | None = None,
    variable: str = "soil_moisture",
    sensors: Sequence[float] | None = None,
    skip_unreliable: bool = True,
):
    """The objective of the gradient-free searches: ``(objective, z0)`` where ``objective(vec)`` is the loss
    (same window and loss as :func:`calibrate`) of one flat latent vector (a forward run from ``setup.state0``
    to the window's end; pure, so ``jax.vmap`` evaluates a population in one run) and ``z0`` the default
    latents (their flat vector: :func:`~dam.coupling.calibration.latent_vector`)."""
    specs = make_specs(specs)
    loss = loss or PhysicsLoss(data="rmse")
    target = prepare_observations(setup, observations, start=start, end=end, variable=variable, sensors=sensors,
                                  skip_unreliable=skip_unreliable)  # fmt: skip
    z0 = initial_latent(setup.params, specs)
    frc, target = run_to_window_end(setup, target, start, end)

    def objective(vec: jax.Array) -> jax.Array:
        params = apply_parameters(setup.params, specs, latent_to_values(latent_from_vector(vec, z0, specs), specs))
        smc = forward_moisture(setup.state0, frc, params, setup.grid, setup.options, target.moisture)
        return score(smc, target, loss, params.soil.smcmax)

    return objective, z0


def latin_hypercube_search(
    setup: StationSetup,
    observations=None,
    specs: Sequence[SpecLike] = DEFAULT_SPECS,
    budget: int = 30,
    seed: int = 0,
    *,
    start=None,
    end=None,
    loss: PhysicsLoss | None = None,
    variable: str = "soil_moisture",
    sensors: Sequence[float] | None = None,
    skip_unreliable: bool = True,
) -> SearchResult:
    """Gradient-free baseline: the default parameters plus ``budget - 1`` Latin-hypercube samples of the
    bounds (uniform in log space for log parameters), each one forward run over the same window and loss as
    :func:`calibrate` (:func:`search_objective`; the same compiled forward run as :func:`evaluate`). Budget
    rule: module docs."""
    specs = make_specs(specs)
    objective, z0 = search_objective(setup, observations, specs, start=start, end=end, loss=loss,
                                     variable=variable, sensors=sensors, skip_unreliable=skip_unreliable)  # fmt: skip
    vecs = lhs_latents(z0, specs, budget, seed)
    dtype = jnp.asarray(setup.state0.soil.smc).dtype
    losses = np.asarray([float(objective(jnp.asarray(v, dtype))) for v in vecs])
    rows = [{"evaluation": k, "loss": losses[k], **values_row(latent_from_vector(jnp.asarray(v), z0, specs), specs)}
            for k, v in enumerate(vecs)]  # fmt: skip
    ib = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))
    best_latent = latent_from_vector(jnp.asarray(vecs[ib], dtype), z0, specs)
    values = {k: np.asarray(v) for k, v in latent_to_values(best_latent, specs).items()}
    return SearchResult(apply_parameters(setup.params, specs, values), values, pd.DataFrame(rows), specs,
                        len(vecs))  # fmt: skip


# --------------------------------------------------------------------------------------------------- evaluate
def evaluate(
    setup: StationSetup,
    params: StationParams | None = None,
    observations=None,
    *,
    start=None,
    end=None,
    variable: str = "soil_moisture",
    sensors: Sequence[float] | None = None,
    skip_unreliable: bool = True,
) -> dict[str, Any]:
    """Forward run of the whole set-up with ``params`` (default the set-up's) and the masked RMSE of
    ``variable`` over ``[start, end]``: ``{"rmse": pooled over sensors, "rmse_by_depth": {depth: rmse},
    "n": valid pairs}``."""
    params = setup.params if params is None else params
    target = prepare_observations(setup, observations, start=start, end=end, variable=variable, sensors=sensors,
                                  skip_unreliable=skip_unreliable)  # fmt: skip
    smc = forward_moisture(setup.state0, setup.forcing, params, setup.grid, setup.options, target.moisture)
    pred = np.asarray(target.model_at_obs(smc))
    obs = np.asarray(target.values)
    ok = np.isfinite(pred) & np.isfinite(obs)
    err = np.where(ok, pred - obs, 0.0)
    by_depth = {d: float(np.sqrt((err[:, j] ** 2).sum() / max(ok[:, j].sum(), 1)))
                for j, d in enumerate(target.depths)}  # fmt: skip
    return {"rmse": float(np.sqrt((err**2).sum() / max(ok.sum(), 1))), "rmse_by_depth": by_depth,
            "n": int(ok.sum())}  # fmt: skip
