"""Which calibrated parameters a window of observations can determine (local, linearised identifiability).

Calibration fits modelled sensor readings to observations; a parameter whose error the readings barely show
cannot be recovered, however good the optimiser. :func:`identifiability` measures this at one parameter set
(a synthetic truth, or a calibration's result) with the Jacobian of the readings with respect to the log of
each calibrated value, from one forward-mode pass through the station model (``jax.jacfwd``, a lane per
value). For each value it reports the RMSE change of the readings when that value alone is off by a relative
error, and the least RMSE change when it is off by that error and every other value is refitted to hide it
(the Gauss-Newton profile): a value whose profile RMSE lies below what an optimiser reaches, or below the
sensors' noise, cannot be recovered to that error from these observations.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .calibration import SpecLike, prepare_observations, run_to_window_end
from .coupling.calibration import apply_parameters, current_values, forward_moisture, make_specs
from .physics.station import StationParams
from .site_run import StationSetup

__all__ = ["identifiability"]


@eqx.filter_jit
def _jacobian(log_values, specs, sizes, params, state0, forcing, grid, options, target):
    """(readings (n_obs, n_sensors), d readings / d log value (n_obs, n_sensors, P)) at ``exp(log_values)``;
    ``sizes`` the number of values of each spec."""

    def readings(u):
        values = {s.name: jnp.exp(v if s.per_layer else v[0])
                  for s, v in zip(specs, jnp.split(u, np.cumsum(sizes)[:-1]), strict=True)}  # fmt: skip
        smc = forward_moisture(state0, forcing, apply_parameters(params, specs, values), grid, options,
                               target.moisture)  # fmt: skip
        out = target.model_at_obs(smc)
        return out, out

    jac, pred = jax.jacfwd(readings, has_aux=True)(log_values)  # the readings come with their tangents: one run
    return pred, jac


def identifiability(
    setup: StationSetup,
    specs: Sequence[SpecLike],
    params: StationParams | None = None,
    observations=None,
    *,
    start=None,
    end=None,
    relative_error: float = 0.05,
    variable: str = "soil_moisture",
    sensors: Sequence[float] | None = None,
    skip_unreliable: bool = True,
) -> pd.DataFrame:
    """How much a relative error in each calibrated value shows in the fit to the observations (linearised).

    Parameters
    ----------
    setup : the station set-up (its spun-up initial state and forcing).
    specs : the calibrated parameters (names or :class:`~dam.coupling.calibration.ParameterSpec`); a per-layer
        spec gives one row per layer. Bounds play no part: the sensitivities are taken at ``params``.
    params : the parameter set to examine (default the set-up's): a synthetic truth, or a calibration's result.
    observations, start, end, variable, sensors, skip_unreliable : which readings are scored, as for
        :func:`dam.calibration.calibrate`; only where an observation exists matters, not its value.
    relative_error : the error examined (0.05: 5 %).

    Returns
    -------
    DataFrame, one row per calibrated value (``soil.bexp[2]`` for layer 3 of a per-layer spec): ``value`` at
    ``params``; ``rmse_alone`` the RMSE (units of the observations, m3 m-3 for soil moisture) between the
    readings at ``params`` and with this value alone off by ``relative_error``; ``rmse_profile`` the least such
    RMSE when every other value is refitted to compensate (0 for a value the readings do not depend on, or
    whose effect others can mimic exactly). ``attrs["n"]`` holds the number of scored readings.

    Both RMSEs are linear in the error: they hold for errors small enough that the readings change linearly
    (a few percent), and through freezing they use the model's gradient of freezing (docs/gradients.md).
    """
    if not relative_error > 0:
        raise ValueError(f"relative_error must be positive (0.05: 5 %), got {relative_error}")
    specs = make_specs(specs)
    params = setup.params if params is None else params
    target = prepare_observations(setup, observations, start=start, end=end, variable=variable, sensors=sensors,
                                  skip_unreliable=skip_unreliable)  # fmt: skip
    forcing, target = run_to_window_end(setup, target, start, end)
    values = current_values(params, specs)
    names = [f"{s.name}[{k}]" if s.per_layer else s.name for s in specs for k in range(np.size(values[s.name]))]
    value = np.concatenate([np.ravel(values[s.name]) for s in specs])
    if np.any(value <= 0):
        bad = [n for n, v in zip(names, value, strict=True) if v <= 0]
        raise ValueError(f"identifiability needs positive parameter values (relative errors): {bad}")
    dtype = jnp.asarray(setup.state0.soil.smc).dtype
    sizes = tuple(int(np.size(values[s.name])) for s in specs)
    pred, jac = _jacobian(jnp.asarray(np.log(value), dtype), specs, sizes, params, setup.state0, forcing, setup.grid,
                          setup.options, target)  # fmt: skip
    scored = np.isfinite(np.asarray(target.values)) & np.isfinite(np.asarray(pred))
    jac = np.asarray(jac, float)[scored]  # (n, P): d reading / d log value
    if not np.isfinite(jac).all():
        raise FloatingPointError("identifiability: the Jacobian of the readings is not finite")
    n = int(scored.sum())
    step = np.log1p(relative_error)  # a relative error as a step in log value
    alone = step * np.linalg.norm(jac, axis=0) / np.sqrt(n)
    profile = np.empty_like(alone)
    for i in range(jac.shape[1]):  # what of column i the other columns cannot reproduce
        others = np.delete(jac, i, axis=1)
        fit = others @ np.linalg.lstsq(others, jac[:, i], rcond=None)[0] if others.size else 0.0
        profile[i] = step * np.linalg.norm(jac[:, i] - fit) / np.sqrt(n)
    out = pd.DataFrame({"value": value, "rmse_alone": alone, "rmse_profile": profile},
                       index=pd.Index(names, name="parameter"))  # fmt: skip
    out.attrs["n"] = n
    out.attrs["relative_error"] = relative_error
    return out
