"""Physics-in-AI loss terms: water balance, physical bounds, heat budget and NaN-aware data misfits.

Every function is pure ``jax.numpy``, works on any leading batch shape (sites, members, windows) with time on
the axis before the layer axis (``(..., T, N)`` for layered series, ``(..., T)`` for column series), and has
finite gradients everywhere, including at a perfect fit (square roots and divisions use the double-where
pattern). Residuals are returned per step (and per layer where that makes sense) so a caller can weight,
mask or plot them; the scalar loss terms are made by :class:`PhysicsLoss`.

Sign conventions follow the station model (:mod:`dam.physics.station`): water inputs and outputs are
positive amounts per step (mm = kg m-2); the ground heat flux ``G`` is positive into the soil, the bottom heat
flux ``H_bot`` positive upward into the column (Noah-MP's ``Hbot``), and the phase-change term positive when
ice melts (energy taken from the sensible heat of the layer).
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp

from dam.physics.shapes import (
    AnyLayered,
    Layered,
    LayeredSeries,
    PerColumn,
    PerLayer,
    Series,
    StepLayeredSeries,
    StepSeries,
    Values,
)

__all__ = [
    "LossTerms",
    "PhysicsLoss",
    "bounds_penalty",
    "column_heat_residual",
    "heat_residual",
    "masked_mae",
    "masked_mse",
    "masked_rmse",
    "surface_energy_residual",
    "water_balance_residual",
    "water_storage_mm",
]

WATER_DENSITY_MM_PER_M = 1000.0  # mm of water per m of water column (kg m-2 per m of depth at 1000 kg m-3)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    ok = x > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 0.0)


def _prepend_initial(x: jax.Array, initial: jax.Array | None) -> jax.Array:
    """``x`` (..., T, ...) with ``initial`` (..., ...) put in front along the time axis (-2 for layered)."""
    if initial is None:
        return x
    initial = jnp.broadcast_to(jnp.asarray(initial, x.dtype), x.shape[:-2] + x.shape[-1:])
    return jnp.concatenate([initial[..., None, :], x], axis=-2)


# --------------------------------------------------------------------------------------------------- data


def masked_mse(pred: Values, obs: Values, weights: Values | None = None, axis=None) -> Values:
    """Mean squared error over the pairs where ``obs`` (and ``pred``) are finite.

    Parameters
    ----------
    pred, obs
        Broadcastable arrays; NaN in ``obs`` marks a missing observation.
    weights
        Optional non-negative weights broadcastable to the pairs (e.g. one per sensor); 0 drops a pair.
    axis
        Axes to reduce (``None``: all). With no valid pair the result is 0 (and its gradient 0), so a window
        without observations contributes nothing to a sum of losses.
    """
    pred, obs = jnp.broadcast_arrays(jnp.asarray(pred), jnp.asarray(obs))
    mask = jnp.isfinite(obs) & jnp.isfinite(pred)
    w = mask.astype(pred.dtype) if weights is None else jnp.where(mask, jnp.asarray(weights, pred.dtype), 0.0)
    diff = jnp.where(mask, pred - jnp.where(mask, obs, 0.0), 0.0)
    wsum = jnp.sum(w, axis=axis)
    return jnp.sum(w * diff * diff, axis=axis) / jnp.where(wsum > 0, wsum, 1.0)


def masked_rmse(pred: Values, obs: Values, weights: Values | None = None, axis=None) -> Values:
    """Root of :func:`masked_mse` (gradient 0, not NaN, at a perfect fit)."""
    return _safe_sqrt(masked_mse(pred, obs, weights, axis))


def masked_ubrmse(pred: Values, obs: Values, weights: Values | None = None, axis=None) -> Values:
    """:func:`masked_rmse` after removing each series' mean error: the unbiased RMSE, blind to a sensor's level.

    A series runs along axis 0 (time; e.g. (T, sensors)); its mean error is taken over its finite pairs. For sensors
    whose calibration offset no model parameter should absorb, e.g. a loss that must carry over to sites not
    trained on (dPL). Other conventions as :func:`masked_mse`.
    """
    pred, obs = jnp.broadcast_arrays(jnp.asarray(pred), jnp.asarray(obs))
    mask = jnp.isfinite(obs) & jnp.isfinite(pred)
    diff = jnp.where(mask, pred - jnp.where(mask, obs, 0.0), 0.0)
    count = jnp.sum(mask, axis=0, keepdims=True)
    bias = jnp.sum(diff, axis=0, keepdims=True) / jnp.maximum(count, 1)
    return masked_rmse(pred - bias, obs, weights, axis)


def masked_mae(pred: Values, obs: Values, weights: Values | None = None, axis=None) -> Values:
    """Mean absolute error over the finite pairs (same conventions as :func:`masked_mse`)."""
    pred, obs = jnp.broadcast_arrays(jnp.asarray(pred), jnp.asarray(obs))
    mask = jnp.isfinite(obs) & jnp.isfinite(pred)
    w = mask.astype(pred.dtype) if weights is None else jnp.where(mask, jnp.asarray(weights, pred.dtype), 0.0)
    diff = jnp.where(mask, pred - jnp.where(mask, obs, 0.0), 0.0)
    wsum = jnp.sum(w, axis=axis)
    return jnp.sum(w * jnp.abs(diff), axis=axis) / jnp.where(wsum > 0, wsum, 1.0)


DATA_TERMS = {"mse": masked_mse, "rmse": masked_rmse, "ubrmse": masked_ubrmse, "mae": masked_mae}


# --------------------------------------------------------------------------------------------------- water


def water_storage_mm(theta: Layered, dz: PerLayer) -> PerColumn:
    """Column water storage ``sum_k theta_k dz_k`` in mm, from volumetric moisture (..., N) m3 m-3 and layer
    thickness ``dz`` (N,) m."""
    return WATER_DENSITY_MM_PER_M * jnp.sum(theta * jnp.asarray(dz, theta.dtype), axis=-1)


def water_balance_residual(
    theta_pred: LayeredSeries,
    dz: PerLayer,
    inputs_mm: Series,
    outputs_mm: Series,
    theta_initial: AnyLayered | None = None,
) -> StepSeries:
    """Per-step column water-balance residual, mm: ``dS - (inputs - outputs)``.

    ``S_t = 1000 sum_k theta_{t,k} dz_k``. Zero for a sequence that conserves water; positive when water
    appears from nowhere, negative when it disappears.

    Parameters
    ----------
    theta_pred
        Total volumetric moisture at the end of each step, (..., T, N) m3 m-3.
    dz
        Layer thickness, (N,) m.
    inputs_mm, outputs_mm
        Water entering (infiltration, i.e. soil-surface inflow minus surface runoff) and leaving (ground
        evaporation, transpiration, drainage) the column during each step, (..., T), mm per step.
    theta_initial
        State before the first step, (..., N). Given: T residuals; omitted: T - 1 residuals (the first step's
        budget cannot be closed, and the first entry of ``inputs_mm``/``outputs_mm`` is not used).

    Returns
    -------
    Array (..., T) or (..., T - 1), mm per step.
    """
    theta = _prepend_initial(jnp.asarray(theta_pred), theta_initial)
    storage = water_storage_mm(theta, dz)
    d_storage = storage[..., 1:] - storage[..., :-1]
    net = jnp.asarray(inputs_mm) - jnp.asarray(outputs_mm)
    net = net[..., net.shape[-1] - d_storage.shape[-1] :]
    return d_storage - net


# --------------------------------------------------------------------------------------------------- bounds


def bounds_penalty(
    theta: Values,
    lower: Values | float,
    upper: Values | float,
    liquid: Values | None = None,
    axis=None,
) -> Values:
    """Mean squared violation of ``lower <= theta <= upper`` (and ``0 <= liquid <= theta`` when ``liquid`` is
    given), (m3 m-3)^2; exactly 0 inside the bounds.

    ``lower`` is typically the residual/air-dry moisture and ``upper`` the porosity (SMCMAX), both broadcastable
    to ``theta`` (..., N). The penalty is quadratic outside, so its gradient is continuous and pushes back in.
    """
    theta = jnp.asarray(theta)
    below = jax.nn.relu(jnp.asarray(lower, theta.dtype) - theta)
    above = jax.nn.relu(theta - jnp.asarray(upper, theta.dtype))
    excess = below * below + above * above
    if liquid is not None:
        liquid = jnp.asarray(liquid, theta.dtype)
        excess = excess + jax.nn.relu(liquid - theta) ** 2 + jax.nn.relu(-liquid) ** 2
    return jnp.mean(excess, axis=axis)


# --------------------------------------------------------------------------------------------------- heat


def heat_residual(
    t_pred: LayeredSeries,
    t_initial: AnyLayered,
    heat_capacity: AnyLayered,
    conductivity: AnyLayered,
    dz: PerLayer,
    ghf_wm2: Series,
    heat_bottom_wm2: Series,
    dt_s: float,
    *,
    phase_change_wm2: Values | float = 0.0,
    implicit_weight: float = 1.0,
) -> StepLayeredSeries:
    """Per-layer residual of the discrete soil heat equation, W m-2 (finite-volume form of Noah-MP's
    ``SoilSnowThermalDiffusion``):

    ``C_k dz_k (T_k^t - T_k^{t-1}) / dt - [F_{k-1/2} - F_{k+1/2}] + L_k``

    with ``F_{1/2} = G`` (into the soil), ``F_{N+1/2} = -H_bot`` (``H_bot`` positive up into the column), interior
    fluxes ``F_{k+1/2} = lambda_k (T_k - T_{k+1}) / d_{k+1/2}`` (Noah-MP uses the conductivity of the upper layer
    and the node distance ``d_{k+1/2} = (dz_k + dz_{k+1}) / 2``), evaluated at
    ``w T^t + (1 - w) T^{t-1}`` (``implicit_weight`` w: 1 implicit, 0 explicit, 0.5 Crank-Nicolson), and
    ``L_k`` the energy taken by melting in the layer (``phase_change_wm2``, positive for melt).

    Parameters
    ----------
    t_pred
        Layer temperatures at the end of each step, (..., T, N) K.
    t_initial
        Temperatures before the first step, (..., N) K.
    heat_capacity
        Volumetric heat capacity, J m-3 K-1, broadcastable to (..., T, N).
    conductivity
        Thermal conductivity per layer, W m-1 K-1, broadcastable to (..., T, N).
    dz
        Layer thickness, (N,) m.
    ghf_wm2, heat_bottom_wm2
        Boundary fluxes of each step, (..., T), W m-2.
    dt_s
        Time step, s.

    Returns
    -------
    Array (..., T, N), W m-2 (per unit area of the layer). The sum over layers is the column energy residual
    (interior fluxes cancel).
    """
    t_pred = jnp.asarray(t_pred)
    dtype = t_pred.dtype
    temps = _prepend_initial(t_pred, t_initial)
    dz = jnp.asarray(dz, dtype)
    t_new, t_old = temps[..., 1:, :], temps[..., :-1, :]
    t_eval = implicit_weight * t_new + (1.0 - implicit_weight) * t_old
    lam = jnp.broadcast_to(jnp.asarray(conductivity, dtype), t_new.shape)
    dist = 0.5 * (dz[:-1] + dz[1:])
    interior = lam[..., :-1] * (t_eval[..., :-1] - t_eval[..., 1:]) / dist  # F_{k+1/2}, k = 1..N-1, + down
    top = jnp.asarray(ghf_wm2, dtype)[..., None]
    bottom = -jnp.asarray(heat_bottom_wm2, dtype)[..., None]
    flux_in = jnp.concatenate([top, interior], axis=-1)
    flux_out = jnp.concatenate([interior, bottom], axis=-1)
    storage = jnp.asarray(heat_capacity, dtype) * dz * (t_new - t_old) / dt_s
    return storage - (flux_in - flux_out) + jnp.asarray(phase_change_wm2, dtype)


def column_heat_residual(
    t_pred: LayeredSeries,
    t_initial: AnyLayered,
    heat_capacity: AnyLayered,
    dz: PerLayer,
    ghf_wm2: Series,
    heat_bottom_wm2: Series,
    dt_s: float,
    *,
    phase_change_wm2: Values | float = 0.0,
) -> Series:
    """Column energy budget residual, W m-2: ``sum_k C_k dz_k dT_k / dt - (G + H_bot) + L`` per step (..., T).

    ``L`` (..., T) is the column's phase-change energy, positive for melt (the station's
    ``latent_heat_soil_wm2``). Needs no conductivity: the interior fluxes cancel. The station model's heat
    diffusion conserves ``sum C dz dT = (G + H_bot) dt`` exactly with the step's heat capacity, so this is zero
    (to round-off and the change of C by phase change) for a physics run.
    """
    t_pred = jnp.asarray(t_pred)
    dtype = t_pred.dtype
    temps = _prepend_initial(t_pred, t_initial)
    dt_layer = temps[..., 1:, :] - temps[..., :-1, :]
    storage = jnp.sum(jnp.asarray(heat_capacity, dtype) * jnp.asarray(dz, dtype) * dt_layer, axis=-1) / dt_s
    return storage - (jnp.asarray(ghf_wm2, dtype) + jnp.asarray(heat_bottom_wm2, dtype)) + phase_change_wm2


def surface_energy_residual(
    net_radiation_wm2: Values, sensible_wm2: Values, latent_wm2: Values, ground_wm2: Values
) -> Values:
    """Surface energy-balance residual ``Rn - H - LE - G``, W m-2 (Rn + down, H and LE + up, G + into the
    ground); zero for a closed balance."""
    return net_radiation_wm2 - sensible_wm2 - latent_wm2 - ground_wm2


# --------------------------------------------------------------------------------------------------- combined


class LossTerms(eqx.Module):
    """The terms of a combined loss (scalars, or per member when reduced over the other axes).

    ``total`` = ``data + w_water * water + w_bounds * bounds + w_heat * heat``; ``data`` the data misfit (its
    units: those of the observations, squared for MSE); ``water`` mean squared water residual / scale^2 (-);
    ``bounds`` mean squared bound violation (m3 m-3)^2 / scale^2 (-); ``heat`` mean squared heat residual /
    scale^2 (-).
    """

    total: jax.Array
    data: jax.Array
    water: jax.Array
    bounds: jax.Array
    heat: jax.Array


class PhysicsLoss(eqx.Module):
    """Weights and scales of the physics-informed loss ``total = data + w_water * water + w_bounds * bounds +
    w_heat * heat`` (static: a change recompiles).

    ``data`` is ``"mse"``, ``"rmse"``, ``"ubrmse"`` (:func:`masked_ubrmse`) or ``"mae"`` of the prediction against
    observations (NaN = missing).
    Each physics term is the mean square of its residual divided by a scale (``water_scale_mm`` mm per step,
    ``bounds_scale`` m3 m-3, ``heat_scale_wm2`` W m-2), so the weights are dimensionless and a weight of 1
    gives a residual of one scale the cost of a data misfit of 1 (choose the scales near the tolerated error).
    """

    w_water: float = eqx.field(static=True, default=0.0)
    w_bounds: float = eqx.field(static=True, default=0.0)
    w_heat: float = eqx.field(static=True, default=0.0)
    data: Literal["mse", "rmse", "ubrmse", "mae"] = eqx.field(static=True, default="mse")
    water_scale_mm: float = eqx.field(static=True, default=1.0)
    bounds_scale: float = eqx.field(static=True, default=0.01)
    heat_scale_wm2: float = eqx.field(static=True, default=10.0)

    def __check_init__(self) -> None:
        if self.data not in DATA_TERMS:
            raise ValueError(f"PhysicsLoss.data must be one of {sorted(DATA_TERMS)}, got {self.data!r}")
        for name in ("w_water", "w_bounds", "w_heat"):
            if getattr(self, name) < 0:
                raise ValueError(f"PhysicsLoss.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("water_scale_mm", "bounds_scale", "heat_scale_wm2"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PhysicsLoss.{name} must be > 0, got {getattr(self, name)}")

    def data_term(self, pred: jax.Array, obs: jax.Array, weights: jax.Array | None = None, axis=None) -> jax.Array:
        return DATA_TERMS[self.data](pred, obs, weights, axis)

    def __call__(
        self,
        pred: jax.Array,
        obs: jax.Array,
        *,
        weights: jax.Array | None = None,
        water_residual_mm: jax.Array | None = None,
        theta: jax.Array | None = None,
        theta_lower: jax.Array | None = None,
        theta_upper: jax.Array | None = None,
        liquid: jax.Array | None = None,
        heat_residual_wm2: jax.Array | None = None,
    ) -> LossTerms:
        """Combine the data misfit with the physics terms whose inputs are given (the others count 0).

        ``water_residual_mm`` from :func:`water_balance_residual`; ``theta`` with ``theta_lower`` /
        ``theta_upper`` (and optional ``liquid``) for :func:`bounds_penalty`; ``heat_residual_wm2`` from
        :func:`heat_residual`, :func:`column_heat_residual` or :func:`surface_energy_residual`.
        """
        data = self.data_term(pred, obs, weights)
        zero = jnp.zeros_like(data)
        water = zero
        if water_residual_mm is not None:
            water = jnp.mean((jnp.asarray(water_residual_mm) / self.water_scale_mm) ** 2)
        bounds = zero
        if theta is not None:
            if theta_lower is None or theta_upper is None:
                raise ValueError("bounds term: give theta_lower and theta_upper with theta")
            bounds = bounds_penalty(theta, theta_lower, theta_upper, liquid) / self.bounds_scale**2
        heat = zero
        if heat_residual_wm2 is not None:
            heat = jnp.mean((jnp.asarray(heat_residual_wm2) / self.heat_scale_wm2) ** 2)
        total = data + self.w_water * water + self.w_bounds * bounds + self.w_heat * heat
        return LossTerms(total=total, data=data, water=water, bounds=bounds, heat=heat)
