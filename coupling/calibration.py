"""Data-driven parameter optimisation of the station model: direct (per site) and dPL (multi-site network).

* :class:`ParameterSpec` names a field of :class:`~dam.physics.station.StationParams` by its path
  (``"soil.bexp"``, ``"surface.stomata.slope"``) with physical bounds. An unconstrained latent ``z`` maps to the
  parameter through a sigmoid onto ``[lower, upper]``, in log space for parameters spanning decades
  (``log=None`` chooses log when ``upper / lower >= 10``). :data:`DEFAULT_RANGES` documents the ranges.
* :func:`calibrate` minimises the masked RMSE (or MSE/MAE, :class:`~dam.coupling.losses.PhysicsLoss`) of
  modelled soil moisture (total or liquid water, as each of the site's sensors sees it:
  ``soil_moisture_measures`` in ``site.yaml``) at the observed sensors (read at their depths:
  :meth:`dam.sites.Site.sensor_mapping`; the model is averaged onto coarser observation periods) over a
  window, with optax and reverse-mode gradients through :func:`~dam.physics.station.run_station`.
* :func:`calibrate_dpl` trains one MLP mapping normalised site attributes to the latent parameters of all
  sites jointly (differentiable parameter learning); the gradient of each site's loss with respect to its
  latent parameters is chained through the network (``jax.vjp``), so sites of any time step and length share
  one network and each site's compiled gradient.
* :func:`latin_hypercube_search` is the gradient-free baseline with the same number of model evaluations.

Gradient windows (``truncation_steps``): with ``None`` the gradient flows through the whole run from
``setup.state0``. With ``L`` steps, the run is cut into windows of ``L`` steps that start from the states of a
forward run with the current parameters (so the loss value is exact) and are run side by side as a batch of
columns; the gradient ignores the dependence of each window's initial state on the parameters (truncated
back-propagation through time). A year of half-hourly steps then costs about one window's reverse pass
instead of the whole year's, with the same parameters' gradient to within the soil's memory beyond ``L``.

Budget rule (gradient vs. gradient-free): one gradient step = one model evaluation (its forward run; the
adjoint pass is not charged), so :func:`latin_hypercube_search` with ``budget = steps`` evaluates as many
parameter sets as :func:`calibrate` with ``steps``. Both count the default parameters as their first
evaluation. Wall-clock favours the search (a forward run is ~20-50x cheaper than a gradient on CPU); the
comparison is per model evaluation, as issue 5 asks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from dam.physics.station import StationParams, StationState, run_station

from .losses import PhysicsLoss

__all__ = [
    "DEFAULT_RANGES",
    "CalibrationResult",
    "DPLResult",
    "ObservationTarget",
    "ParameterSpec",
    "SearchResult",
    "apply_parameters",
    "calibrate",
    "calibrate_dpl",
    "evaluate",
    "initial_latent",
    "latent_to_values",
    "latin_hypercube_search",
    "make_specs",
    "prepare_observations",
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


def initial_latent(params: StationParams, specs: Sequence[ParameterSpec]) -> dict[str, jax.Array]:
    """Latents of the current values of ``params`` (a non-per-layer spec takes the first layer's value)."""
    return {s.name: jnp.asarray(s.to_latent(_field_value(params, s))) for s in specs}


def latent_to_values(latent: Mapping[str, jax.Array], specs: Sequence[ParameterSpec]) -> dict[str, jax.Array]:
    return {s.name: s.from_latent(latent[s.name]) for s in specs}


def _latent_vector(latent: Mapping[str, jax.Array], specs) -> jax.Array:
    return jnp.concatenate([jnp.reshape(latent[s.name], (-1,)) for s in specs])


def _latent_from_vector(vec: jax.Array, template: Mapping[str, jax.Array], specs) -> dict[str, jax.Array]:
    out, i = {}, 0
    for s in specs:
        shape = jnp.shape(template[s.name])
        n = int(np.prod(shape, dtype=int))
        out[s.name] = jnp.reshape(vec[i : i + n], shape)
        i += n
    return out


# --------------------------------------------------------------------------------------------------- targets


class ObservationTarget(eqx.Module):
    """Observations lined up with the model steps of a window.

    ``values`` (n_obs, n_sensors) observed series (NaN missing); ``segment`` (T,) the observation period of
    each model step (``n_obs`` for steps outside the window or any period); ``counts`` (n_obs,) model steps
    per period; ``weights`` (n_sensors,) sensor weights; static ``layer_index`` the model layer that contains
    each sensor and ``depths`` the sensor depths (m); ``layer_weights`` (n_sensors, K) how each sensor reads the
    modelled moisture series, K = N layers of the water the sensors see or 2N (total, then liquid) where they
    see different water (static ``moisture``: ``"total"``, ``"liquid"`` or ``"both"``, see :func:`_moisture`);
    None reads the layer of ``layer_index``.
    """

    values: jax.Array
    segment: jax.Array
    counts: jax.Array
    weights: jax.Array
    layer_index: tuple[int, ...] = eqx.field(static=True)
    depths: tuple[float, ...] = eqx.field(static=True)
    n_obs: int = eqx.field(static=True)
    layer_weights: jax.Array | None = None
    moisture: str = eqx.field(static=True, default="total")

    def model_at_obs(self, series: jax.Array) -> jax.Array:
        """Model (T, K) -> (n_obs, n_sensors): what each sensor reads, averaged over each observation period."""
        if self.layer_weights is None:
            x = series[:, jnp.asarray(self.layer_index)]
        else:
            x = series @ self.layer_weights.T.astype(series.dtype)
        sums = jax.ops.segment_sum(x, self.segment, num_segments=self.n_obs + 1)[: self.n_obs]
        c = self.counts[:, None]
        return jnp.where(c > 0, sums / jnp.where(c > 0, c, 1.0), jnp.nan)


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
    setup,
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
    ``skip_unreliable``. Time: observations as fine as the model or finer are taken at the model step ends;
    coarser ones are compared with the model mean over their period ``(t_obs - dt_obs, t_obs]``, only where
    the window covers the whole period.
    """
    obs = setup.site.observations if observations is None else observations
    if obs is None:
        raise ValueError(f"site {setup.site.meta.name}: no observations to calibrate against")
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
    mapping = setup.site.sensor_mapping(variable, setup.layer_bottoms_m, depths)
    liquid = setup.site.sees_liquid(variable, depths)
    moisture = _moisture_kind(liquid)
    layer_w = mapping.weights
    if moisture == "both":  # total-water sensors read the first N columns, liquid-water sensors the next N
        layer_w = np.concatenate([np.where(liquid[:, None], 0.0, layer_w), np.where(liquid[:, None], layer_w, 0.0)],
                                 axis=1)  # fmt: skip
    i0, i1 = _window(setup.times, start, end)
    model_t = setup.times.values
    obs_t = pd.DatetimeIndex(da["time"].values).values
    values = np.asarray(da.transpose("time", ddim).values, float)
    dt_model = np.timedelta64(int(round(setup.options.dt_s * 1e9)), "ns")
    dt_obs = np.median(np.diff(obs_t)) if len(obs_t) > 1 else dt_model
    n_model = len(model_t)
    segment = np.full(n_model, -1, np.int64)
    if dt_obs <= dt_model:  # observations at the model step ends
        pos = np.searchsorted(obs_t, model_t)
        hit = (pos < len(obs_t)) & (obs_t[np.minimum(pos, len(obs_t) - 1)] == model_t)
        use = np.flatnonzero(hit[i0:i1]) + i0
        obs_vals = values[pos[use]]
        segment[use] = np.arange(len(use))
    else:  # model mean over each observation period
        per = np.searchsorted(obs_t, model_t, side="left")  # first obs time >= model time
        inside = (per < len(obs_t)) & (model_t > obs_t[np.minimum(per, len(obs_t) - 1)] - dt_obs)
        seg = np.where(inside, per, -1)
        seg[:i0] = -1
        seg[i1:] = -1
        periods, inverse = np.unique(seg[seg >= 0], return_inverse=True)
        segment[seg >= 0] = inverse
        obs_vals = values[periods]
        expected = int(round(dt_obs / dt_model))
        counts = np.bincount(inverse, minlength=len(periods))
        obs_vals = np.where((counts == expected)[:, None], obs_vals, np.nan)
    n_obs = obs_vals.shape[0]
    segment = np.where(segment < 0, n_obs, segment)
    counts = np.bincount(segment, minlength=n_obs + 1)[:n_obs].astype(float)
    w = np.ones(len(depths)) if sensor_weights is None else np.asarray(sensor_weights, float)
    return ObservationTarget(
        values=jnp.asarray(obs_vals), segment=jnp.asarray(segment), counts=jnp.asarray(counts),
        weights=jnp.asarray(w), layer_index=mapping.layer_index, depths=tuple(float(d) for d in depths),
        n_obs=int(n_obs), layer_weights=jnp.asarray(layer_w), moisture=moisture,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------- problem


def _pad_time(tree, n: int):
    """Pad the leading (time) axis to ``n`` by repeating the last entry (padded steps are never scored)."""

    def pad(x):
        x = jnp.asarray(x)
        extra = n - x.shape[0]
        return x if extra <= 0 else jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)], axis=0)

    return jax.tree_util.tree_map(pad, tree)


class _Problem(eqx.Module):
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
    liquid: str = eqx.field(static=True)  # the water the sensors see: "total", "liquid" or "both" (_moisture)


def _make_problem(setup, target, specs, loss, i1, truncation_steps, checkpoint_every) -> _Problem:
    n_run = i1
    length = n_run if not truncation_steps else min(int(truncation_steps), n_run)
    n_win = -(-n_run // length)
    n_pad = n_win * length
    forcing = _pad_time(jax.tree_util.tree_map(lambda x: jnp.asarray(x)[:n_run], setup.forcing), n_pad)
    seg = np.full(n_pad, target.n_obs, np.int64)  # steps beyond the window and the padding: dummy period
    seg[:n_run] = np.asarray(target.segment)[:n_run]
    target = eqx.tree_at(lambda t: t.segment, target, jnp.asarray(seg))
    return _Problem(
        forcing=forcing, state0=setup.state0, params=setup.params, grid=setup.grid, target=target,
        theta_upper=jnp.asarray(setup.params.soil.smcmax), options=setup.options, specs=tuple(specs), loss=loss,
        n_run=n_run, length=length, n_win=n_win, checkpoint_every=checkpoint_every, liquid=target.moisture,
    )  # fmt: skip


def _window_forcing(prob: _Problem):
    """Forcing (length, n_win, ...): windows side by side as a batch of columns."""
    return jax.tree_util.tree_map(
        lambda x: jnp.swapaxes(x.reshape(prob.n_win, prob.length, *x.shape[1:]), 0, 1), prob.forcing
    )


def _moisture_kind(liquid) -> str:
    """``"liquid"`` / ``"total"`` where all sensors see liquid / total water, else ``"both"``."""
    liquid = np.asarray(liquid, bool)
    return "liquid" if liquid.all() and liquid.size else "total" if not liquid.any() else "both"


def _sees_liquid(setup) -> str:
    """The water all soil moisture sensors of the site see (:func:`_moisture_kind`)."""
    return _moisture_kind(setup.site.sees_liquid("soil_moisture"))


def _moisture(state: StationState, kind: str | bool) -> jax.Array:
    """The soil moisture the sensors see, (..., N) m3 m-3: liquid ``sh2o`` (``"liquid"`` or True), total ``smc``
    (``"total"`` or False), or both side by side (..., 2N) (``"both"``, total first)."""
    if kind == "both":
        return jnp.concatenate([state.soil.smc, state.soil.sh2o], axis=-1)
    return state.soil.sh2o if kind in ("liquid", True) else state.soil.smc


def _run_moisture(prob: _Problem, params: StationParams, init: StationState) -> jax.Array:
    """Soil moisture as the sensors see it (n_win * length, N) in the windows started from ``init`` (batch
    n_win)."""
    _, smc = run_station(
        init, _window_forcing(prob), params, prob.grid, prob.options, observe=lambda s, f: _moisture(s, prob.liquid),
        checkpoint_every=prob.checkpoint_every, finite_check=False,
    )  # fmt: skip
    return jnp.swapaxes(smc, 0, 1).reshape(prob.n_win * prob.length, -1)


def _loss(latent, prob: _Problem, init: StationState):
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
def _window_starts(latent, prob: _Problem) -> StationState:
    """States entering each window (a forward run with the current parameters), batch n_win, no gradient."""
    params = apply_parameters(prob.params, prob.specs, latent_to_values(latent, prob.specs))
    frc = jax.tree_util.tree_map(lambda x: x[: (prob.n_win - 1) * prob.length], prob.forcing)
    _, states = run_station(prob.state0, frc, params, prob.grid, prob.options, observe=lambda s, f: s,
                            finite_check=False)  # fmt: skip
    idx = jnp.arange(1, prob.n_win) * prob.length - 1
    later = jax.tree_util.tree_map(lambda x: x[idx], states)
    return jax.lax.stop_gradient(jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), prob.state0, later))


def _init_states(latent, prob: _Problem) -> StationState:
    if prob.n_win == 1:
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], prob.state0)
    return _window_starts(latent, prob)


def _site_value_and_grad(latent, prob: _Problem):
    (value, terms), grad = _value_and_grad(latent, prob, _init_states(latent, prob))
    return value, terms, grad


# --------------------------------------------------------------------------------------------------- direct


@dataclasses.dataclass
class CalibrationResult:
    """``params`` the best parameters found (lowest loss evaluated); ``values`` their calibrated entries;
    ``latent`` their latents; ``history`` one row per evaluation (step, loss, data term, values, seconds);
    ``specs`` the specs; ``evaluations`` model evaluations used (= steps)."""

    params: StationParams
    values: dict[str, np.ndarray]
    latent: dict[str, jax.Array]
    history: pd.DataFrame
    specs: tuple[ParameterSpec, ...]
    evaluations: int


def _values_row(latent, specs) -> dict[str, float]:
    row = {}
    for s in specs:
        v = np.asarray(s.from_latent(latent[s.name]))
        if v.ndim == 0:
            row[s.name] = float(v)
        else:
            row.update({f"{s.name}[{k}]": float(x) for k, x in enumerate(v)})
    return row


def _progress(iterable, desc, progress):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc)


def calibrate(
    setup,
    observations=None,
    specs: Sequence[str | Mapping | ParameterSpec] = ("soil.bexp", "soil.dksat", "soil.smcmax"),
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
    progress: bool = True,
) -> CalibrationResult:
    """Calibrate the parameters ``specs`` of the station model at one site against layered observations.

    Parameters
    ----------
    setup
        :class:`dam.station.StationSetup`, spun up by the caller (the run starts from ``setup.state0`` at
        ``setup.times[0]``).
    observations
        xarray Dataset (with ``variable``) or DataArray ``(time, depth)``; default ``setup.site.observations``.
    specs
        Names (default ranges), config mappings or :class:`ParameterSpec` (:func:`make_specs`).
    start, end
        Loss window (dates, or step indices with ``end`` exclusive); steps before ``start`` are run (warm-up)
        but not scored. Default: the whole set-up.
    steps
        Optimiser steps = model evaluations.
    optimizer
        optax transformation on the latents; default Adam with a cosine decay from ``learning_rate`` to 5 % of
        it over ``steps`` (damps the oscillation of plain Adam near the optimum).
    loss
        :class:`PhysicsLoss` (data term and weights); default masked RMSE. ``w_bounds`` penalises modelled
        moisture outside [0, SMCMAX]; the water and heat terms are for hybrids (the physics conserves both).
    truncation_steps
        Gradient window length (module docs); ``None`` = full back-propagation through the run.
    checkpoint_every
        Rematerialised segment length inside each window, steps. The default 1 keeps the states between steps
        (and the water sub-steps' carries) and recomputes each step in the reverse pass: the smallest memory, and
        for the station model also the fastest gradient and compilation (docs/performance.md); ``None`` keeps
        every step's intermediates.
    variable, sensors, skip_unreliable
        Which observations (:func:`prepare_observations`).
    init_latent
        Start from these latents instead of the set-up's parameters.
    """
    specs = make_specs(specs)
    loss = loss or PhysicsLoss(data="rmse")
    target = prepare_observations(setup, observations, start=start, end=end, variable=variable, sensors=sensors,
                                  skip_unreliable=skip_unreliable)  # fmt: skip
    _, i1 = _window(setup.times, start, end)
    prob = _make_problem(setup, target, specs, loss, i1, truncation_steps, checkpoint_every)
    latent = dict(init_latent) if init_latent is not None else initial_latent(setup.params, specs)
    latent = {k: jnp.asarray(v, jnp.asarray(setup.state0.soil.smc).dtype) for k, v in latent.items()}
    opt = optimizer or optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.05))
    opt_state = opt.init(latent)
    rows, best = [], (np.inf, latent)
    for k in _progress(range(steps), f"calibrate {setup.site.meta.name}", progress):
        t0 = time.perf_counter()
        value, terms, grad = _site_value_and_grad(latent, prob)
        value = float(value)
        rows.append({"step": k, "loss": value, "data": float(terms.data), **_values_row(latent, specs),
                     "seconds": time.perf_counter() - t0})  # fmt: skip
        if np.isfinite(value) and value < best[0]:
            best = (value, latent)
        updates, opt_state = opt.update(grad, opt_state, latent)
        latent = optax.apply_updates(latent, updates)
    best_latent = best[1]
    values = {k: np.asarray(v) for k, v in latent_to_values(best_latent, specs).items()}
    params = apply_parameters(setup.params, specs, values)
    return CalibrationResult(params, values, best_latent, pd.DataFrame(rows), specs, steps)


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


def latin_hypercube(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` points of a Latin hypercube in [0, 1)^dim (one point per stratum along every axis)."""
    rng = np.random.default_rng(seed)
    u = (np.arange(n)[:, None] + rng.random((n, dim))) / n
    for j in range(dim):
        u[:, j] = u[rng.permutation(n), j]
    return u


_forward_moisture = eqx.filter_jit(
    lambda state0, forcing, params, grid, options, liquid: run_station(
        state0, forcing, params, grid, options, observe=lambda s, f: _moisture(s, liquid), finite_check=False
    )[1]
)


@eqx.filter_jit
def _score(smc, target: ObservationTarget, loss: PhysicsLoss, smcmax):
    kw = {}
    if loss.w_bounds > 0:
        kw = dict(theta=smc[..., : jnp.shape(smcmax)[-1]], theta_lower=0.0, theta_upper=smcmax)
    return loss(target.model_at_obs(smc), target.values, weights=target.weights, **kw).total


def latin_hypercube_search(
    setup,
    observations=None,
    specs: Sequence[str | Mapping | ParameterSpec] = ("soil.bexp", "soil.dksat", "soil.smcmax"),
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
    :func:`calibrate` (the same compiled forward run as :func:`evaluate`). Budget rule: module docs."""
    specs = make_specs(specs)
    loss = loss or PhysicsLoss(data="rmse")
    target = prepare_observations(setup, observations, start=start, end=end, variable=variable, sensors=sensors,
                                  skip_unreliable=skip_unreliable)  # fmt: skip
    _, i1 = _window(setup.times, start, end)
    z0 = initial_latent(setup.params, specs)
    sizes = [int(np.size(z0[s.name])) for s in specs]
    u = latin_hypercube(max(budget - 1, 0), sum(sizes), seed)
    vecs = [np.asarray(_latent_vector(z0, specs))]
    for row in u:
        parts, i = [], 0
        for n in sizes:
            uu = np.clip(row[i : i + n], UNIT_EPS, 1 - UNIT_EPS)
            parts.append(np.log(uu) - np.log1p(-uu))
            i += n
        vecs.append(np.concatenate(parts))
    vecs = np.stack(vecs)[:budget]
    dtype = jnp.asarray(setup.state0.soil.smc).dtype
    frc = setup.forcing if i1 == len(setup.times) else jax.tree_util.tree_map(lambda x: x[:i1], setup.forcing)
    target = eqx.tree_at(lambda t: t.segment, target, target.segment[:i1])
    losses = []
    for v in vecs:
        values = latent_to_values(_latent_from_vector(jnp.asarray(v, dtype), z0, specs), specs)
        params = apply_parameters(setup.params, specs, values)
        smc = _forward_moisture(setup.state0, frc, params, setup.grid, setup.options, target.moisture)
        losses.append(float(_score(smc, target, loss, params.soil.smcmax)))
    losses = np.asarray(losses)
    rows = []
    for k, (v, ell) in enumerate(zip(vecs, losses, strict=True)):
        rows.append(
            {"evaluation": k, "loss": float(ell), **_values_row(_latent_from_vector(jnp.asarray(v), z0, specs), specs)}
        )
    ib = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))
    best_latent = _latent_from_vector(jnp.asarray(vecs[ib], dtype), z0, specs)
    values = {k: np.asarray(v) for k, v in latent_to_values(best_latent, specs).items()}
    return SearchResult(apply_parameters(setup.params, specs, values), values, pd.DataFrame(rows), specs,
                        len(vecs))  # fmt: skip


# --------------------------------------------------------------------------------------------------- evaluate


def evaluate(
    setup,
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
    smc = _forward_moisture(setup.state0, setup.forcing, params, setup.grid, setup.options, target.moisture)
    pred = np.asarray(target.model_at_obs(smc))
    obs = np.asarray(target.values)
    ok = np.isfinite(pred) & np.isfinite(obs)
    err = np.where(ok, pred - obs, 0.0)
    by_depth = {d: float(np.sqrt((err[:, j] ** 2).sum() / max(ok[:, j].sum(), 1)))
                for j, d in enumerate(target.depths)}  # fmt: skip
    return {"rmse": float(np.sqrt((err**2).sum() / max(ok.sum(), 1))), "rmse_by_depth": by_depth,
            "n": int(ok.sum())}  # fmt: skip


# --------------------------------------------------------------------------------------------------- dPL


@dataclasses.dataclass
class DPLResult:
    """``network`` the trained MLP (normalised attributes -> latent vector); ``params`` / ``values`` per site;
    ``history`` one row per step (mean loss and per-site losses); ``attr_mean`` / ``attr_std`` the attribute
    normalisation (apply to new sites with :meth:`predict`)."""

    network: eqx.Module
    params: list[StationParams]
    values: list[dict[str, np.ndarray]]
    history: pd.DataFrame
    specs: tuple[ParameterSpec, ...]
    attr_mean: np.ndarray
    attr_std: np.ndarray
    template: dict[str, jax.Array]

    def predict(self, attributes) -> list[dict[str, np.ndarray]]:
        """Parameter values for sites with ``attributes`` (n_sites, n_attr)."""
        a = (np.asarray(attributes, float) - self.attr_mean) / self.attr_std
        out = []
        for row in a:
            lat = _latent_from_vector(self.network(jnp.asarray(row)), self.template, self.specs)
            out.append({k: np.asarray(v) for k, v in latent_to_values(lat, self.specs).items()})
        return out


def calibrate_dpl(
    setups: Sequence,
    observations: Sequence | None,
    attributes,
    specs: Sequence[str | Mapping | ParameterSpec] = ("soil.bexp", "soil.dksat", "soil.smcmax"),
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
    progress: bool = True,
) -> DPLResult:
    """Differentiable parameter learning: an MLP maps normalised site attributes to the latent parameters of
    every site; trained on the mean of the sites' losses.

    Parameters
    ----------
    setups, observations
        One set-up (spun up) and one observation set (or ``None``: the site's) per site.
    attributes
        (n_sites, n_attr) site attributes (e.g. sand/clay fraction, mean precipitation, latitude), normalised
        here by their mean and standard deviation over the sites.
    network
        Any module mapping (n_attr,) to (n_latent,) (n_latent = total size of the specs); default an
        ``eqx.nn.MLP(width, depth, tanh)`` whose output starts at the first site's default latents (last layer
        weights scaled by 0.01), so training starts from the table parameters.
    windows
        Per-site loss windows ``(start, end)``; default the whole set-up.
    Other arguments as :func:`calibrate`; the default optimiser is ``optax.adam(learning_rate)``.
    """
    specs = make_specs(specs)
    loss = loss or PhysicsLoss(data="rmse")
    n_sites = len(setups)
    observations = list(observations) if observations is not None else [None] * n_sites
    windows = list(windows) if windows is not None else [(None, None)] * n_sites
    attributes = np.asarray(attributes, float).reshape(n_sites, -1)
    mean = attributes.mean(axis=0)
    std = attributes.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    a_norm = jnp.asarray((attributes - mean) / std)
    probs, templates = [], []
    for setup, obs, (s0, s1) in zip(setups, observations, windows, strict=True):
        target = prepare_observations(setup, obs, start=s0, end=s1, variable=variable,
                                      skip_unreliable=skip_unreliable)  # fmt: skip
        _, i1 = _window(setup.times, s0, s1)
        probs.append(_make_problem(setup, target, specs, loss, i1, truncation_steps, checkpoint_every))
        templates.append(initial_latent(setup.params, specs))
    template = templates[0]
    dtype = jnp.asarray(setups[0].state0.soil.smc).dtype
    if network is None:
        n_latent = int(_latent_vector(template, specs).size)
        net = eqx.nn.MLP(attributes.shape[1], n_latent, width, depth, activation=jnp.tanh,
                         key=jax.random.PRNGKey(seed))  # fmt: skip
        last = net.layers[-1]
        net = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), net,
                          (last.weight * 0.01, _latent_vector(template, specs)))  # fmt: skip
        network = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype) if eqx.is_inexact_array(x) else x, net)
    opt = optimizer or optax.adam(learning_rate)
    opt_state = opt.init(eqx.filter(network, eqx.is_inexact_array))
    rows = []
    best = (np.inf, network)
    for k in _progress(range(steps), "calibrate_dpl", progress):
        t0 = time.perf_counter()
        site_losses, net_grad = [], None
        for i, prob in enumerate(probs):
            vec, pullback = eqx.filter_vjp(lambda m, x=a_norm[i]: m(x), network)
            lat = _latent_from_vector(vec, template, specs)
            value, _, g_lat = _site_value_and_grad(lat, prob)
            (g_net,) = pullback(_latent_vector(g_lat, specs) / n_sites)
            net_grad = g_net if net_grad is None else jax.tree_util.tree_map(jnp.add, net_grad, g_net)
            site_losses.append(float(value))
        mean_loss = float(np.mean(site_losses))
        rows.append({"step": k, "loss": mean_loss, **{f"site{i}": v for i, v in enumerate(site_losses)},
                     "seconds": time.perf_counter() - t0})  # fmt: skip
        if np.isfinite(mean_loss) and mean_loss < best[0]:
            best = (mean_loss, network)
        updates, opt_state = opt.update(net_grad, opt_state, eqx.filter(network, eqx.is_inexact_array))
        network = eqx.apply_updates(network, updates)
    network = best[1]
    result = DPLResult(network, [], [], pd.DataFrame(rows), specs, mean, std, template)
    result.values = result.predict(attributes)
    result.params = [apply_parameters(s.params, specs, v) for s, v in zip(setups, result.values, strict=True)]
    return result
