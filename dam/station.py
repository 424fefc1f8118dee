"""Run the physics-only station model at a site: set-up from a site folder, spin-up, a blocked run with a
progress bar, CF netCDF output, plots against observations and a metrics table.

The set-up rules (documented in docs/station_model.md):

* Soil grid: Noah-MP's four layers (0.1, 0.3, 0.6, 1.0 m) unless given.
* Parameters: Noah-MP table rows of the site's vegetation type (MODIS IGBP), STAS soil class and soil colour
  (:mod:`dam.parameters`); SHDMAX from ``site.yaml`` (default 0.8); the reference height is the wind height.
* Deep soil temperature (TBOT, at 8 m): ``site.yaml`` initial state if given, else the mean air temperature of
  the record.
* Solar geometry: HRLDAS's cos(zenith) at the end of each step for steps up to one hour (bit-exact with the
  Fortran driver); for longer steps (daily forcing) the shortwave-weighted mean over the step.
* Initial state: ``site.yaml``'s initial state where given (interpolated onto the model layers), else a uniform
  column at TBOT-like temperature and field capacity; the snowpack from explicit snow layers
  (:data:`SNOW_LAYER_KEYS`) or Noah-MP's initial layering of the SWE and depth (:func:`initial_snow`); then
  ``spinup_cycles`` passes over the first year.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from . import parameters as P
from .physics.energy_balance import SurfaceEnergyState
from .physics.snow_types import N_SNOW_LAYERS
from .physics.station import (
    CanopyWater,
    SnowState,
    StationForcing,
    StationOptions,
    StationParams,
    StationState,
    run_station,
)
from .physics.types import SoilGrid, SoilOptions, SoilState
from .sharding import pad_axis
from .sites import Site
from .solar import cos_zenith, julian_day

NOAHMP_LAYER_BOTTOMS_M = (0.1, 0.4, 1.0, 2.0)
DEFAULT_VEG_FRAC_MAX = 0.8


@dataclasses.dataclass(frozen=True)
class StationSetup:
    """Everything a station run needs; ``forcing`` has a leading time axis matching ``times`` (step ends, UTC)."""

    site: Site
    grid: SoilGrid
    options: StationOptions
    params: StationParams
    state0: StationState
    forcing: StationForcing
    times: pd.DatetimeIndex

    @property
    def layer_bottoms_m(self) -> np.ndarray:
        return -np.asarray(self.grid.zsoil)


def _f64(x) -> jnp.ndarray:
    return jnp.asarray(np.asarray(x, dtype=np.float64))


def step_cos_zenith(times: pd.DatetimeIndex, dt_s: float, lat: float, lon: float, samples: int = 48) -> np.ndarray:
    """cos(zenith) per step: the driver's end-of-step value for dt <= 1 h, else the shortwave-weighted mean
    ``sum(mu^2) / sum(mu)`` of the sun's height over the step (0 when the sun stays down)."""
    if dt_s <= 3600.0:
        return cos_zenith(times, lat, lon)
    offsets = pd.to_timedelta(-dt_s * (np.arange(samples) + 0.5) / samples, unit="s")
    instants = (times.values[:, None] + offsets.values[None, :]).ravel()
    mu = np.maximum(cos_zenith(instants, lat, lon), 0.0).reshape(len(times), samples)
    total = mu.sum(axis=1)
    return np.where(total > 0.0, (mu**2).sum(axis=1) / np.where(total > 0.0, total, 1.0), 0.0)


def station_forcing(site: Site, times: pd.DatetimeIndex | None = None) -> tuple[StationForcing, pd.DatetimeIndex]:
    """The site's CF forcing Dataset as a :class:`StationForcing` (float64 numpy leaves)."""
    ds = site.forcing if times is None else site.forcing.sel(time=times)
    t = pd.DatetimeIndex(ds["time"].values)
    dt = float(site.meta.time_step_s)
    lon = float(np.float32(site.meta.longitude))  # HRLDAS reads the location as float32
    mid = t - pd.to_timedelta(dt / 2.0, unit="s") if dt > 3600.0 else t
    v = {
        k: np.asarray(ds[k].values, np.float64)
        for k in ("T_air", "q_air", "p_sfc", "wind", "sw_down", "lw_down", "precip")
    }
    forcing = StationForcing(
        t_air_k=v["T_air"], q_air_kgkg=v["q_air"], p_sfc_pa=v["p_sfc"], u_ms=v["wind"], v_ms=np.zeros_like(v["wind"]),
        sw_down_wm2=v["sw_down"], lw_down_wm2=v["lw_down"], precip_mmps=v["precip"],
        cos_zenith=step_cos_zenith(t, dt, float(np.float32(site.meta.latitude)), lon), julian_day=julian_day(mid),
    )  # fmt: skip
    return forcing, t


def _layer_values(profile_bottoms: Sequence[float], values: Sequence[float], bottoms: Sequence[float]) -> np.ndarray:
    """Values of a layered profile at the centres of ``bottoms`` (nearest layer containing the centre)."""
    pb = np.asarray(profile_bottoms, float)
    centres = np.asarray(bottoms, float) - 0.5 * np.diff(np.r_[0.0, bottoms])
    idx = np.minimum(np.searchsorted(pb, centres), len(pb) - 1)
    return np.asarray(values, float)[idx]


def initial_state(site: Site, grid: SoilGrid, params: StationParams, forcing: StationForcing) -> StationState:
    """The state entering step 1: from ``site.yaml`` where given, else a uniform column (see module docs)."""
    bottoms = -np.asarray(grid.zsoil)
    init = dict(site.meta.initial_state or {})
    smcref = np.asarray(params.soil.smcref, float) * np.ones(len(bottoms))
    if "soil_temperature_K" in init and "soil_layer_thickness_m" in init:
        prof = np.cumsum(init["soil_layer_thickness_m"])
        t_soil = _layer_values(prof, init["soil_temperature_K"], bottoms)
        smc = _layer_values(prof, init.get("soil_moisture", smcref), bottoms)
    else:
        t_soil = np.full(len(bottoms), float(params.soil.tbot))
        smc = smcref
    t_skin = float(init.get("skin_temperature_K", t_soil[0]))
    # Frozen layers start with the supercooled liquid limit, as Noah-MP's initialisation does.
    from .physics.phase_change import supercooled_niu06

    const = SoilOptions().const
    liq_limit = np.asarray(supercooled_niu06(_f64(t_soil), params.soil, const))
    sh2o = np.where(t_soil < const.tfrz, np.minimum(liq_limit, smc), smc)
    t_air0 = float(forcing.t_air_k[0])
    q0 = float(forcing.q_air_kgkg[0])
    w0 = q0 / (1.0 - q0)
    e0 = float(forcing.p_sfc_pa[0]) * w0 / (0.622 + w0)
    return StationState(
        soil=SoilState(t=_f64(t_soil), smc=_f64(smc), sh2o=_f64(sh2o)),
        energy=SurfaceEnergyState(t_veg=_f64(t_skin), t_grd=_f64(t_skin), t_canair=_f64(t_air0), e_canair=_f64(e0),
                                  cm=_f64(0.1), ch=_f64(0.1)),
        canopy=CanopyWater(liq_mm=_f64(0.0), ice_mm=_f64(0.0)),
        snow=initial_snow(init, t_skin),
    )  # fmt: skip


SNOW_LAYER_KEYS = ("snow_layer_thickness_m", "snow_layer_temperature_K", "snow_layer_ice_mm", "snow_layer_liquid_mm")


def initial_snow(init: dict, t_ground_k: float) -> SnowState:
    """The snowpack entering step 1 from a site's initial state: explicit snow layers (``SNOW_LAYER_KEYS``, lists
    from the top layer down, at most 3), else the layers Noah-MP's initialisation builds from
    ``snow_water_equivalent_mm`` and ``snow_depth_m`` at the ground temperature (:meth:`SnowState.initial`)."""
    swe, depth = float(init.get("snow_water_equivalent_mm", 0.0)), float(init.get("snow_depth_m", 0.0))
    given = [k for k in SNOW_LAYER_KEYS if k in init]
    if not given:
        return SnowState.initial(_f64(swe), _f64(depth), _f64(t_ground_k))
    if len(given) != len(SNOW_LAYER_KEYS):
        raise ValueError(f"initial snow layers need all of {SNOW_LAYER_KEYS}, got only {given}")
    layers = [np.asarray(init[k], float) for k in SNOW_LAYER_KEYS]
    n = len(layers[0])
    if n > N_SNOW_LAYERS or any(len(v) != n for v in layers):
        raise ValueError(f"initial snow layers: {SNOW_LAYER_KEYS} must list the same number (at most "
                         f"{N_SNOW_LAYERS}) of layers, got lengths {[len(v) for v in layers]}")  # fmt: skip
    if n and (np.any(layers[0] <= 0.0) or np.any(layers[2] < 0.0) or np.any(layers[3] < 0.0)):
        raise ValueError("initial snow layers need positive thickness and non-negative ice and liquid water")
    pad = lambda v: np.r_[np.zeros(N_SNOW_LAYERS - n), v]  # noqa: E731  (slots -2..0, the bottom layer last)
    dz, t, ice, liq = (pad(v) for v in layers)
    return SnowState(
        swe_mm=_f64(ice.sum() + liq.sum() if n else swe), depth_m=_f64(dz.sum() if n else depth), age=_f64(0.0),
        swe_prev_mm=_f64(0.0), n_layers=jnp.asarray(n, jnp.int32), t_k=_f64(t), ice_mm=_f64(ice), liq_mm=_f64(liq),
        dz_m=_f64(dz),
    )  # fmt: skip


def setup_station(
    site: Site,
    *,
    start: str | None = None,
    end: str | None = None,
    layer_bottoms_m: Sequence[float] = NOAHMP_LAYER_BOTTOMS_M,
) -> StationSetup:
    """Build grid, options, parameters, initial state and forcing for ``site`` over [start, end] (UTC)."""
    meta = site.meta
    forcing_ds = site.forcing.sel(time=slice(start, end))
    if forcing_ds.sizes["time"] == 0:
        raise ValueError(f"site {meta.name}: no forcing between start={start} and end={end}")
    forcing, times = station_forcing(site, pd.DatetimeIndex(forcing_ds["time"].values))
    init = meta.initial_state or {}
    tbot = float(init.get("deep_soil_temperature_K", np.mean(site.forcing["T_air"].values)))
    if meta.soil_type_stas is None:
        raise ValueError(f"site {meta.name}: site.yaml needs soil.stas_type for the station model")
    desc = P.SiteDescription(
        vegetation_type=int(meta.vegetation_type_igbp),
        soil_types=(int(meta.soil_type_stas),) * len(layer_bottoms_m),
        soil_colour=int(meta.soil_colour),
        veg_frac_max=float(meta.max_vegetation_fraction or DEFAULT_VEG_FRAC_MAX),
        ref_height_m=float(meta.reference_height_wind_m),
        tbot_k=tbot,
        latitude_deg=float(np.float32(meta.latitude)),
    )
    params = StationParams(
        soil=P.soil_params(desc), phenology=P.phenology_params(desc), snow_cover=P.snow_cover_params(desc),
        radiation=P.radiation_params(desc), canopy=P.canopy_water_params(desc), surface=P.surface_params(desc),
        atmos=P.atmos_params(desc), snowpack=P.snowpack_params(desc),
    )  # fmt: skip
    dt = float(meta.time_step_s)
    from .physics.albedo import RadiationOptions
    from .physics.energy_balance import SurfaceEnergyOptions
    from .physics.transpiration import TranspirationOptions

    options = StationOptions(
        soil=SoilOptions(dt_s=dt),
        radiation=RadiationOptions(dt_s=dt),
        surface=SurfaceEnergyOptions(dt_s=dt),
        transpiration=TranspirationOptions(n_root=P.n_root_layers(desc)),
    )
    grid = SoilGrid(zsoil=-np.asarray(layer_bottoms_m, float), zbot=-8.0)
    state0 = initial_state(site, grid, params, forcing)
    return StationSetup(site, grid, options, params, state0, forcing, times)


_run = eqx.filter_jit(run_station)


def _slice(forcing: StationForcing, i0: int, i1: int, pad_to: int | None = None) -> StationForcing:
    part = jax.tree_util.tree_map(lambda x: _f64(x[i0:i1]), forcing)
    if pad_to is not None and i1 - i0 < pad_to:
        part = pad_axis(part, i1 - i0, pad_to, axis=0)
    return part


def spin_up(setup: StationSetup, cycles: int = 1, steps: int | None = None) -> StationSetup:
    """Run the first ``steps`` (default: one year) ``cycles`` times and start from the final state."""
    if cycles <= 0:
        return setup
    n = len(setup.times)
    steps = min(n, steps or int(round(365 * 86400 / setup.options.dt_s)))
    state = setup.state0
    frc = _slice(setup.forcing, 0, steps)
    for _ in range(cycles):
        state, _ = _run(state, frc, setup.params, setup.grid, setup.options, observe=lambda s, f: None)
    return dataclasses.replace(setup, state0=state)


def run_blocks(setup: StationSetup, *, block_steps: int = 4096, progress: bool = True):
    """Run the whole record in blocks of ``block_steps`` (one compilation; the last block padded), returning the
    stacked (states, fluxes) as numpy pytrees."""
    n = len(setup.times)
    block = min(block_steps, n)
    state = setup.state0
    outs = []
    bar = tqdm(total=n, unit="step", desc=f"{setup.site.meta.name}", disable=not progress)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        frc = _slice(setup.forcing, i0, i1, pad_to=block)
        new_state, out = _run(state, frc, setup.params, setup.grid, setup.options)
        real = i1 - i0
        if real < block:  # the padded tail: keep the state after the last real step
            new_state = jax.tree_util.tree_map(lambda x, k=real: x[k - 1], out[0])
        state = new_state
        outs.append(jax.tree_util.tree_map(lambda x, k=real: np.asarray(x)[:k], out))
        bar.update(i1 - i0)
    bar.close()
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outs)


# (name, standard_name, units, long name, getter(states, fluxes)) of the CF output; names shared with the
# observation catalogue of dam.sites so that model and observations compare by name.
_SERIES = (
    ("sensible_heat_flux", "surface_upward_sensible_heat_flux", "W m-2", "sensible heat flux, + up",
     lambda s, f: f.energy.sh),
    ("latent_heat_flux", "surface_upward_latent_heat_flux", "W m-2", "latent heat flux, + up",
     lambda s, f: f.energy.lh),
    ("ground_heat_flux", "downward_heat_flux_in_soil", "W m-2", "ground heat flux into soil/snow, + down",
     lambda s, f: f.energy.g),
    ("net_radiation", "surface_net_downward_radiative_flux", "W m-2", "net radiation, + down",
     lambda s, f: f.sw_abs_wm2 - f.energy.lw_net),
    ("sw_absorbed", "surface_net_downward_shortwave_flux", "W m-2", "absorbed shortwave", lambda s, f: f.sw_abs_wm2),
    ("lw_net_up", "surface_net_upward_longwave_flux", "W m-2", "net longwave, + up", lambda s, f: f.energy.lw_net),
    ("surface_temperature", "surface_temperature", "K", "radiative skin temperature", lambda s, f: f.energy.t_rad),
    ("canopy_temperature", "canopy_temperature", "K", "leaf temperature", lambda s, f: s.energy.t_veg),
    ("evapotranspiration", "water_evapotranspiration_flux", "kg m-2 s-1", "evapotranspiration, + up",
     lambda s, f: f.evap_canopy_mmps + f.transpiration_mmps + f.evap_ground_mmps),
    ("transpiration", "transpiration_flux", "kg m-2 s-1", "transpiration", lambda s, f: f.transpiration_mmps),
    ("precipitation", "precipitation_flux", "kg m-2 s-1", "rain + snowfall",
     lambda s, f: f.rain_mmps + f.snowfall_mmps),
    ("surface_runoff", "surface_runoff_amount", "kg m-2", "surface runoff per step", lambda s, f: f.runoff_surface_mm),
    ("subsurface_runoff", "subsurface_runoff_amount", "kg m-2", "drainage per step",
     lambda s, f: f.runoff_subsurface_mm),
    ("snow_water_equivalent", "surface_snow_amount", "kg m-2", "snow water equivalent", lambda s, f: s.snow.swe_mm),
    ("snow_depth", "surface_snow_thickness", "m", "snow depth", lambda s, f: s.snow.depth_m),
    ("canopy_water", "canopy_water_amount", "kg m-2", "intercepted water (liquid + ice)",
     lambda s, f: s.canopy.liq_mm + s.canopy.ice_mm),
    ("albedo", "surface_albedo", "1", "surface albedo (0 without sun)", lambda s, f: f.albedo),
    ("leaf_area_index", "leaf_area_index", "1", "effective leaf area index", lambda s, f: f.lai_eff),
    ("btran", "", "1", "soil-water stress factor of transpiration", lambda s, f: f.btran),
)  # fmt: skip
_LAYERED = (
    ("soil_temperature", "soil_temperature", "K", "soil layer temperature", lambda s: s.soil.t),
    ("soil_moisture", "volume_fraction_of_condensed_water_in_soil", "m3 m-3", "total soil moisture (liquid + ice)",
     lambda s: s.soil.smc),
    ("soil_liquid_water", "volume_fraction_of_liquid_water_in_soil", "m3 m-3", "liquid soil moisture",
     lambda s: s.soil.sh2o),
)  # fmt: skip


def output_dataset(setup: StationSetup, states, fluxes, attrs: dict | None = None) -> xr.Dataset:
    """CF Dataset of a run (time = step ends, UTC; layer with depth bounds in m, positive down)."""
    bottoms = setup.layer_bottoms_m
    tops = np.r_[0.0, bottoms[:-1]]
    coords = {
        "time": ("time", setup.times.values, {"standard_name": "time", "long_name": "end of the model step (UTC)"}),
        "layer": ("layer", np.arange(1, len(bottoms) + 1), {"long_name": "soil layer (1 = top)"}),
        "depth": ("layer", 0.5 * (tops + bottoms), {"standard_name": "depth", "units": "m", "positive": "down",
                                                   "bounds": "depth_bnds"}),
        "depth_bnds": (("layer", "nv"), np.stack([tops, bottoms], axis=1), {"units": "m"}),
    }  # fmt: skip
    data = {}
    for name, std, units, long, get in _LAYERED:
        data[name] = (
            ("time", "layer"),
            np.asarray(get(states)),
            {"standard_name": std, "units": units, "long_name": long},
        )
    for name, std, units, long, get in _SERIES:
        meta = {"units": units, "long_name": long} | ({"standard_name": std} if std else {})
        data[name] = ("time", np.asarray(get(states, fluxes)), meta)
    meta = setup.site.meta
    ds = xr.Dataset(data, coords=coords)
    ds.attrs = {
        "title": f"dam station model (Noah-MP v5.2 surface + soil physics in JAX) at {meta.name}",
        "Conventions": "CF-1.10",
        "site": meta.name,
        "latitude": meta.latitude,
        "longitude": meta.longitude,
        "time_step_s": float(setup.options.dt_s),
        "vegetation_type_igbp": int(meta.vegetation_type_igbp),
        "soil_type_stas": int(meta.soil_type_stas or -1),
        "source": "dam run-station",
    } | (attrs or {})
    return ds


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars}
    ds.to_netcdf(path, encoding=encoding)
    return path


def plot_against_observations(
    model: xr.Dataset,
    observations: xr.Dataset | None,
    out_dir: Path,
    layer_bottoms_m: Sequence[float],
    site: Site | None = None,
) -> list[Path]:
    """One PNG per observed variable: model (at the sensor's layer; the water the sensors see with ``site``)
    against the observations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .sites import SOIL_VARIABLES, model_at_sensors

    paths = []
    if observations is None:
        return paths
    for name in observations.data_vars:
        if name not in model:
            continue
        obs = observations[name]
        var = site.model_variable(name) if site is not None else name
        if name in SOIL_VARIABLES:
            _, at = model_at_sensors(model[var], obs, layer_bottoms_m)
            depth_dim = obs.dims[1]
            depths = obs[depth_dim].values
        else:
            at, depths, depth_dim = model[var], [None], None
        fig, axes = plt.subplots(len(depths), 1, figsize=(11, 2.3 * len(depths) + 0.6), sharex=True, squeeze=False)
        for ax, d in zip(axes[:, 0], depths, strict=True):
            o = obs if d is None else obs.sel({depth_dim: d})
            m = at if d is None else at.sel({depth_dim: d})
            ax.plot(m["time"].values, m.values, lw=0.7, color="C0", label="model")
            ax.plot(o["time"].values, o.values, lw=0.7, color="k", alpha=0.7, label="observed")
            ax.set_ylabel(obs.attrs.get("units", ""))
            ax.set_title(f"{var}" + ("" if d is None else f" at {float(d):g} m"), fontsize=9, loc="left")
        axes[0, 0].legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def astype(setup: StationSetup, dtype) -> StationSetup:
    """The set-up with every floating array (parameters, state, forcing, grid) cast to ``dtype``."""

    def cast(tree):
        return jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree
        )

    return dataclasses.replace(
        setup, params=cast(setup.params), state0=cast(setup.state0), forcing=cast(setup.forcing),
        grid=setup.grid.astype(dtype),
    )  # fmt: skip


def run_site(
    site: Site,
    output: str | Path,
    *,
    start: str | None = None,
    end: str | None = None,
    spinup_cycles: int = 1,
    dtype: str = "float64",
    progress: bool = True,
) -> tuple[xr.Dataset, pd.DataFrame | None]:
    """Physics-only run at ``site``: netCDF to ``output``, one PNG per observed variable and a metrics table
    (CSV and Markdown) beside it. Returns the output Dataset and the metrics table (None without observations).
    """
    from .metrics import metrics_table

    output = Path(output)
    setup = setup_station(site, start=start, end=end)
    if dtype != "float64":
        setup = astype(setup, jnp.dtype(dtype))
    setup = spin_up(setup, cycles=spinup_cycles)
    states, fluxes = run_blocks(setup, progress=progress)
    ds = output_dataset(setup, states, fluxes, {"spinup_cycles": spinup_cycles, "dtype": dtype})
    write_netcdf(ds, output)
    figures = output.parent / f"{output.stem}_figures"
    figures.mkdir(parents=True, exist_ok=True)
    obs = site.observations
    if obs is not None:
        obs = obs.sel(time=slice(setup.times[0], setup.times[-1]))
    plot_against_observations(ds, obs, figures, setup.layer_bottoms_m, site=site)
    if obs is None:
        return ds, None
    table = metrics_table(ds, obs, setup.layer_bottoms_m, site=site)
    table.to_csv(output.with_suffix(".metrics.csv"), index=False)
    output.with_suffix(".metrics.md").write_text(table.to_markdown(index=False, floatfmt=".3g") + "\n")
    return ds, table
