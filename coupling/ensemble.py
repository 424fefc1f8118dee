"""Perturbed-parameter ensembles of the station model: Latin-hypercube samples of soil and vegetation parameters
within physical ranges, all members run at once (``vmap`` over members, in chunks), collected in a CF xarray
Dataset (member, time, layer) and saved to netCDF or zarr. Used to pretrain networks on model behaviour.

Parameter ranges (:data:`DEFAULT_FACTOR_RANGES`) are factors on the site's Noah-MP table values, so one set of ranges
serves every site; per-layer parameters are scaled by one factor in all layers (the profile keeps its shape).

========================  ===============  =====  =========================================================
name                      range (factor)   scale  parameter
========================  ===============  =====  =========================================================
``bexp``                  0.7 - 1.3        lin    Clapp-Hornberger b (-) [BEXP]
``dksat``                 0.1 - 10         log    saturated hydraulic conductivity (m s-1) [DKSAT]
``smcmax``                0.9 - 1.1        lin    porosity (m3 m-3) [SMCMAX], kept >= 1.02 x field capacity
``psisat``                0.3 - 3          log    saturated matric potential (m) [PSISAT]
``refkdt``                0.3 - 2          log    Schaake infiltration parameter (-) [REFKDT]
``stomata_slope``         0.7 - 1.3        lin    Ball-Berry slope m (-) [MP]
``vcmax25``               0.6 - 1.4        lin    max. carboxylation at 25 C (umol m-2 s-1) [VCMX25]
``rsurf_exp``             0.6 - 1.4        lin    exponent of the soil-surface resistance (-) [RSURF_EXP]
========================  ===============  =====  =========================================================

Other names of :data:`PARAMETER_PATHS` may be given with explicit ranges. With ``consistent_dwsat`` the
saturated diffusivity follows Clapp and Hornberger, ``dwsat ~ b dksat psisat / smcmax``: it is scaled by the
product of those factors (Noah-MP reads DWSAT from its table, so the default member keeps the table value).
Member 0 is always the unperturbed set-up (all factors 1), so the ensemble contains the default run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dam.physics.station import StationParams, run_station

__all__ = [
    "DEFAULT_FACTOR_RANGES",
    "PARAMETER_PATHS",
    "ParameterRange",
    "apply_factors",
    "perturbed_ensemble",
    "sample_factors",
    "save_ensemble",
]

SMCMAX_OVER_SMCREF_MIN = 1.02  # a perturbed porosity stays above field capacity


@dataclasses.dataclass(frozen=True)
class ParameterRange:
    """A sampling range: ``low``/``high`` are factors on the table value (``mode="factor"``) or the value itself
    (``mode="value"``, in the parameter's units); ``log`` samples uniformly in log space."""

    low: float
    high: float
    log: bool = False
    mode: str = "factor"

    def __post_init__(self) -> None:
        if self.mode not in ("factor", "value"):
            raise ValueError(f"mode must be 'factor' or 'value', got {self.mode!r}")
        if not self.low < self.high:
            raise ValueError(f"need low < high, got {self.low}, {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")


#: name -> (getter of the parameter in StationParams, units, long name)
PARAMETER_PATHS: dict[str, tuple[Callable[[StationParams], Any], str, str]] = {
    "bexp": (lambda p: p.soil.bexp, "1", "Clapp-Hornberger b parameter"),
    "dksat": (lambda p: p.soil.dksat, "m s-1", "saturated hydraulic conductivity"),
    "smcmax": (lambda p: p.soil.smcmax, "m3 m-3", "porosity"),
    "smcref": (lambda p: p.soil.smcref, "m3 m-3", "field capacity"),
    "smcwlt": (lambda p: p.soil.smcwlt, "m3 m-3", "wilting point"),
    "psisat": (lambda p: p.soil.psisat, "m", "saturated matric potential (magnitude)"),
    "dwsat": (lambda p: p.soil.dwsat, "m2 s-1", "saturated soil water diffusivity"),
    "quartz": (lambda p: p.soil.quartz, "1", "quartz fraction"),
    "refkdt": (lambda p: p.soil.refkdt, "1", "Schaake infiltration parameter REFKDT"),
    "drainage_slope": (lambda p: p.soil.slope, "1", "free-drainage factor SLOPE"),
    "stomata_slope": (lambda p: p.surface.stomata.slope, "1", "Ball-Berry slope m"),
    "vcmax25": (lambda p: p.surface.stomata.vcmax25, "umol m-2 s-1", "maximum carboxylation rate at 25 C"),
    "rsurf_exp": (lambda p: p.surface.rsurf_exp, "1", "exponent of the soil surface resistance"),
    "z0m_veg": (lambda p: p.surface.z0m_veg, "m", "canopy momentum roughness length"),
}

DEFAULT_FACTOR_RANGES: dict[str, ParameterRange] = {
    "bexp": ParameterRange(0.7, 1.3),
    "dksat": ParameterRange(0.1, 10.0, log=True),
    "smcmax": ParameterRange(0.9, 1.1),
    "psisat": ParameterRange(0.3, 3.0, log=True),
    "refkdt": ParameterRange(0.3, 2.0, log=True),
    "stomata_slope": ParameterRange(0.7, 1.3),
    "vcmax25": ParameterRange(0.6, 1.4),
    "rsurf_exp": ParameterRange(0.6, 1.4),
}


def _ranges(specs: Mapping[str, Any] | Sequence[str] | None) -> dict[str, ParameterRange]:
    """Normalise ``specs``: None (defaults), a list of names (default ranges), or name -> ParameterRange / dict
    (``{"low":, "high":, "log":, "mode":}``) / (low, high[, log[, mode]])."""
    if specs is None:
        return dict(DEFAULT_FACTOR_RANGES)
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, Mapping):
        missing = [s for s in specs if s not in DEFAULT_FACTOR_RANGES]
        if missing:
            raise ValueError(
                f"no default range for {missing}: give ranges for them (defaults: {list(DEFAULT_FACTOR_RANGES)})"
            )
        return {s: DEFAULT_FACTOR_RANGES[s] for s in specs}
    out = {}
    for name, r in specs.items():
        if name not in PARAMETER_PATHS:
            raise ValueError(f"unknown parameter {name!r}; known: {sorted(PARAMETER_PATHS)}")
        if isinstance(r, ParameterRange):
            out[name] = r
        elif isinstance(r, Mapping):
            out[name] = ParameterRange(**r)
        else:
            out[name] = ParameterRange(*r)
    return out


def sample_factors(
    ranges: Mapping[str, ParameterRange], n_samples: int, seed: int = 0, method: str = "lhs"
) -> np.ndarray:
    """(n_samples, P) samples, column p in ``ranges[p]`` (factors or values, as the range says).

    ``method="lhs"``: Latin hypercube (each range cut into ``n_samples`` equal-probability strata, one sample per
    stratum, strata paired at random between parameters); ``"random"``: independent uniform samples.
    """
    rng = np.random.default_rng(seed)
    p = len(ranges)
    if method == "lhs":
        u = (np.stack([rng.permutation(n_samples) for _ in range(p)], axis=1) + rng.random((n_samples, p))) / n_samples
    elif method == "random":
        u = rng.random((n_samples, p))
    else:
        raise ValueError(f"method must be 'lhs' or 'random', got {method!r}")
    out = np.empty_like(u)
    for j, r in enumerate(ranges.values()):
        if r.log:
            out[:, j] = np.exp(np.log(r.low) + u[:, j] * (np.log(r.high) - np.log(r.low)))
        else:
            out[:, j] = r.low + u[:, j] * (r.high - r.low)
    return out


def apply_factors(
    params: StationParams,
    names: Sequence[str],
    samples: jax.Array,
    modes: Sequence[str],
    *,
    consistent_dwsat: bool = False,
) -> StationParams:
    """Parameters of one member: ``samples[j]`` multiplies (mode "factor") or replaces (mode "value") the
    parameter ``names[j]`` (broadcast over its layers). A lowered porosity stays >= 1.02 x field capacity."""
    leaves, factors = [], {}
    for j, (name, mode) in enumerate(zip(names, modes, strict=True)):
        base = jnp.asarray(PARAMETER_PATHS[name][0](params))
        s = samples[j].astype(base.dtype)
        new = base * s if mode == "factor" else jnp.broadcast_to(s, base.shape)
        factors[name] = s if mode == "factor" else s / base
        leaves.append(new)
    values = dict(zip(names, leaves, strict=True))
    if "smcmax" in values:
        smcref = values.get("smcref", params.soil.smcref)
        floor = jnp.minimum(params.soil.smcmax, SMCMAX_OVER_SMCREF_MIN * smcref)  # never moves the default
        values["smcmax"] = jnp.maximum(values["smcmax"], floor)
    if consistent_dwsat and "dwsat" not in values:
        f = [factors[k] for k in ("bexp", "dksat", "psisat") if k in factors]
        scale = jnp.prod(jnp.stack([jnp.broadcast_to(x, params.soil.dwsat.shape) for x in f]), axis=0) if f else 1.0
        if "smcmax" in values:
            scale = scale * params.soil.smcmax / values["smcmax"]
        values["dwsat"] = params.soil.dwsat * scale
    names = list(values)
    return eqx.tree_at(
        lambda p: [PARAMETER_PATHS[k][0](p) for k in names], params, [jnp.asarray(values[k]) for k in names]
    )


def _observe(state, fluxes):
    f = fluxes
    return {
        "soil_moisture": state.soil.smc,
        "soil_liquid_water": state.soil.sh2o,
        "soil_temperature": state.soil.t,
        "sensible_heat_flux": f.energy.sh,
        "latent_heat_flux": f.energy.lh,
        "ground_heat_flux": f.energy.g,
        "evapotranspiration": f.evap_canopy_mmps + f.transpiration_mmps + f.evap_ground_mmps,
        "transpiration": f.transpiration_mmps,
        "surface_runoff": f.runoff_surface_mm,
        "subsurface_runoff": f.runoff_subsurface_mm,
        "snow_water_equivalent": state.snow.swe_mm,
    }


# name -> (standard_name, units, long name)
_META = {
    "soil_moisture": ("volume_fraction_of_condensed_water_in_soil", "m3 m-3", "total soil moisture (liquid + ice)"),
    "soil_liquid_water": ("volume_fraction_of_liquid_water_in_soil", "m3 m-3", "liquid soil moisture"),
    "soil_temperature": ("soil_temperature", "K", "soil layer temperature"),
    "sensible_heat_flux": ("surface_upward_sensible_heat_flux", "W m-2", "sensible heat flux, + up"),
    "latent_heat_flux": ("surface_upward_latent_heat_flux", "W m-2", "latent heat flux, + up"),
    "ground_heat_flux": ("downward_heat_flux_in_soil", "W m-2", "ground heat flux, + down"),
    "evapotranspiration": ("water_evapotranspiration_flux", "kg m-2 s-1", "evapotranspiration, + up"),
    "transpiration": ("transpiration_flux", "kg m-2 s-1", "transpiration"),
    "surface_runoff": ("surface_runoff_amount", "kg m-2", "surface runoff per step"),
    "subsurface_runoff": ("subsurface_runoff_amount", "kg m-2", "drainage per step"),
    "snow_water_equivalent": ("surface_snow_amount", "kg m-2", "snow water equivalent"),
}


@eqx.filter_jit
def _run_members(samples, state0, forcing, params, grid, options, names, modes, consistent_dwsat):
    def member(s):
        p = apply_factors(params, names, s, modes, consistent_dwsat=consistent_dwsat)
        _, out = run_station(state0, forcing, p, grid, options, observe=_observe, finite_check=False)
        return out, p

    return jax.vmap(member)(samples)


def _cast(tree: Any, dtype: Any) -> Any:
    def one(x):
        a = jnp.asarray(x)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree_util.tree_map(one, tree)


def perturbed_ensemble(
    setup: Any,
    n_members: int,
    specs: Mapping[str, Any] | Sequence[str] | None = None,
    seed: int = 0,
    method: str = "lhs",
    *,
    steps: slice | None = None,
    chunk_size: int = 32,
    dtype: str = "float64",
    consistent_dwsat: bool = False,
    progress: bool | Callable[[dict], None] = False,
) -> xr.Dataset:
    """Run a perturbed-parameter ensemble of the station model at ``setup``.

    Parameters
    ----------
    setup : :class:`dam.site_run.StationSetup` (``state0`` is every member's initial state; spin it up first).
    n_members : ensemble size; member 0 is the unperturbed set-up, members 1.. are sampled.
    specs : parameters and ranges: None (:data:`DEFAULT_FACTOR_RANGES`), a list of names with default ranges, or a
        mapping name -> :class:`ParameterRange`, dict ``{low, high, log, mode}`` or tuple ``(low, high[, log[,
        mode]])``; names from :data:`PARAMETER_PATHS`.
    seed, method : sampling (``"lhs"`` Latin hypercube or ``"random"``), see :func:`sample_factors`.
    steps : the steps of ``setup`` to run (default all).
    chunk_size : members per vmapped run (memory bound; the last chunk is padded to the same shape).
    dtype : "float64" or "float32" for the runs.
    consistent_dwsat : scale DWSAT with b, DKSAT, PSISAT and SMCMAX (see module docstring).
    progress : True prints one line per chunk, a callable receives a dict per chunk.

    Returns
    -------
    xarray.Dataset with dims (member, time, layer): layered soil moisture, liquid water and temperature;
    surface fluxes (member, time); for each perturbed parameter ``<name>`` the sampled factor or value
    (member,) and ``<name>_value`` the parameter used (member[, layer]); CF attributes; ``attrs["seconds"]``
    the run time.
    """
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    ranges = _ranges(specs)
    names = tuple(ranges)
    modes = tuple(r.mode for r in ranges.values())
    base = np.array([1.0 if r.mode == "factor" else np.nan for r in ranges.values()])
    if any(m == "value" for m in modes):  # the default member keeps the table value
        for j, n in enumerate(names):
            if modes[j] == "value":
                base[j] = float(np.ravel(np.asarray(PARAMETER_PATHS[n][0](setup.params)))[0])
    samples = (
        np.vstack([base[None], sample_factors(ranges, n_members - 1, seed, method)]) if n_members > 1 else base[None]
    )

    jdtype = jnp.dtype(dtype)
    n_all = len(setup.times)
    steps = steps or slice(0, n_all)
    times = setup.times[steps]
    forcing = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[steps], jdtype), setup.forcing)
    state0, params = _cast(setup.state0, jdtype), _cast(setup.params, jdtype)
    grid = setup.grid.astype(jdtype)
    chunk = max(1, min(int(chunk_size), n_members))
    report = progress if callable(progress) else (print if progress else (lambda d: None))

    tic = time.perf_counter()
    outs, used = [], []
    for c0 in range(0, n_members, chunk):
        part = samples[c0 : c0 + chunk]
        real = len(part)
        if real < chunk:
            part = np.vstack([part, np.repeat(samples[:1], chunk - real, axis=0)])
        out, p = _run_members(
            jnp.asarray(part, jdtype), state0, forcing, params, grid, setup.options, names, modes, consistent_dwsat
        )
        outs.append(jax.tree_util.tree_map(lambda x, k=real: np.asarray(x)[:k], out))
        used.append({n: np.asarray(PARAMETER_PATHS[n][0](p))[:real] for n in names + ("dwsat",)})
        report({"members_done": min(c0 + chunk, n_members), "of": n_members, "seconds": time.perf_counter() - tic})
    seconds = time.perf_counter() - tic
    out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    used = {k: np.concatenate([u[k] for u in used]) for k in used[0]}
    return _dataset(setup, times, out, used, samples, ranges, method, seed, dtype, seconds, consistent_dwsat)


def _dataset(setup, times, out, used, samples, ranges, method, seed, dtype, seconds, consistent_dwsat) -> xr.Dataset:
    bottoms = -np.asarray(setup.grid.zsoil, float)
    tops = np.r_[0.0, bottoms[:-1]]
    n_layers = len(bottoms)
    coords = {
        "member": ("member", np.arange(samples.shape[0]), {"long_name": "ensemble member (0 = default parameters)"}),
        "time": ("time", np.asarray(times.values), {"standard_name": "time", "long_name": "end of the model step"}),
        "layer": ("layer", np.arange(1, n_layers + 1), {"long_name": "soil layer (1 = top)"}),
        "depth": ("layer", 0.5 * (tops + bottoms), {"standard_name": "depth", "units": "m", "positive": "down"}),
    }
    data = {}
    for name, x in out.items():
        std, units, long = _META[name]
        dims = ("member", "time", "layer") if x.ndim == 3 else ("member", "time")
        data[name] = (dims, x, {"standard_name": std, "units": units, "long_name": long})
    for j, (name, r) in enumerate(ranges.items()):
        _, units, long = PARAMETER_PATHS[name]
        data[name] = (
            ("member",),
            samples[:, j],
            {"long_name": f"sampled {'factor on' if r.mode == 'factor' else 'value of'} {long}",
             "units": "1" if r.mode == "factor" else units, "range_low": r.low, "range_high": r.high,
             "log_sampling": int(r.log), "mode": r.mode},
        )  # fmt: skip
    for name in list(ranges) + (["dwsat"] if consistent_dwsat and "dwsat" not in ranges else []):
        v = used[name].reshape(samples.shape[0], -1)
        _, units, long = PARAMETER_PATHS[name]
        layered = v.shape[1] == n_layers
        data[f"{name}_value"] = (
            ("member", "layer") if layered else ("member",),
            v if layered else v[:, 0],
            {"long_name": f"{long} used by the member", "units": units},
        )
    site = getattr(getattr(setup, "site", None), "meta", None)
    ds = xr.Dataset(data, coords=coords)
    ds.attrs = {
        "title": "dam perturbed-parameter ensemble of the station model (Noah-MP v5.2 physics in JAX)",
        "Conventions": "CF-1.10",
        "site": getattr(site, "name", ""),
        "time_step_s": float(setup.options.dt_s),
        "sampling": method,
        "seed": int(seed),
        "dtype": dtype,
        "parameters": " ".join(ranges),
        "consistent_dwsat": int(consistent_dwsat),
        "seconds": float(seconds),
        "source": "dam.coupling.ensemble.perturbed_ensemble",
    }
    return ds


def save_ensemble(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to netCDF (``.nc``, zlib level 4) or zarr (``.zarr``), chosen by the suffix."""
    from dam.io_safety import atomic_path, remove_path

    path = Path(path)
    if path.suffix not in (".nc", ".zarr"):
        raise ValueError(f"ensemble path must end in .nc or .zarr, got {path}")
    with atomic_path(path) as tmp:  # whole or not at all
        if path.suffix == ".nc":
            ds.to_netcdf(tmp, encoding={v: {"zlib": True, "complevel": 4} for v in ds.data_vars})
        else:
            ds.to_zarr(tmp, mode="w")
            remove_path(path)  # a folder is renamed only onto a missing or empty one
    return path
