"""Goodness-of-fit metrics of simulated against observed series: r, bias, RMSE, ubRMSE, NSE, KGE.

Conventions (the same for every metric):

* ``sim`` and ``obs`` broadcast against each other; the metric reduces over ``axis`` (``None``: all elements).
* NaN-aware: pairs where either value is NaN (or inf) are dropped. With fewer than ``min_pairs`` valid pairs the
  result is NaN and, when the inputs are concrete arrays (not traced under ``jit``), a ``RuntimeWarning``.
* A metric whose terms are undefined is NaN, never a perfect score: r, NSE and KGE of a constant series, KGE's
  beta with a zero observed mean. :func:`why_undefined` says why (the ``note`` column of the tables).
* Population moments (ddof = 0), so ``ubrmse**2 == rmse**2 - bias**2`` holds exactly up to round-off.
* bias = mean(sim - obs); RMSE = sqrt(mean((sim - obs)^2)); ubRMSE = sqrt(mean(((sim - mean sim) - (obs - mean
  obs))^2)); NSE = 1 - sum((sim - obs)^2) / sum((obs - mean obs)^2); KGE (Gupta et al. 2009) = 1 - sqrt((r - 1)^2
  + (alpha - 1)^2 + (beta - 1)^2) with alpha = std sim / std obs and beta = mean sim / mean obs.
* Pure ``jax.numpy``: they work under ``jit``/``vmap``, on numpy inputs, and their gradients are finite where the
  metric is differentiable (square roots and divisions use the double-where pattern, so a perfect fit gives a
  zero, not NaN, gradient of RMSE).

:func:`metrics_table` builds a per-variable, per-sensor table (pandas) from model and observation Datasets.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "pearson_r", "bias", "rmse", "ubrmse", "nse", "kge", "all_metrics", "METRICS", "metrics_table", "why_undefined",
]  # fmt: skip

DEFAULT_MIN_PAIRS = 3


def _is_traced(*xs: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def _prepare(sim, obs, axis):
    sim = jnp.asarray(sim)
    obs = jnp.asarray(obs)
    dtype = jnp.result_type(sim.dtype, obs.dtype, jnp.float32)
    sim, obs = jnp.broadcast_arrays(sim.astype(dtype), obs.astype(dtype))
    if axis is None:
        sim, obs = sim.reshape(-1), obs.reshape(-1)
        axis = 0
    mask = jnp.isfinite(sim) & jnp.isfinite(obs)
    n = jnp.sum(mask, axis=axis)
    return jnp.where(mask, sim, 0.0), jnp.where(mask, obs, 0.0), mask, n, axis


def _mean(x, mask, n, axis):
    return jnp.sum(jnp.where(mask, x, 0.0), axis=axis) / jnp.maximum(n, 1)


def _sqrt(x):
    """sqrt with a finite gradient at 0; round-off below 0 gives 0, NaN stays NaN (an undefined term must never
    turn into a perfect score)."""
    ok = x > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), jnp.where(jnp.isnan(x), jnp.nan, 0.0))


def _div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1.0), jnp.nan)


def _constant_is_zero(var, mean):
    """The variance of a constant series is round-off (e.g. 1e-33 for 0.3 repeated): make it exactly 0, so that
    the terms dividing by it are NaN instead of huge."""
    eps = jnp.finfo(var.dtype).eps
    return jnp.where(var > (16 * eps * jnp.abs(mean)) ** 2, var, 0.0)


def _moments(sim, obs, axis):
    s, o, mask, n, axis = _prepare(sim, obs, axis)
    ms = _mean(s, mask, n, axis)
    mo = _mean(o, mask, n, axis)
    ds = jnp.where(mask, s - jnp.expand_dims(ms, axis), 0.0)
    do = jnp.where(mask, o - jnp.expand_dims(mo, axis), 0.0)
    vs = _constant_is_zero(_mean(ds * ds, mask, n, axis), ms)
    vo = _constant_is_zero(_mean(do * do, mask, n, axis), mo)
    cov = _mean(ds * do, mask, n, axis)
    mse = _mean((s - o) ** 2, mask, n, axis)
    return {
        "n": n,
        "ms": ms,
        "mo": mo,
        "vs": vs,
        "vo": vo,
        "cov": cov,
        "mse": mse,
        "ds": ds,
        "do": do,
        "mask": mask,
        "axis": axis,
    }


def _finish(value, n, min_pairs, name, *inputs):
    value = jnp.where(n >= min_pairs, value, jnp.nan)
    if not _is_traced(*inputs, n):
        short = np.asarray(n) < min_pairs
        if np.any(short):
            warnings.warn(
                f"{name}: fewer than {min_pairs} valid (non-NaN) pairs in {int(np.sum(short))} series; result NaN",
                RuntimeWarning,
                stacklevel=3,
            )
    return value


def pearson_r(sim, obs, axis: int | None = None, min_pairs: int = DEFAULT_MIN_PAIRS) -> jax.Array:
    """Pearson correlation coefficient [-] (NaN where either series is constant)."""
    m = _moments(sim, obs, axis)
    r = _div(m["cov"], _sqrt(m["vs"] * m["vo"]))
    return _finish(r, m["n"], min_pairs, "pearson_r", sim, obs)


def bias(sim, obs, axis: int | None = None, min_pairs: int = DEFAULT_MIN_PAIRS) -> jax.Array:
    """Mean error mean(sim - obs), in the units of the inputs."""
    m = _moments(sim, obs, axis)
    return _finish(m["ms"] - m["mo"], m["n"], min_pairs, "bias", sim, obs)


def rmse(sim, obs, axis: int | None = None, min_pairs: int = DEFAULT_MIN_PAIRS) -> jax.Array:
    """Root-mean-square error, in the units of the inputs."""
    m = _moments(sim, obs, axis)
    return _finish(_sqrt(m["mse"]), m["n"], min_pairs, "rmse", sim, obs)


def ubrmse(sim, obs, axis: int | None = None, min_pairs: int = DEFAULT_MIN_PAIRS) -> jax.Array:
    """Unbiased RMSE: RMSE of the anomalies about each series' mean (ubRMSE^2 = RMSE^2 - bias^2)."""
    m = _moments(sim, obs, axis)
    d = m["ds"] - m["do"]
    return _finish(_sqrt(_mean(d * d, m["mask"], m["n"], m["axis"])), m["n"], min_pairs, "ubrmse", sim, obs)


def nse(sim, obs, axis: int | None = None, min_pairs: int = DEFAULT_MIN_PAIRS) -> jax.Array:
    """Nash-Sutcliffe efficiency [-] (1 is perfect; NaN where the observations are constant)."""
    m = _moments(sim, obs, axis)
    return _finish(1.0 - _div(m["mse"], m["vo"]), m["n"], min_pairs, "nse", sim, obs)


def kge(sim, obs, axis: int | None = None, min_pairs: int = DEFAULT_MIN_PAIRS) -> jax.Array:
    """Kling-Gupta efficiency (Gupta et al. 2009) [-]: 1 - sqrt((r-1)^2 + (alpha-1)^2 + (beta-1)^2)."""
    m = _moments(sim, obs, axis)
    r = _div(m["cov"], _sqrt(m["vs"] * m["vo"]))
    alpha = _div(_sqrt(m["vs"]), _sqrt(m["vo"]))
    beta = _div(m["ms"], m["mo"])
    ed = (r - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2
    return _finish(1.0 - _sqrt(ed), m["n"], min_pairs, "kge", sim, obs)


METRICS = {"r": pearson_r, "bias": bias, "rmse": rmse, "ubrmse": ubrmse, "nse": nse, "kge": kge}


def all_metrics(
    sim, obs, axis: int | None = None, min_pairs: int = DEFAULT_MIN_PAIRS, *, warn: bool = True
) -> dict[str, jax.Array]:
    """Every metric of :data:`METRICS` plus ``n`` (the number of valid pairs), as a dict of arrays; one
    ``RuntimeWarning`` for series with too few pairs unless ``warn=False`` (callers that report the NaN's reason
    themselves, e.g. in a table's ``note``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {k: f(sim, obs, axis, min_pairs) for k, f in METRICS.items()}
    n = _moments(sim, obs, axis)["n"]
    if warn:
        _finish(jnp.zeros(n.shape), n, min_pairs, "metrics", sim, obs)
    return {"n": n, **out}


def why_undefined(sim, obs, min_pairs: int = DEFAULT_MIN_PAIRS) -> str:
    """Why some metrics of the 1-D series ``sim`` against ``obs`` are NaN ("" when all are defined): too few
    valid pairs, a constant observed or simulated series (r, NSE, KGE), a zero observed mean (KGE)."""
    sim, obs = np.asarray(sim, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(sim) & np.isfinite(obs)
    n = int(ok.sum())
    if n < min_pairs:
        return f"too few points ({n} valid pairs < {min_pairs})"
    s, o = sim[ok], obs[ok]
    reasons = [
        label
        for label, bad in (
            ("constant observations: r, NSE, KGE undefined", np.ptp(o) == 0),
            ("constant simulation: r, KGE undefined", np.ptp(s) == 0),
            ("zero observed mean: KGE undefined", o.mean() == 0),
        )
        if bad
    ]
    return "; ".join(reasons)


# --------------------------------------------------------------------------------------------------------------
# Table for model vs observation Datasets
# --------------------------------------------------------------------------------------------------------------


def _to_observation_times(model, obs_times, obs_step_s: float):
    """Model series on the observation time stamps: exact matches, else the mean of the model values in each
    observation interval (t - step, t] (the end-of-interval convention of the site format)."""
    import pandas as pd
    import xarray as xr

    mt = pd.DatetimeIndex(model["time"].values)
    ot = pd.DatetimeIndex(obs_times)
    if mt.isin(ot).all() and ot.isin(mt).all():
        return model.sel(time=ot)
    ends = ot.as_unit("ns").asi8
    starts = ends - int(round(obs_step_s * 1e9))
    t = mt.as_unit("ns").asi8
    k = np.searchsorted(ends, t, side="left")
    inside = (k < ends.size) & (t > starts[np.minimum(k, ends.size - 1)])
    group = np.where(inside, k, -1)
    da = model.assign_coords(_bin=("time", group)).where(xr.DataArray(inside, dims="time"), drop=True)
    mean = da.groupby("_bin").mean("time")
    out = mean.reindex(_bin=np.arange(ends.size)).rename(_bin="time").assign_coords(time=ot.to_numpy())
    return out


def metrics_table(
    model,
    observations,
    layer_bottoms_m: Sequence[float] | None = None,
    *,
    variables: Sequence[str] | None = None,
    site=None,
    layer_dim: str = "layer",
    min_pairs: int = 10,
    rule: str = "interpolate",
):
    """Per-variable (and per-sensor for soil series) metrics of a model run against observations.

    Parameters
    ----------
    model : xarray.Dataset
        Model output with the canonical variable names of :mod:`dam.sites` (``soil_moisture`` and
        ``soil_temperature`` with dims ``(time, layer_dim)``, fluxes with dims ``(time,)``) in the same units as
        the observations; a finer time step is averaged onto the observation intervals.
    observations : xarray.Dataset
        A validated observation Dataset (:func:`dam.sites.standardise_observations`).
    layer_bottoms_m
        Model layer bottoms [m, positive down]; needed for soil series (how sensors read the layers:
        :mod:`dam.sensors`).
    variables
        Variables to compare (default: those in both Datasets).
    site
        Optional :class:`dam.sites.Site`: adds the ``unreliable`` column from ``site.yaml``, compares soil
        moisture with the model's ``soil_liquid_water`` at the sensors that see liquid water only, and uses the
        sensors' footprints (:meth:`dam.sites.Site.model_at_sensors`).
    min_pairs
        Fewer valid pairs give NaN metrics (and a warning).
    rule
        Sensor mapping rule, ``"interpolate"`` (default) or ``"layer"`` (:func:`dam.sensors.map_sensors_to_layers`).

    Returns
    -------
    pandas.DataFrame
        Columns ``variable, depth_m, layer, n, r, bias, rmse, ubrmse, nse, kge, units, unreliable, note``; one row
        per flux series and per soil sensor; ``note`` says why a metric is NaN (:func:`why_undefined`).
    """
    import pandas as pd

    from dam.sites import SOIL_VARIABLES, SiteError, model_at_sensors

    names = list(variables) if variables is not None else [v for v in observations.data_vars if v in model]
    times = pd.DatetimeIndex(observations["time"].values)
    step = float(np.median(np.diff(times.as_unit("ns").asi8)) / 1e9)
    rows = []
    for name in names:
        if name not in model or name not in observations:
            raise SiteError(f"metrics_table: variable {name!r} is missing from the model or the observations")
        obs = observations[name]
        mod = model[name]
        if name in SOIL_VARIABLES:
            if layer_bottoms_m is None:
                raise SiteError(f"metrics_table: layer_bottoms_m is needed to compare {name!r}")
            if site is not None:
                depths = obs[obs.dims[1]].values
                mapping, mod = site.model_at_sensors(model, name, layer_bottoms_m, depths, rule=rule)
            else:
                mapping, mod = model_at_sensors(mod, obs, layer_bottoms_m, layer_dim=layer_dim, rule=rule)
        mod = _to_observation_times(mod, times, step)
        sim_a = np.asarray(mod.transpose(*obs.dims).values, dtype=np.float64)
        obs_a = np.asarray(obs.values, dtype=np.float64)
        res = {k: np.asarray(v) for k, v in all_metrics(sim_a, obs_a, 0, min_pairs, warn=False).items()}
        rows += _metric_rows(name, obs, sim_a, obs_a, res, mapping if name in SOIL_VARIABLES else None, site,
                             min_pairs)  # fmt: skip
    columns = ["variable", "depth_m", "layer", "n", *METRICS, "units", "unreliable", "note"]
    table = pd.DataFrame(rows, columns=columns)
    short = table["n"] < min_pairs
    if short.any():
        warnings.warn(
            f"metrics_table: fewer than {min_pairs} valid pairs for "
            + ", ".join(f"{r.variable}@{r.depth_m}" for r in table[short].itertuples()),
            RuntimeWarning,
            stacklevel=2,
        )
    table["n"] = table["n"].astype(int)
    return table


def _metric_rows(name, obs, sim_a, obs_a, res, mapping, site, min_pairs) -> list[dict]:
    """The rows of :func:`metrics_table` for one variable: one per sensor of a soil series (``mapping`` given),
    else one."""
    units = obs.attrs.get("units", "")
    rows = []
    if mapping is not None:
        ddim = obs.dims[1]
        for j, depth in enumerate(obs[ddim].values):
            flag = site.unreliable_flag(name, float(depth)) if site is not None else ""
            rows.append(
                {
                    "variable": name,
                    "depth_m": float(depth),
                    "layer": mapping.layer_index[j],
                    **{k: float(v[j]) for k, v in res.items()},
                    "units": units,
                    "unreliable": flag,
                    "note": why_undefined(sim_a[:, j], obs_a[:, j], min_pairs),
                }
            )
    else:
        flag = site.unreliable_flag(name) if site is not None else ""
        rows.append(
            {
                "variable": name,
                "depth_m": np.nan,
                "layer": -1,
                **{k: float(v) for k, v in res.items()},
                "units": units,
                "unreliable": flag,
                "note": why_undefined(sim_a, obs_a, min_pairs),
            }
        )
    return rows
