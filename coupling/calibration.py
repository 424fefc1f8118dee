"""Parameter optimisation of the station model, the pure part: specs, latents, observation targets, objectives.

* :class:`ParameterSpec` names a field of :class:`~dam.physics.station.StationParams` by its path
  (``"soil.bexp"``, ``"surface.stomata.slope"``) with physical bounds. An unconstrained latent ``z`` maps to the
  parameter through a sigmoid onto ``[lower, upper]``, in log space for parameters spanning decades
  (``log=None`` chooses log when ``upper / lower >= 10``). :data:`DEFAULT_RANGES` documents the ranges.
* :class:`~dam.coupling.targets.ObservationTarget` (module :mod:`dam.coupling.targets`) lines observations
  up with the model steps.
* :class:`CalibrationProblem` (:func:`make_problem`) holds one site's run and target; :func:`value_and_grad`
  gives the loss (:class:`~dam.coupling.losses.PhysicsLoss`: masked RMSE by default) of modelled soil moisture
  (liquid or total water, as the sensors see it) and its gradient with respect to the latents, by reverse mode
  through :func:`~dam.physics.station.run_station`.
* :func:`latin_hypercube` and :func:`lhs_latents` sample the bounds for the gradient-free baseline.

The drivers (site set-ups, xarray observations, the optimiser loop, progress, results) are in
:mod:`dam.calibration`; this module takes arrays and the types above only.

Gradient windows (``truncation_steps``): with ``None`` the gradient flows through the whole run from
``state0``. With ``L`` steps, the run is cut into windows of ``L`` steps that start from the states of a forward
run with the current parameters (so the loss value is exact) and are run side by side as a batch of columns; the
gradient ignores the dependence of each window's initial state on the parameters (truncated back-propagation
through time). A year of half-hourly steps then costs about one window's reverse pass instead of the whole
year's, with the same parameters' gradient to within the soil's memory beyond ``L``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from dam.physics.station import StationParams, StationState, run_station

from .losses import PhysicsLoss
from .targets import ObservationTarget

__all__ = [
    "DEFAULT_RANGES",
    "CalibrationProblem",
    "ObservationTarget",
    "ParameterSpec",
    "apply_parameters",
    "current_values",
    "forward_moisture",
    "initial_latent",
    "latent_from_vector",
    "latent_to_values",
    "latent_vector",
    "latin_hypercube",
    "lhs_latents",
    "loss_value",
    "make_problem",
    "make_specs",
    "score",
    "value_and_grad",
    "values_row",
]

#: Physical ranges of the calibratable parameters: (lower, upper, log space?, units, what).
#: Soil ranges span Noah-MP's SOILPARM.TBL STAS rows 1-12 (sand ... clay) with a margin; stomata and surface
#: ranges span MPTABLE.TBL vegetation rows.
DEFAULT_RANGES: dict[str, tuple[float, float, bool, str, str]] = {
    "soil.bexp": (2.5, 12.0, False, "-", "Clapp-Hornberger b (table 2.79-11.55)"),
    "soil.dksat": (5.0e-7, 5.0e-5, True, "m s-1", "saturated hydraulic conductivity (table 9.7e-7-4.7e-5)"),
    "soil.smcmax": (0.33, 0.55, False, "m3 m-3", "porosity (table 0.339-0.476)"),
    "soil.psisat": (0.03, 0.8, True, "m", "saturated matric potential magnitude (table 0.036-0.76)"),
    "soil.dwsat": (5.0e-6, 5.0e-5, True, "m2 s-1", "saturated soil water diffusivity (table 0.6e-5-2.4e-5)"),
    "soil.refkdt": (0.5, 6.0, False, "-", "Schaake infiltration parameter (table 3.0)"),
    "soil.slope": (0.05, 1.0, False, "-", "free-drainage factor (table 0.1-1.0)"),
    "surface.stomata.slope": (4.0, 12.0, False, "-", "Ball-Berry slope m (table 6-9)"),
    "surface.stomata.vcmax25": (20.0, 120.0, False, "umol CO2 m-2 s-1", "Vcmax at 25 C (table 30-80)"),
    "surface.rsurf_exp": (1.0, 8.0, False, "-", "exponent of the soil dry-layer resistance (table 5)"),
}

UNIT_EPS = 1e-4  # keep the initial sigmoid argument finite when a default sits on a bound


# --------------------------------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """A calibrated parameter: ``name`` the dotted path in :class:`StationParams` (e.g. ``"soil.dksat"``),
    bounds ``[lower, upper]`` in the field's units, ``log`` squash in log space (``None``: when
    ``upper / lower >= 10``), ``per_layer`` one value per soil layer (else one value broadcast over the field,
    e.g. all layers)."""

    name: str
    lower: float
    upper: float
    log: bool | None = None
    per_layer: bool = False

    def __post_init__(self) -> None:
        if not self.upper > self.lower:
            raise ValueError(f"parameter {self.name}: need upper > lower, got [{self.lower}, {self.upper}]")
        if self.is_log and self.lower <= 0:
            raise ValueError(f"parameter {self.name}: log squash needs lower > 0, got {self.lower}")

    @property
    def is_log(self) -> bool:
        return (self.lower > 0 and self.upper / self.lower >= 10.0) if self.log is None else bool(self.log)

    def _ends(self):
        return (math.log(self.lower), math.log(self.upper)) if self.is_log else (self.lower, self.upper)

    def from_latent(self, z: jax.Array) -> jax.Array:
        """Physical value of the latent ``z`` (sigmoid onto the bounds)."""
        lo, hi = self._ends()
        v = lo + (hi - lo) * jax.nn.sigmoid(z)
        return jnp.exp(v) if self.is_log else v

    def to_unit(self, value) -> np.ndarray:
        """Position of ``value`` in the bounds, 0..1 (in log space for a log parameter)."""
        lo, hi = self._ends()
        v = np.log(np.asarray(value, float)) if self.is_log else np.asarray(value, float)
        return (v - lo) / (hi - lo)

    def from_unit(self, u) -> np.ndarray:
        lo, hi = self._ends()
        v = lo + (hi - lo) * np.asarray(u, float)
        return np.exp(v) if self.is_log else v

    def to_latent(self, value) -> np.ndarray:
        """Latent of ``value`` (clipped just inside the bounds)."""
        u = np.clip(self.to_unit(value), UNIT_EPS, 1.0 - UNIT_EPS)
        return np.log(u) - np.log1p(-u)


def make_specs(items: Sequence[str | Mapping[str, Any] | ParameterSpec]) -> tuple[ParameterSpec, ...]:
    """Specs from a config list: a name (bounds from :data:`DEFAULT_RANGES`), a mapping ``{name, lower, upper,
    log, per_layer}`` (missing bounds from the defaults) or a :class:`ParameterSpec`."""
    out = []
    for it in items:
        if isinstance(it, ParameterSpec):
            out.append(it)
            continue
        d = {"name": it} if isinstance(it, str) else dict(it)
        name = d["name"]
        default = DEFAULT_RANGES.get(name)
        if default is None and ("lower" not in d or "upper" not in d):
            raise ValueError(f"parameter {name!r}: no default range; give lower and upper (known: "
                             f"{sorted(DEFAULT_RANGES)})")  # fmt: skip
        out.append(ParameterSpec(
            name, float(d.get("lower", default and default[0])), float(d.get("upper", default and default[1])),
            d.get("log", default[2] if default and "lower" not in d and "upper" not in d else None),
            bool(d.get("per_layer", False)),
        ))  # fmt: skip
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"parameters named more than once: {names}")
    return tuple(out)


def _get(params: StationParams, path: str):
    obj = params
    for part in path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"parameter path {path!r}: {type(obj).__name__} has no field {part!r}")
        obj = getattr(obj, part)
    return obj


def apply_parameters(params: StationParams, specs: Sequence[ParameterSpec], values: Mapping[str, Any]
                     ) -> StationParams:  # fmt: skip
    """``params`` with each spec's field replaced by ``values[name]`` (broadcast to the field's shape and dtype;
    a per-layer spec's value has the layer axis last)."""
    for s in specs:
        old = jnp.asarray(_get(params, s.name))
        new = jnp.broadcast_to(jnp.asarray(values[s.name], old.dtype), old.shape)
        params = eqx.tree_at(lambda p, path=s.name: _get(p, path), params, new)
    return params


def _field_value(params: StationParams, spec: ParameterSpec) -> np.ndarray:
    v = np.asarray(_get(params, spec.name), float)
    return v if spec.per_layer else np.asarray(v.reshape(-1)[0])


def current_values(params: StationParams, specs: Sequence[ParameterSpec]) -> dict[str, np.ndarray]:
    """The values of the specs' fields in ``params`` (a non-per-layer spec takes the first layer's value)."""
    return {s.name: _field_value(params, s) for s in specs}


def initial_latent(params: StationParams, specs: Sequence[ParameterSpec]) -> dict[str, jax.Array]:
    """Latents of the current values of ``params`` (:func:`current_values`)."""
    return {s.name: jnp.asarray(s.to_latent(_field_value(params, s))) for s in specs}


def latent_to_values(latent: Mapping[str, jax.Array], specs: Sequence[ParameterSpec]) -> dict[str, jax.Array]:
    return {s.name: s.from_latent(latent[s.name]) for s in specs}


def latent_vector(latent: Mapping[str, jax.Array], specs) -> jax.Array:
    return jnp.concatenate([jnp.reshape(latent[s.name], (-1,)) for s in specs])


def latent_from_vector(vec: jax.Array, template: Mapping[str, jax.Array], specs) -> dict[str, jax.Array]:
    out, i = {}, 0
    for s in specs:
        shape = jnp.shape(template[s.name])
        n = int(np.prod(shape, dtype=int))
        out[s.name] = jnp.reshape(vec[i : i + n], shape)
        i += n
    return out


def _pad_time(tree, n: int):
    """Pad the leading (time) axis to ``n`` by repeating the last entry (padded steps are never scored)."""

    def pad(x):
        x = jnp.asarray(x)
        extra = n - x.shape[0]
        return x if extra <= 0 else jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)], axis=0)

    return jax.tree_util.tree_map(pad, tree)


class CalibrationProblem(eqx.Module):
    """Everything one site's loss needs, as arrays (so same-shaped sites share one compiled function)."""

    forcing: Any  # StationForcing (n_win * length, ...)
    state0: StationState
    params: StationParams
    grid: Any
    target: ObservationTarget
    theta_upper: jax.Array
    options: Any = eqx.field(static=True)
    specs: tuple[ParameterSpec, ...] = eqx.field(static=True)
    loss: PhysicsLoss = eqx.field(static=True)
    n_run: int = eqx.field(static=True)
    length: int = eqx.field(static=True)
    n_win: int = eqx.field(static=True)
    checkpoint_every: int | None = eqx.field(static=True)
    liquid: str = eqx.field(static=True)  # the water the sensors see: "total", "liquid" or "both" (moisture_kind)


def make_problem(
    state0: StationState,
    forcing: Any,
    params: StationParams,
    grid: Any,
    options: Any,
    target: ObservationTarget,
    specs: Sequence[ParameterSpec],
    loss: PhysicsLoss,
    *,
    n_run: int | None = None,
    truncation_steps: int | None = None,
    checkpoint_every: int | None = 1,
) -> CalibrationProblem:
    """One site's calibration problem: the run from ``state0`` over the first ``n_run`` steps of ``forcing`` (T,
    ...) (default all), scored against ``target`` with ``loss`` on the moisture the sensors see
    (``target.moisture``); gradient windows of ``truncation_steps`` (module docs), rematerialised every
    ``checkpoint_every`` steps."""
    n_run = int(jax.tree_util.tree_leaves(forcing)[0].shape[0]) if n_run is None else int(n_run)
    length = n_run if not truncation_steps else min(int(truncation_steps), n_run)
    n_win = -(-n_run // length)
    n_pad = n_win * length
    forcing = _pad_time(jax.tree_util.tree_map(lambda x: jnp.asarray(x)[:n_run], forcing), n_pad)
    seg = np.full(n_pad, target.n_obs, np.int64)  # steps beyond the window and the padding: dummy period
    seg[:n_run] = np.asarray(target.segment)[:n_run]
    target = eqx.tree_at(lambda t: t.segment, target, jnp.asarray(seg))
    return CalibrationProblem(
        forcing=forcing, state0=state0, params=params, grid=grid, target=target,
        theta_upper=jnp.asarray(params.soil.smcmax), options=options, specs=tuple(specs), loss=loss,
        n_run=n_run, length=length, n_win=n_win, checkpoint_every=checkpoint_every, liquid=target.moisture,
    )  # fmt: skip


def _window_forcing(prob: CalibrationProblem):
    """Forcing (length, n_win, ...): windows side by side as a batch of columns."""
    return jax.tree_util.tree_map(
        lambda x: jnp.swapaxes(x.reshape(prob.n_win, prob.length, *x.shape[1:]), 0, 1), prob.forcing
    )


def _moisture(state: StationState, kind: str | bool) -> jax.Array:
    """The soil moisture the sensors see, (..., N) m3 m-3: liquid ``sh2o`` (``"liquid"`` or True), total ``smc``
    (``"total"`` or False), or both side by side (..., 2N) (``"both"``, total first)."""
    if kind == "both":
        return jnp.concatenate([state.soil.smc, state.soil.sh2o], axis=-1)
    return state.soil.sh2o if kind in ("liquid", True) else state.soil.smc


def _run_moisture(prob: CalibrationProblem, params: StationParams, init: StationState) -> jax.Array:
    """Soil moisture as the sensors see it (n_win * length, N) in the windows started from ``init`` (batch
    n_win)."""
    _, smc = run_station(
        init, _window_forcing(prob), params, prob.grid, prob.options, observe=lambda s, f: _moisture(s, prob.liquid),
        checkpoint_every=prob.checkpoint_every, finite_check=False,
    )  # fmt: skip
    return jnp.swapaxes(smc, 0, 1).reshape(prob.n_win * prob.length, -1)


def _loss(latent, prob: CalibrationProblem, init: StationState):
    values = latent_to_values(latent, prob.specs)
    params = apply_parameters(prob.params, prob.specs, values)
    smc = _run_moisture(prob, params, init)
    pred = prob.target.model_at_obs(smc)
    kw = {}
    if prob.loss.w_bounds > 0:
        kw = dict(theta=smc[: prob.n_run, : prob.grid.n_layers], theta_lower=0.0, theta_upper=params.soil.smcmax)
    terms = prob.loss(pred, prob.target.values, weights=prob.target.weights, **kw)
    return terms.total, terms


_value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_loss, has_aux=True))


@eqx.filter_jit
def _window_starts(latent, prob: CalibrationProblem) -> StationState:
    """States entering each window (a forward run with the current parameters), batch n_win, no gradient."""
    params = apply_parameters(prob.params, prob.specs, latent_to_values(latent, prob.specs))
    frc = jax.tree_util.tree_map(lambda x: x[: (prob.n_win - 1) * prob.length], prob.forcing)
    _, states = run_station(prob.state0, frc, params, prob.grid, prob.options, observe=lambda s, f: s,
                            finite_check=False)  # fmt: skip
    idx = jnp.arange(1, prob.n_win) * prob.length - 1
    later = jax.tree_util.tree_map(lambda x: x[idx], states)
    return jax.lax.stop_gradient(jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), prob.state0, later))


def _init_states(latent, prob: CalibrationProblem) -> StationState:
    if prob.n_win == 1:
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], prob.state0)
    return _window_starts(latent, prob)


def value_and_grad(latent: Mapping[str, jax.Array], prob: CalibrationProblem) -> tuple[jax.Array, Any, Any]:
    """The loss of ``latent`` (its total), its terms (:class:`~dam.coupling.losses.LossTerms`) and its gradient
    with respect to the latents (window starts from a forward run with ``latent``, no gradient through them)."""
    (value, terms), grad = _value_and_grad(latent, prob, _init_states(latent, prob))
    return value, terms, grad


_forward_loss = eqx.filter_jit(lambda latent, prob, init: _loss(latent, prob, init)[0])


def loss_value(latent: Mapping[str, jax.Array], prob: CalibrationProblem) -> jax.Array:
    """The loss of ``latent`` alone: :func:`value_and_grad`'s value from forward runs only."""
    return _forward_loss(latent, prob, _init_states(latent, prob))


def values_row(latent: Mapping[str, jax.Array], specs: Sequence[ParameterSpec]) -> dict[str, float]:
    """The physical values of ``latent`` as a flat row (``name`` or ``name[k]`` per layer)."""
    row = {}
    for s in specs:
        v = np.asarray(s.from_latent(latent[s.name]))
        row.update({s.name: float(v)} if v.ndim == 0 else {f"{s.name}[{k}]": float(x) for k, x in enumerate(v)})
    return row


def latin_hypercube(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` points of a Latin hypercube in [0, 1)^dim (one point per stratum along every axis)."""
    rng = np.random.default_rng(seed)
    u = (np.arange(n)[:, None] + rng.random((n, dim))) / n
    for j in range(dim):
        u[:, j] = u[rng.permutation(n), j]
    return u


forward_moisture = eqx.filter_jit(
    lambda state0, forcing, params, grid, options, liquid: run_station(
        state0, forcing, params, grid, options, observe=lambda s, f: _moisture(s, liquid), finite_check=False
    )[1]
)


@eqx.filter_jit
def score(smc, target: ObservationTarget, loss: PhysicsLoss, smcmax):
    kw = {}
    if loss.w_bounds > 0:
        kw = dict(theta=smc[..., : jnp.shape(smcmax)[-1]], theta_lower=0.0, theta_upper=smcmax)
    return loss(target.model_at_obs(smc), target.values, weights=target.weights, **kw).total


def lhs_latents(
    template: Mapping[str, jax.Array], specs: Sequence[ParameterSpec], budget: int, seed: int = 0
) -> np.ndarray:
    """Latent vectors (budget, n_latent) for the gradient-free baseline: the ``template`` latents (the default
    parameters) first, then ``budget - 1`` Latin-hypercube samples of the bounds (uniform in log space for log
    parameters)."""
    sizes = [int(np.size(template[s.name])) for s in specs]
    u = np.clip(latin_hypercube(max(budget - 1, 0), sum(sizes), seed), UNIT_EPS, 1 - UNIT_EPS)
    vecs = [np.asarray(latent_vector(template, specs))] + [np.log(row) - np.log1p(-row) for row in u]
    return np.stack(vecs)[:budget]
